"""Frame sampling and spatial crop boxes as pure functions (numpy in, numpy out; no video needed).

The DALI loaders call these same functions (through ``fn.python_function``) with random offsets drawn
by DALI's seeded RNG, and batch inference calls them directly: one definition of "which frames".
"""

from __future__ import annotations

import math

import numpy as np


def uniform_indices(num_frames: int, num_segments: int, offsets: np.ndarray) -> np.ndarray:
    """TSN-style uniform segments: split ``[0, num_frames)`` into ``num_segments`` equal parts and take
    the frame at fraction ``offsets[i]`` (in [0, 1)) of part ``i``.

    Training draws ``offsets`` uniformly at random; evaluation uses 0.5 (the middle of each segment).
    Videos shorter than ``num_segments`` repeat frames rather than fail.
    """
    n = max(int(num_frames), 1)
    offsets = np.asarray(offsets, dtype=np.float64).reshape(num_segments)
    pos = (np.arange(num_segments) + np.clip(offsets, 0.0, 1.0 - 1e-6)) * (n / num_segments)
    return np.minimum(np.floor(pos), n - 1).astype(np.int32)


def dense_indices(num_frames: int, num_samples: int, stride: int, start_frac: float) -> np.ndarray:
    """Dense sampling: ``num_samples`` frames at ``stride`` from a start at fraction ``start_frac`` (in
    [0, 1]) of the valid start range; past the end the last frame repeats (short videos)."""
    n = max(int(num_frames), 1)
    span = (num_samples - 1) * stride + 1
    max_start = max(n - span, 0)
    start = int(np.floor(float(np.clip(start_frac, 0.0, 1.0)) * max_start + 0.5))
    return np.minimum(start + stride * np.arange(num_samples), n - 1).astype(np.int32)


def view_offsets(num_clips: int) -> np.ndarray:
    """Evaluation clip positions in [0, 1): clip ``k`` of ``num_clips`` sits at ``(k + 0.5) / num_clips``
    (one clip -> the middle)."""
    return (np.arange(num_clips) + 0.5) / num_clips


def eval_indices(num_frames: int, num_samples: int, num_clips: int, sampling: str, stride: int) -> np.ndarray:
    """Frame indices of every temporal view, ``(num_clips * num_samples,)`` int32, clip-major.

    Uniform: clip ``k`` takes each segment at offset ``(k + 0.5) / num_clips`` (one clip -> the middle,
    as in the paper's single-view SSV2 test). Dense: clip starts evenly spread over the video.
    """
    if sampling == "uniform":
        clips = [uniform_indices(num_frames, num_samples, np.full(num_samples, o)) for o in view_offsets(num_clips)]
    elif sampling == "dense":
        fracs = np.linspace(0.0, 1.0, num_clips) if num_clips > 1 else np.array([0.5])
        clips = [dense_indices(num_frames, num_samples, stride, f) for f in fracs]
    else:
        raise ValueError(f"unknown sampling {sampling!r}; expected 'uniform' or 'dense'")
    return np.concatenate(clips).astype(np.int32)


def train_indices(num_frames: int, num_samples: int, sampling: str, stride: int, rand: np.ndarray) -> np.ndarray:
    """Training indices ``(num_samples,)`` from random numbers ``rand`` in [0, 1) of shape
    ``(num_samples,)``: one per segment for uniform sampling; ``rand[0]`` is the start for dense."""
    rand = np.asarray(rand, dtype=np.float64).reshape(-1)
    if sampling == "uniform":
        return uniform_indices(num_frames, num_samples, rand[:num_samples])
    if sampling == "dense":
        return dense_indices(num_frames, num_samples, stride, float(rand[0]))
    raise ValueError(f"unknown sampling {sampling!r}; expected 'uniform' or 'dense'")


def short_side_size(height: int, width: int, short_side: int, even: bool = True) -> tuple[int, int]:
    """(height, width) after resizing so the shorter side is ``short_side``, aspect kept. ``even``: even
    sizes, so every codec accepts them (shards); else the longer side rounded half up, exactly the size
    DALI's ``resize_shorter`` gives the evaluation loader (inference views, which are never encoded, must
    match it: an even width one pixel narrower shifts and rescales every crop)."""
    scaled = max(height, width) * short_side / min(height, width)
    new_h, new_w = (short_side, scaled) if height <= width else (scaled, short_side)
    if not even:
        return max(1, math.floor(new_h + 0.5)), max(1, math.floor(new_w + 0.5))
    new_h, new_w = round(new_h), round(new_w)
    return max(2, new_h - new_h % 2), max(2, new_w - new_w % 2)


CROP_POSITIONS: tuple[float, ...] = (0.0, 0.5, 1.0)


def crop_boxes(height: int, width: int, size: int) -> list[tuple[int, int, int, int]]:
    """The 3 evaluation crops ``(y0, x0, h, w)`` of a frame already resized to short side ``size``:
    left/centre/right for landscape frames, top/centre/bottom for portrait ones (DALI's
    ``crop_pos_x = crop_pos_y`` in ``CROP_POSITIONS`` gives the same boxes: its anchors round half up,
    where Python's ``round`` would round a centre crop's 5.5 to 6 but 6.5 to 6)."""
    boxes = []
    for p in CROP_POSITIONS:
        y0 = math.floor(p * (height - size) + 0.5) if height > size else 0
        x0 = math.floor(p * (width - size) + 0.5) if width > size else 0
        boxes.append((y0, x0, min(size, height), min(size, width)))
    return boxes


# EK100 videos run at 50/60 fps; 30 fps keeps every motion cue of a 16-segment clip at half the bytes.
DEFAULT_MAX_FPS = {"ek100": 30.0}


def resample_indices(num_frames: int, fps: float, max_fps: float | None) -> np.ndarray:
    """Frame indices that bring ``fps`` down to at most ``max_fps`` (evenly spaced, first frame kept)."""
    if not max_fps or fps <= max_fps * 1.001:
        return np.arange(num_frames)
    step = fps / max_fps
    return np.unique(np.floor(np.arange(0, num_frames, step)).astype(np.int64))
