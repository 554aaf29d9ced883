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
from pipelines.synthetic import paint, render_scene, shape_mask
from pipelines.synthetic_tasks import APPEARANCES, DIRECTIONS, Scene

# Seeds of the pretraining and probe sets: far from the fine-tuning sets' (0, 1, ... and + 7919).
PRETRAIN_SEED = 1_000_003
PROBE_SEED = 2_000_003
MOTION_SEED = 3_000_017
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


@dataclass(frozen=True)
class MotionPool:
    """Clips (C, F, H, W, 3) uint8 of objects moving at free velocities, and each pixel's velocity
    (C, F, H, W, 2) float16 (dy, dx) in pixels per sampled frame, zero on the static background."""

    clips: np.ndarray
    velocity: np.ndarray


def render_motion_pool(count: int, cfg: CASTConfig, seed: int, max_speed: float) -> MotionPool:
    """``count`` clips of one to three objects, each of any appearance moving at its own velocity: any
    heading, a speed uniform in [0, ``max_speed``] pixels per source frame (the task's objects move 0.7-0.9),
    wrapping around the frame; sampled and painted as :func:`render_pool`'s clips. The velocity of every
    painted pixel is known by construction: a motion target that needs no label."""
    rng = np.random.default_rng(seed)
    h = cfg.img_size
    w = (h * 4 // 3) // 2 * 2
    r = max(h // 6, 4)  # render_scene's object size
    step = SOURCE_FRAMES / cfg.num_frames  # source frames per sampled frame, on average
    clips = np.empty((count, cfg.num_frames, h, w, 3), np.uint8)
    velocity = np.zeros((count, cfg.num_frames, h, w, 2), np.float16)
    for i in range(count):
        n = int(rng.integers(1, 4))
        objects = []
        for a in rng.choice(len(APPEARANCES), size=n, replace=False):
            _, colour, shape = APPEARANCES[a]
            speed, heading = rng.uniform(0, max_speed), rng.uniform(0, 2 * np.pi)
            objects.append((shape_mask(shape, r), colour, speed * np.sin(heading), speed * np.cos(heading),
                            rng.uniform(0, h), rng.uniform(0, w)))
        bg = rng.integers(20, 60, size=3)
        clips[i] = np.clip(bg + rng.normal(0, 6, size=(cfg.num_frames, h, w, 1)), 0, 255).astype(np.uint8)
        who = np.full((cfg.num_frames, h, w), -1, np.int8)  # which object is painted where (last on top)
        for k, f in enumerate(_segment_frames(rng, cfg.num_frames)):
            for o, (m, colour, vy, vx, y0, x0) in enumerate(objects):
                cy, cx = (y0 + vy * f) % h, (x0 + vx * f) % w
                for oy in (-h, 0, h):  # the parts of a wrapping object on every side
                    for ox in (-w, 0, w):
                        paint(clips[i, k], m, int(round(cy + oy)), int(round(cx + ox)), colour)
                        paint(who[k], m, int(round(cy + oy)), int(round(cx + ox)), o)
        table = np.array([(vy, vx) for _, _, vy, vx, _, _ in objects] + [(0.0, 0.0)], np.float32) * step
        velocity[i] = table[who]  # -1 indexes the last row: the background's zero
    return MotionPool(clips, velocity)


def token_motion(velocity: np.ndarray, cfg: CASTConfig) -> torch.Tensor:
    """(B, F, S, S, 2) per-pixel velocity -> (B, T*N, 2): each tube's mean velocity (its pixels over the
    tubelet's frames, background counted as zero), in the temporal stem's token order."""
    B = velocity.shape[0]
    t, p, g = cfg.tubelet_size, cfg.patch_size, cfg.grid_size
    v = velocity.astype(np.float32).reshape(B, cfg.num_steps, t, g, p, g, p, 2)
    return torch.from_numpy(v.mean(axis=(2, 4, 6)).reshape(B, cfg.num_steps * g * g, 2))


def crop_columns(pool: ClipPool | MotionPool, index: np.ndarray, rng: np.random.Generator | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Square crops of the pool's clips ``index``: random columns with ``rng``, else the centre (as the
    loader's evaluation crop). -> clips (B, F, S, S, 3) and the same crops of the pool's per-pixel
    targets: cover (B, F, S, S) of a ClipPool, velocity (B, F, S, S, 2) of a MotionPool."""
    S, W = pool.clips.shape[2], pool.clips.shape[3]
    starts = rng.integers(0, W - S + 1, len(index)) if rng is not None else np.full(len(index), (W - S) // 2)
    target = pool.cover if isinstance(pool, ClipPool) else pool.velocity
    clips = np.stack([pool.clips[i, :, :, s:s + S] for i, s in zip(index, starts)])
    return clips, np.stack([target[i, :, :, s:s + S] for i, s in zip(index, starts)])


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


__all__ = ["ClipPool", "MotionPool", "render_pool", "render_motion_pool", "token_motion", "crop_columns", "normalise", "as_clips", "patch_labels", "appearance_sets",
           "PRETRAIN_SEED", "PROBE_SEED", "MOTION_SEED"]
