"""Pretraining and probe data: synthetic clips rendered in memory from their own seeds.

The clips are drawn like the fine-tuning videos (same objects, speeds and frame sampling, at the
experts' input size) but from generators the fine-tuning sets never use, and their scenes mix one and
two objects with any appearance and direction: no fine-tuning label is used or implied. Held as uint8;
normalised as the training loader normalises (ImageNet mean and std).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cast_model.config import CASTConfig
from pipelines.loader import MEAN, STD
from pipelines.synthetic import render_scene
from pipelines.synthetic_tasks import APPEARANCES, DIRECTIONS, Scene

# Seeds of the pretraining and probe sets: far from the fine-tuning sets' (0, 1, ... and + 7919).
PRETRAIN_SEED = 1_000_003
PROBE_SEED = 2_000_003
SOURCE_FRAMES = 24  # frames rendered per clip, as the demo's videos have; num_frames are sampled from them


@dataclass(frozen=True)
class ClipPool:
    """Clips (C, F, H, W, 3) uint8 at height img_size, width 4/3 of it, with what each shows: the
    (appearance, direction) of its first object (C, 2), and per pixel which appearance covers it
    (C, F, H, W) int8, -1 for background."""

    clips: np.ndarray
    first_object: np.ndarray
    cover: np.ndarray


def _segment_frames(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """One random frame in each of ``num_frames`` equal segments (the loader's uniform sampling)."""
    edges = np.linspace(0, SOURCE_FRAMES, num_frames + 1)
    return np.minimum((edges[:-1] + rng.uniform(0, 1, num_frames) * np.diff(edges)).astype(int), SOURCE_FRAMES - 1)


def _cover(clip: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) -> (F, H, W) appearance index per pixel, -1 where no object is painted. Objects are
    painted in their exact colour; the background's noisy greys never reach those colours."""
    out = np.full(clip.shape[:3], -1, np.int8)
    for a, (_, colour, _) in enumerate(APPEARANCES):
        out[(clip == np.array(colour, np.uint8)).all(-1)] = a
    return out


def render_pool(count: int, cfg: CASTConfig, seed: int, one_object_share: float = 0.5) -> ClipPool:
    """``count`` clips of ``cfg.num_frames`` sampled frames: a share with one object, the rest with two
    objects of different appearance (any directions)."""
    rng = np.random.default_rng(seed)
    h = cfg.img_size
    w = (h * 4 // 3) // 2 * 2
    clips = np.empty((count, cfg.num_frames, h, w, 3), np.uint8)
    first = np.empty((count, 2), np.int64)
    for i in range(count):
        n = 1 if rng.uniform() < one_object_share else 2
        appearances = rng.choice(len(APPEARANCES), size=n, replace=False)
        objects = tuple((int(a), int(rng.integers(len(DIRECTIONS)))) for a in appearances)
        full = render_scene(rng, Scene(objects), SOURCE_FRAMES, h, w)
        clips[i] = full[_segment_frames(rng, cfg.num_frames)]
        first[i] = objects[0]
    return ClipPool(clips, first, np.stack([_cover(c) for c in clips]))


def crop_columns(pool: ClipPool, index: np.ndarray, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """Square crops of the pool's clips ``index``: random columns with ``rng``, else the centre (as the
    loader's evaluation crop). -> clips (B, F, S, S, 3), cover (B, F, S, S)."""
    S, W = pool.clips.shape[2], pool.clips.shape[3]
    starts = rng.integers(0, W - S + 1, len(index)) if rng is not None else np.full(len(index), (W - S) // 2)
    clips = np.stack([pool.clips[i, :, :, s:s + S] for i, s in zip(index, starts)])
    cover = np.stack([pool.cover[i, :, :, s:s + S] for i, s in zip(index, starts)])
    return clips, cover


def normalise(frames: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> float (..., 3, H, W) with the training loader's mean and std."""
    x = torch.from_numpy(frames).float()
    x = (x - torch.tensor(MEAN)) / torch.tensor(STD)
    return x.movedim(-1, -3).contiguous()


def as_clips(frames: np.ndarray) -> torch.Tensor:
    """(B, F, H, W, 3) uint8 -> (B, 3, F, H, W) float, CAST's input layout."""
    return normalise(frames).transpose(1, 2).contiguous()


def patch_labels(cover: np.ndarray, patch: int) -> torch.Tensor:
    """(B, S, S) per-pixel cover -> (B, N) per-patch label: the appearance covering most of the patch if
    it covers at least a quarter of it, else background (the last class, A)."""
    B, S, _ = cover.shape
    g = S // patch
    cells = cover.reshape(B, g, patch, g, patch).transpose(0, 1, 3, 2, 4).reshape(B, g * g, patch * patch)
    counts = np.stack([(cells == a).sum(-1) for a in range(len(APPEARANCES))], axis=-1)  # (B, N, A)
    label = counts.argmax(-1)
    label[counts.max(-1) < patch * patch / 4] = len(APPEARANCES)
    return torch.from_numpy(label)


def appearance_sets(cover: np.ndarray) -> torch.Tensor:
    """(B, S, S) per-pixel cover -> (B, A) float: which appearances the frame shows (multi-hot)."""
    return torch.from_numpy(np.stack([(cover == a).any(axis=(1, 2)) for a in range(len(APPEARANCES))], -1)).float()


__all__ = ["ClipPool", "render_pool", "crop_columns", "normalise", "as_clips", "patch_labels", "appearance_sets",
           "PRETRAIN_SEED", "PROBE_SEED"]
