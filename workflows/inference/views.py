"""One video -> its evaluation views, decoded with the preprocessing job's own decoder.

``sample_views`` is pure (frames in, views out) and reproduces the multi-view evaluation loader
(``pipelines.loader.eval_loader``): frame indices from ``pipelines.sampling.eval_indices``, frames
resized to the model's short side, then the 3 crops of ``pipelines.sampling.crop_boxes`` (or the
centre one), views ordered clip-major. Views stay uint8: normalising is the model replica's job, on its
device, and uint8 moves 4x fewer bytes through the object store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from cast_model.vocab import EVAL_VIEW_KEYS
from pipelines.decode import VideoDecodeError, decode_sampled, resize_like_loader
from pipelines.memory import DEFAULT_BUDGET_BYTES
from pipelines.sampling import resample_indices
from pipelines.sampling import crop_boxes, eval_indices, short_side_size

from .config import InferConfig, InferConfigError
from .model import ModelSource


@dataclass(frozen=True)
class ViewFlags:
    """View overrides for one-video inference (serving, predict CLI); ``None``: the checkpoint's.
    The same fields as :class:`workflows.inference.config.InferConfig`'s, which
    :func:`view_settings` reads."""

    test_clips: int | None = None
    test_crops: int | None = None
    sampling: str | None = None
    sampling_rate: int | None = None
    decode_device: str = "cpu"


@dataclass(frozen=True)
class ViewSpec:
    num_frames: int  # frames per clip (the model's input T)
    img_size: int  # crop size (the model's input H = W)
    clips: int = 1
    crops: int = 3
    sampling: str = "uniform"
    stride: int = 4  # dense sampling only
    max_fps: float | None = None  # raw EK100: the frame rate the shards were written at
    decode_device: str = "cpu"

    @property
    def views(self) -> int:
        return self.clips * self.crops

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return (self.views, self.num_frames, self.img_size, self.img_size, 3)


def view_settings(cfg: InferConfig | ViewFlags, model: ModelSource, max_fps: float | None = None) -> ViewSpec:
    """Flags > the checkpoint's evaluation views (its contract, checked when the model was resolved)."""
    values = {k: model.extra[k] for k in EVAL_VIEW_KEYS}
    flags = {"sampling": cfg.sampling, "sampling_rate": cfg.sampling_rate, "test_clips": cfg.test_clips,
             "test_crops": cfg.test_crops}
    values.update({k: v for k, v in flags.items() if v is not None})
    if values["test_crops"] not in (1, 3):
        raise InferConfigError(f"test crops must be 1 or 3, got {values['test_crops']}")
    return ViewSpec(num_frames=model.config.num_frames, img_size=model.config.img_size,
                    clips=int(values["test_clips"]), crops=int(values["test_crops"]),
                    sampling=values["sampling"], stride=int(values["sampling_rate"]),
                    max_fps=max_fps, decode_device=cfg.decode_device)


def sample_views(frames: np.ndarray, spec: ViewSpec) -> np.ndarray:
    """(F, H, W, 3) uint8 frames -> (V, T, S, S, 3) uint8 views, V = clips x crops, clip-major (view
    ``k * crops + j`` is clip k, crop j). Frames should already have short side ``spec.img_size``
    (``decode_video(short_side=..., like_loader=True)``); smaller ones (the decoder never upscales) are resized up here,
    after sampling, as the evaluation loader's resize does."""
    return crop_views(frames[view_indices(frames.shape[0], spec)], spec)


def view_indices(num_frames: int, spec: ViewSpec) -> np.ndarray:
    """The (clips * T,) frame indices of the views, clip-major (``pipelines.sampling.eval_indices``)."""
    return eval_indices(num_frames, spec.num_frames, spec.clips, spec.sampling, spec.stride)


def crop_views(picked: np.ndarray, spec: ViewSpec) -> np.ndarray:
    """The frames of :func:`view_indices`, (clips * T, H, W, 3) -> (V, T, S, S, 3) crops."""
    if min(picked.shape[1:3]) != spec.img_size:
        picked = resize_short_side(picked, spec.img_size)
    _, h, w, _ = picked.shape
    boxes = crop_boxes(h, w, spec.img_size)
    if spec.crops == 1:
        boxes = boxes[1:2]  # the centre crop
    clips = picked.reshape(spec.clips, spec.num_frames, h, w, 3)  # (clips, T, H, W, 3)
    views = [clips[k, :, y0:y0 + ch, x0:x0 + cw] for k in range(spec.clips) for (y0, x0, ch, cw) in boxes]
    return np.ascontiguousarray(np.stack(views))  # (V, T, S, S, 3)


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H', W', 3) with the short side ``short_side`` (bilinear; the evaluation
    loader's sizes, ``pipelines.sampling.short_side_size(..., even=False)``)."""
    size = short_side_size(frames.shape[1], frames.shape[2], short_side, even=False)
    return np.stack([resize_like_loader(f, size) for f in frames])


def _read_member(path: str, offset: int, size: int) -> bytes:
    if "://" in path:  # a shard in an object store (s3://...): a ranged read
        import pyarrow.fs as pafs

        fs, key = pafs.FileSystem.from_uri(path)
        with fs.open_input_file(key) as f:
            data = f.read_at(size, offset)
    else:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    if len(data) != size:
        raise VideoDecodeError("truncated", f"{path}: member at {offset} has {len(data)} of {size} bytes")
    return data


def video_views(src: str | bytes, spec: ViewSpec, segment: tuple[int, int] | None = None,
                segment_fps: float | None = None) -> np.ndarray:
    """A video file's path or bytes -> its (V, T, S, S, 3) uint8 views. The one decode + multi-view
    sampling of every inference path (batch job, serving pyfunc, predict CLI). Raises
    :class:`VideoDecodeError` (``FileNotFoundError`` for a path that vanished meanwhile)."""
    def pick(num_frames: int, fps: float) -> np.ndarray:
        keep = resample_indices(num_frames, fps, spec.max_fps)  # e.g. raw EK100 at the shards' frame rate
        return keep[view_indices(len(keep), spec)]

    # Only the sampled frames are decoded (see benchmarks/infer_speed.py for what that saves), resized as
    # the evaluation loader resizes shard frames (its sizes, its filter on RGB: benchmarks/skew.py).
    dec = decode_sampled(src, pick, segment=segment, segment_fps=segment_fps, short_side=spec.img_size,
                         like_loader=True, device=spec.decode_device, budget=DEFAULT_BUDGET_BYTES)
    return crop_views(dec.frames, spec)


def open_source(src: str | bytes) -> str | bytes:
    """A video as a client names it -> what ``video_views`` decodes: bytes and local paths as they are,
    ``file://`` URIs as local paths (so the decoder's own checks refuse a fifo or a directory before
    anything opens it), other URIs (``s3://``...) read whole through pyarrow. An object that cannot be
    read is a :class:`VideoDecodeError` (``missing`` or ``unreadable``) naming the URI."""
    if isinstance(src, (bytes, bytearray, memoryview)) or "://" not in src:
        return src
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(src)
        if isinstance(fs, pafs.LocalFileSystem):
            return path
        with fs.open_input_file(path) as f:
            return f.read()
    except FileNotFoundError as e:
        raise VideoDecodeError("missing", f"{src}: {e}") from e
    except (OSError, ValueError) as e:  # pyarrow: unknown scheme, unreachable store, not a file
        raise VideoDecodeError("unreadable", f"{src}: {e}") from e


def reject_of(e: Exception) -> tuple[str, str]:
    """The reject ``(reason, detail)`` of an error raised while one input became views: the decoder's
    own reason, ``missing`` for a path that vanished meanwhile, ``unreadable`` for any other OS error (a
    shard tar that is a directory, no permission), else ``unexpected_error`` with the error's type."""
    if isinstance(e, VideoDecodeError):
        return e.reason, e.detail[:500]
    if isinstance(e, FileNotFoundError):
        return "missing", str(e)[:500]
    if isinstance(e, OSError):
        return "unreadable", str(e)[:500]
    return "unexpected_error", f"{type(e).__name__}: {e}"[:500]


def guarded_views(make: Callable[[], np.ndarray], spec: ViewSpec) -> tuple[np.ndarray, str, str]:
    """``(views, "", "")`` from ``make()``, or, for an input that cannot be used, zero views and its
    reject (:func:`reject_of`). The one guard of every inference path: batch job, serving, predict."""
    try:
        return make(), "", ""
    except Exception as e:  # noqa: BLE001 - one input must never stop a job; recorded with its type
        reason, detail = reject_of(e)
        return np.zeros(spec.shape, np.uint8), reason, detail


def decode_views(rec: dict, spec: ViewSpec) -> dict:
    """Ray Data ``map`` function: an input record -> the record with ``views`` (V, T, S, S, 3) uint8 and
    ``reason``/``detail`` empty, or, for a video that cannot be used, zero views and the reject reason
    (one of ``pipelines.schema.REJECT_REASONS``). Never raises for a bad video."""
    out = {k: v for k, v in rec.items() if k not in ("offset", "size", "seg_start", "seg_stop", "seg_fps")}

    def make() -> np.ndarray:
        if rec["offset"] >= 0:  # a video member inside a shard tar
            return video_views(_read_member(rec["path"], rec["offset"], rec["size"]), spec)
        segment = None if rec["seg_start"] < 0 else (int(rec["seg_start"]), int(rec["seg_stop"]))
        seg_fps = None if rec["seg_fps"] != rec["seg_fps"] else float(rec["seg_fps"])  # NaN -> None
        return video_views(rec["path"], spec, segment, seg_fps)

    views, reason, detail = guarded_views(make, spec)
    return out | {"views": views, "reason": reason, "detail": detail}
