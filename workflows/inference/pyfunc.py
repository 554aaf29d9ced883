"""The MLflow pyfunc of a CAST checkpoint (our safetensors + cast.json folder): videos in, top-k classes out.

Nothing is pickled: the model is logged "from code" (``pyfunc_entry.py`` names this class), the weights
travel as the checkpoint folder artifact and ``load_context`` reads them back with safetensors.

Input: a DataFrame, one row per video, with either column
  ``video``  the video file's bytes (``binary``: base64 in JSON, as MLflow's scoring server expects), or
  ``path``   a path or URI the server can read (a local path, ``file://``, ``s3://``... via pyarrow).
A request of another shape (no such column, a row with both or neither) is refused whole (HTTP 400).
Over HTTP: ``{"dataframe_split": {"columns": ["video"], "data": [["<base64 of the file>"]]}}``.

Each video goes through batch inference's own decode, multi-view sampling and softmax averaging
(``workflows.inference.classify``), with the views batch inference uses for this model. Output: one row
per video with ``top_ids``, ``top_names``, ``top_probs`` (best first; EK100: ``verb_``/``noun_`` columns
and ``action_top_verb_ids``/``_noun_ids``/``_names``/``_probs``), and ``reason``/``detail`` (empty, or
why the video could not be used: ``undecodable``, ``empty``, ``missing``... as batch inference's rejects).
A bad video is such a row, in its place, with empty top-k lists; it never fails the other videos.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

from cast_model import CASTConfig
from pipelines.encode import EncodeConfig, encode_video

from .classify import VideoClassifier, result_columns
from .model import CHECKPOINT_ARTIFACT, model_from_folder
from .views import ViewSpec

VIDEO_COLUMN = "video"
PATH_COLUMN = "path"
VIEWS_CONFIG = "views"  # model_config key: the ViewSpec fields, fixed at log time


class CASTPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        source = model_from_folder(Path(context.artifacts[CHECKPOINT_ARTIFACT]))
        # The views were resolved when the model was logged: serving needs no recipe file.
        views = ViewSpec(**context.model_config[VIEWS_CONFIG])
        self.classifier = VideoClassifier.load(source, views=views, device="auto")

    # The DataFrame type hint: MLflow validates against the logged signature, not a hint-inferred one.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        videos, names = read_videos(model_input)
        return pd.DataFrame(self.classifier.classify(videos, names))


def read_videos(frame: pd.DataFrame) -> tuple[list[bytes | str], list[str]]:
    """The rows of a serving DataFrame -> (video bytes or a path/URI, a name per video). Exactly one of
    ``video`` and ``path`` per row, else a ``ValueError`` naming the row (MLflow answers it with HTTP
    400): a request of the wrong shape is refused whole. What each video holds is judged per video by
    ``VideoClassifier.classify``: an unreadable path or URI, or bytes that are no video, is a reject row
    beside the others' predictions."""
    cols = set(frame.columns)
    if not cols & {VIDEO_COLUMN, PATH_COLUMN} or cols - {VIDEO_COLUMN, PATH_COLUMN}:
        raise ValueError(f"expected a column {VIDEO_COLUMN!r} (video bytes) or {PATH_COLUMN!r} (path/URI), "
                         f"got {sorted(cols)}")
    videos, names = [], []
    for i, row in enumerate(frame.to_dict("records")):
        data, path = row.get(VIDEO_COLUMN), row.get(PATH_COLUMN)
        data = None if data is None or (isinstance(data, float) and data != data) else data  # NaN: absent
        path = None if path is None or (isinstance(path, float) and path != path) else path
        if (data is None) == (path is None):
            raise ValueError(f"row {i}: give exactly one of {VIDEO_COLUMN!r} and {PATH_COLUMN!r}")
        if data is not None:
            videos.append(_as_bytes(data, i))
            names.append(f"video-{i}")
        else:
            videos.append(str(path))  # local path or URI (read by views.open_source)
            names.append(str(path))
    return videos, names


def _as_bytes(data, row: int) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):  # a caller that skipped the signature's binary decoding
        try:
            return base64.b64decode(data, validate=True)
        except ValueError as e:
            raise ValueError(f"row {row}: {VIDEO_COLUMN!r} is neither bytes nor base64 text: {e}") from e
    raise ValueError(f"row {row}: {VIDEO_COLUMN!r} must be bytes, got {type(data).__name__}")


def signature_for(config: CASTConfig, heads: tuple[str, ...]) -> ModelSignature:
    """Videos in (bytes or a path per row), top-k classes out, as the module doc says."""
    inputs = Schema([ColSpec(DataType.binary, VIDEO_COLUMN, required=False),
                     ColSpec(DataType.string, PATH_COLUMN, required=False)])
    types = {"ids": DataType.long, "names": DataType.string, "probs": DataType.float}
    outputs = [ColSpec(DataType.string, "video")]
    outputs += [ColSpec(Array(types[c.rsplit("_", 1)[1]]), c) for c in result_columns(heads)]
    outputs += [ColSpec(DataType.string, "reason"), ColSpec(DataType.string, "detail")]
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def input_example_for(config: CASTConfig):
    """One real (black) VP9 clip of the model's input size in the ``video`` column: the example MLflow
    stores, and checks by predicting it at log time, is what a client sends (a few hundred bytes)."""
    frames = np.zeros((config.num_frames, config.img_size, config.img_size, 3), np.uint8)
    return pd.DataFrame({VIDEO_COLUMN: [encode_video(frames, 8.0, EncodeConfig(codec="vp9"))]})

