"""The model replica of the actor pool: a batch of videos' views -> per-video top-k classes.

Per video the softmax is averaged over its views (clips x crops), as in the paper's multi-view test.
EK100's action is the (verb, noun) pair with the highest product of the view-averaged verb and noun
probabilities; its top-k are the k best pairs of that outer product (the top-1 pair is therefore the
top-1 verb with the top-1 noun). One code path for CPU and GPU: only ``device`` differs.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from cast_model import CAST, load_checkpoint
from cast_model.checkpoint import META_FILE, WEIGHTS_FILE
from cast_model.precision import autocast, describe, resolve_precision, store_frozen_weights
from cast_model.vocab import as_heads, head_prefix, is_action, view_average
from pipelines.loader import MEAN, STD

PASS_THROUGH = ("source_id", "key", "path", "reason", "detail")


def normalise(views: torch.Tensor) -> torch.Tensor:
    """(B, V, T, S, S, 3) uint8 -> (B*V, 3, T, S, S) float32, ImageNet-normalised like the loaders."""
    mean = torch.tensor(MEAN, device=views.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD, device=views.device).view(1, 3, 1, 1, 1)
    x = views.flatten(0, 1).permute(0, 4, 1, 2, 3).float()  # (B*V, 3, T, S, S)
    return (x - mean) / std


@torch.inference_mode()
def video_probs(model: CAST, views: torch.Tensor, autocast=nullcontext) -> dict[str, torch.Tensor]:
    """(B, V, T, S, S, 3) uint8 on the model's device -> {head: (B, C) softmax averaged over the V views}."""
    v = views.shape[1]
    with autocast():
        out = as_heads(model(normalise(views)))  # {head: (B*V, C)}
    return {h: view_average(logits, v) for h, logits in out.items()}


def topk(probs: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, C) -> ids (B, k') int64 and probabilities (B, k') float32, best first; k' = min(k, C)."""
    p, i = probs.topk(min(k, probs.shape[1]), dim=1)
    return i.cpu().numpy().astype(np.int64), p.cpu().numpy().astype(np.float32)


def action_topk(verb: torch.Tensor, noun: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, V), (B, N) -> verb ids, noun ids (B, k) int64 and probabilities (B, k) of the k most probable
    (verb, noun) pairs under p(verb) * p(noun)."""
    joint = (verb[:, :, None] * noun[:, None, :]).flatten(1)  # (B, V*N)
    p, i = joint.topk(min(k, joint.shape[1]), dim=1)
    n = noun.shape[1]
    return ((i // n).cpu().numpy().astype(np.int64), (i % n).cpu().numpy().astype(np.int64),
            p.cpu().numpy().astype(np.float32))


def prediction_columns(heads: tuple[str, ...], k: int) -> dict[str, tuple[np.dtype, int]]:
    """Array columns the predictor adds: name -> (dtype, width)."""
    cols: dict[str, tuple[np.dtype, int]] = {}
    for h in heads:
        p = head_prefix(h)
        cols[f"{p}top_ids"], cols[f"{p}top_probs"] = (np.dtype(np.int64), k), (np.dtype(np.float32), k)
    if is_action(heads):
        cols["action_top_verb_ids"] = (np.dtype(np.int64), k)
        cols["action_top_noun_ids"] = (np.dtype(np.int64), k)
        cols["action_top_probs"] = (np.dtype(np.float32), k)
    return cols


class ViewsPredictor:
    """A batch of videos' views -> per-video top-k columns (``reason`` rows stay -1/NaN). The model
    replica logic of every inference path: the batch job's actors (:class:`Predictor`), the serving
    pyfunc and the predict CLI."""

    def __init__(self, model: CAST, labels: dict[str, dict[str, str]], top_k: int, device: torch.device,
                 precision: str = "auto") -> None:
        self.device = device
        self.model = model.to(self.device).eval()
        self.heads = tuple(labels)
        self.k = top_k
        self.columns = prediction_columns(self.heads, top_k)
        amp = resolve_precision(precision, self.device)
        # Every weight is frozen here: under autocast, each matmul and conv weight is stored in its dtype
        # once (half the memory, no casts per batch, the same numbers).
        store_frozen_weights(self.model.requires_grad_(False), amp)
        self.autocast = functools.partial(autocast, self.device, amp)
        # stderr: the predict CLI's stdout is its table or JSON
        print(f"[predict] {describe(precision, self.device, amp)}", file=sys.stderr, flush=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["reason"]) == ""
        n = len(ok)
        out = {k: v for k, v in batch.items() if k != "views"}
        for name, (dtype, width) in self.columns.items():
            out[name] = np.full((n, width), -1 if dtype.kind == "i" else np.nan, dtype)
        if ok.any():
            views = torch.from_numpy(np.ascontiguousarray(batch["views"][ok])).to(self.device, non_blocking=True)
            probs = video_probs(self.model, views, self.autocast)
            for h in self.heads:
                ids, p = topk(probs[h], self.k)
                out[f"{head_prefix(h)}top_ids"][ok, : ids.shape[1]] = ids
                out[f"{head_prefix(h)}top_probs"][ok, : p.shape[1]] = p
            if "action_top_probs" in self.columns:
                v, nn_, p = action_topk(probs["verb"], probs["noun"], self.k)
                out["action_top_verb_ids"][ok, : v.shape[1]] = v
                out["action_top_noun_ids"][ok, : v.shape[1]] = nn_
                out["action_top_probs"][ok, : v.shape[1]] = p
        return out


class Predictor(ViewsPredictor):
    """Callable class for ``Dataset.map_batches`` over an ``ActorPoolStrategy``: each actor holds one
    model replica, built in ``__init__`` from the checkpoint bytes the driver put in the object store."""

    def __init__(self, checkpoint: list, top_k: int, device: str, precision: str = "auto") -> None:
        import ray

        meta, weights = ray.get(checkpoint[0])  # [ObjectRef] -> (cast.json bytes, safetensors bytes)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / META_FILE).write_bytes(meta)
            (Path(tmp) / WEIGHTS_FILE).write_bytes(weights)
            model, labels = load_checkpoint(tmp)
        target = torch.device("cuda" if device == "gpu" else "cpu")
        if target.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("this replica was given a GPU but CUDA is not available in its process")
        super().__init__(model, labels, top_k, target, precision)
