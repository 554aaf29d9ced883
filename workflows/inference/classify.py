"""A few videos -> their top-k classes, in this process: the serving pyfunc and ``workflows.predict``.

Nothing here is a second implementation of batch inference: views come from ``views.video_views`` (the
batch job's decode + multi-view sampling), scores from ``replica.ViewsPredictor`` (its model replica:
softmax averaged over views, top-k, EK100 actions) and names from ``store.predictions_table`` (its
output schema). Only Ray is missing: videos are decoded one after another in this process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from cast_model import load_checkpoint
from pipelines.sampling import DEFAULT_MAX_FPS

from .model import ModelSource
from cast_model.vocab import head_prefix, is_action

from .replica import ViewsPredictor
from .store import ModelStamp, predictions_table
from .views import ViewFlags, ViewSpec, guarded_views, open_source, video_views, view_settings

DEFAULT_TOP_K = 5


def result_columns(heads: tuple[str, ...]) -> list[str]:
    """Columns of a classification result, besides ``video``, ``reason`` and ``detail``."""
    cols = [f"{head_prefix(h)}top_{c}" for h in heads for c in ("ids", "names", "probs")]
    if is_action(heads):
        cols += ["action_top_verb_ids", "action_top_noun_ids", "action_top_names", "action_top_probs"]
    return cols


def views_for(source: ModelSource, flags: ViewFlags | None = None) -> ViewSpec:
    """The views batch inference takes for this model (``views.view_settings``: flags > the checkpoint's),
    at the frame rate the model's shards were written at."""
    return view_settings(flags or ViewFlags(), source, DEFAULT_MAX_FPS.get(source.dataset))


@dataclass
class VideoClassifier:
    source: ModelSource
    spec: ViewSpec
    predictor: ViewsPredictor

    @classmethod
    def load(cls, source: ModelSource, top_k: int = DEFAULT_TOP_K, views: ViewSpec | None = None,
             device: str = "cpu", precision: str = "auto") -> "VideoClassifier":
        """The model of ``source`` on ``device`` ("cpu", "gpu" or "auto") at ``precision``
        (cast_model.precision); ``views`` default to those batch inference uses for it (:func:`views_for`)."""
        if device == "auto":
            device = "gpu" if torch.cuda.is_available() else "cpu"
        if device == "gpu" and not torch.cuda.is_available():
            raise RuntimeError("device 'gpu' was asked for but CUDA is not available")
        model, labels = load_checkpoint(source.checkpoint)
        target = torch.device("cuda" if device == "gpu" else "cpu")
        return cls(source, views or views_for(source), ViewsPredictor(model, labels, top_k, target, precision))

    @property
    def heads(self) -> tuple[str, ...]:
        return self.source.heads

    def classify(self, videos: Sequence[str | bytes], names: Sequence[str] | None = None) -> list[dict]:
        """One result per video, in input order (a path, a URI or the file's bytes): ``video`` (its name),
        the top-k columns of :func:`result_columns` (empty lists for a video that cannot be used),
        ``reason`` and ``detail`` (empty, or why the video was rejected, as batch inference's rejects
        say). A bad video never fails the others: it is guarded as in the batch job
        (``views.guarded_views``)."""
        names = list(names) if names is not None else [v if isinstance(v, str) else f"video-{i}"
                                                       for i, v in enumerate(videos)]
        views, reasons, details = [], [], []
        for v in videos:
            one, why, detail = guarded_views(lambda src=v: video_views(open_source(src), self.spec), self.spec)
            views.append(one), reasons.append(why), details.append(detail)
        batch = {"key": np.array(names, dtype=object), "source_id": np.array(names, dtype=object),
                 "path": np.array(names, dtype=object), "reason": np.array(reasons), "views": np.stack(views)}
        out = self.predictor(batch)
        stamp = ModelStamp(self.source.name, self.source.version, self.source.uri)
        table = predictions_table(out, self.source.labels, stamp, job_id="")
        rows = table.select(result_columns(self.heads)).to_pylist()
        return [{"video": n, **r, "reason": why, "detail": d} for n, r, why, d in zip(names, rows, reasons, details)]
