"""Pretraining the two tiny experts, each in its own MLflow run, then a linear probe of each, frozen.

- spatial (appearance) expert: single frames, never their order. Objectives: which appearances the
  frame shows (multi-label, on the class token) and which appearance covers each patch (on the patch
  tokens, so B-CAST's per-patch queries find appearance where the object is).
- temporal (motion) expert: by default each token's motion (the velocity of what covers its tube) on
  rendered clips whose motion is known by construction, no label of any task (as optical-flow networks
  are pretrained on synthetic scenes); or VideoMAE's masked tube reconstruction (pixels of the hidden
  tubes from the visible ones), as the paper's temporal expert was pretrained. At this size the second
  leaves the direction of motion barely decodable (docs/learning.md has the measurements). By default it
  sees luma only (``temporal_input="luma"``): colour-blind, so the objects' hues are not its to bind.

Sanity first: a linear probe of each frozen expert (appearance from the spatial one's features of one
frame, direction of motion from the temporal one's features of a clip), beside the same probe on the
same network at its random initialisation, logged with the pretraining run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from cast_model.config import CASTConfig
from pipelines.synthetic_tasks import objects_id

from ..cli.flags import flag
from .data import (MOTION_SEED, PRETRAIN_SEED, PROBE_SEED, ClipPool, MotionPool, appearance_sets, as_clips,
                   crop_columns, normalise, patch_labels, render_motion_pool, render_pool, token_motion)
from .nets import (TEMPORAL_INPUTS, MotionField, SpatialExpert, VideoEncoder, VideoMAE, half_time_mask, tube_mask,
                   tubelet_pixels)

Log = Callable[[str], None]


TEMPORAL_OBJECTIVES = ("motion_field", "videomae")


@dataclass(frozen=True)
class PretrainPreset:
    """Sizes and schedule of one pretraining: the experts' geometry (a CASTConfig preset with overrides)
    and each expert's steps, batch and learning rate."""

    model: str = "micro"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    pool_clips: int = 1536
    probe_clips: int = 480
    spatial_steps: int = 500
    spatial_batch: int = 64
    temporal_steps: int = 1000
    temporal_batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    # The temporal expert's objective: "motion_field" (each token's velocity, on clips of free motion) or
    # "videomae" (masked tube reconstruction, with the masking options below)
    temporal_objective: str = "motion_field"
    # What the temporal expert sees of each pixel: "luma" (colour-blind, as primate motion vision largely
    # is; the task's objects differ in hue alone, so appearance reaches it only through the exchange with
    # the spatial expert) or "rgb" (free, so it can read the objects' hues beside their motion)
    temporal_input: str = "luma"
    max_speed: float = 1.2  # motion_field: fastest object, pixels per source frame
    # VideoMAE's objective, with a mask that asks for motion: one half of the time steps hidden entirely,
    # tubes at ``mask_ratio`` in the other ("tube": VideoMAE's own masking at ``mask_ratio``)
    masking: str = "half_time"
    mask_ratio: float = 0.5
    norm_pix_loss: bool = True  # VideoMAE's target: each tube's pixels normalised by their own mean and std
    motion_target: bool = False  # also reconstruct each hidden tube's frame difference (MotionMAE's extra target)
    decoder_dim: int = 32
    decoder_depth: int = 1
    decoder_heads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temporal_objective not in TEMPORAL_OBJECTIVES:
            raise ValueError(f"temporal_objective must be one of {TEMPORAL_OBJECTIVES}, got {self.temporal_objective!r}")
        if self.temporal_input not in TEMPORAL_INPUTS:
            raise ValueError(f"temporal_input must be one of {TEMPORAL_INPUTS}, got {self.temporal_input!r}")
        if self.masking not in ("half_time", "tube"):
            raise ValueError(f"masking must be 'half_time' or 'tube', got {self.masking!r}")

    def config(self) -> CASTConfig:
        return CASTConfig.preset(self.model, **self.model_overrides)

    def params(self) -> dict[str, str]:
        """What made the experts, as the cache compares it: the recipe, the geometry and the objects the
        pretraining clips show (experts cached before the objects changed are remade)."""
        return ({k: str(v) for k, v in asdict(self).items()} | {f"geometry.{k}": str(v) for k, v in
                                                                self.config().to_dict().items()}
                | {"objects": objects_id()})


PRETRAIN_PRESETS: dict[str, PretrainPreset] = {
    # The experts make demo and ablation use: the micro CAST geometry.
    "micro": PretrainPreset(),
    # The smallest that runs every step of the path (tests): seconds.
    "smoke": PretrainPreset(model_overrides=dict(embed_dim=32, depth=1, num_heads=2), pool_clips=24,
                            probe_clips=24, spatial_steps=3, spatial_batch=8, temporal_steps=3, temporal_batch=4,
                            warmup_steps=1, decoder_dim=16, decoder_depth=1, decoder_heads=2),
}



@dataclass(frozen=True)
class ExpertsConfig:
    """Which experts to make (``cast-pretrain-experts``): a pretraining preset, the cache folder."""

    preset: str = field(default="micro", metadata=flag(
        "pretraining preset (micro: the demo's and the ablation's; smoke: seconds, for checks)",
        choices=sorted(PRETRAIN_PRESETS)))
    root: str | None = field(default=None, metadata=flag("cache folder", none="data/experts"))


def _schedule(step: int, preset: PretrainPreset, total: int) -> float:
    """Linear warmup then cosine to zero: the lr factor at ``step``."""
    if step < preset.warmup_steps:
        return (step + 1) / preset.warmup_steps
    progress = (step - preset.warmup_steps) / max(total - preset.warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _optimise(net: torch.nn.Module, preset: PretrainPreset, steps: int, loss_of: Callable[[int], torch.Tensor],
              on_log: Callable[[int, float], None], log_every: int = 25) -> float:
    """AdamW over ``net``'s trainable weights for ``steps`` steps; ``loss_of(step)`` draws a batch and
    returns its loss. Returns the mean loss of the last ``log_every`` steps."""
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=preset.lr, weight_decay=preset.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, preset, steps))
    net.train()
    window: list[float] = []
    last = float("nan")
    for step in range(steps):
        loss = loss_of(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        window.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            last = float(np.mean(window))
            on_log(step + 1, last)
            window = []
    net.eval()
    return last


def train_spatial(net: SpatialExpert, pool: ClipPool, preset: PretrainPreset, on_log: Callable[[int, float], None]) -> float:
    """Appearance pretraining on single frames drawn at random from the pool's clips (never in order)."""
    rng = np.random.default_rng(preset.seed + 1)

    def loss_of(step: int) -> torch.Tensor:
        index = rng.integers(0, len(pool.clips), preset.spatial_batch)
        clips, cover = crop_columns(pool, index, rng)
        pick = rng.integers(0, clips.shape[1], len(index))  # one frame of each clip
        frames, cover = clips[np.arange(len(index)), pick], cover[np.arange(len(index)), pick]
        logits, patch_logits = net(normalise(frames))
        present = F.binary_cross_entropy_with_logits(logits, appearance_sets(cover))
        where = F.cross_entropy(patch_logits.flatten(0, 1), patch_labels(cover, net.cfg.patch_size).flatten())
        return present + where

    return _optimise(net, preset, preset.spatial_steps, loss_of, on_log)


def temporal_net(preset: PretrainPreset) -> VideoEncoder:
    """The temporal expert's pretraining network for the preset's objective."""
    cfg = preset.config()
    if preset.temporal_objective == "motion_field":
        return MotionField(cfg, preset.temporal_input)
    return VideoMAE(cfg, preset.temporal_input, preset.decoder_dim, preset.decoder_depth, preset.decoder_heads,
                    preset.motion_target)


def train_temporal(net: VideoEncoder, pool: ClipPool | MotionPool, preset: PretrainPreset,
                   on_log: Callable[[int, float], None]) -> float:
    """The temporal expert's objective: :func:`train_motion_field` or :func:`train_videomae`."""
    if isinstance(net, MotionField) and isinstance(pool, MotionPool):
        return train_motion_field(net, pool, preset, on_log)
    if isinstance(net, VideoMAE) and isinstance(pool, ClipPool):
        return train_videomae(net, pool, preset, on_log)
    raise TypeError(f"no temporal objective for {type(net).__name__} on a {type(pool).__name__}")


def train_motion_field(net: MotionField, pool: MotionPool, preset: PretrainPreset,
                       on_log: Callable[[int, float], None]) -> float:
    """Mean squared error of every token's predicted velocity against its tube's rendered one."""
    rng = np.random.default_rng(preset.seed + 2)

    def loss_of(step: int) -> torch.Tensor:
        index = rng.integers(0, len(pool.clips), preset.temporal_batch)
        clips, velocity = crop_columns(pool, index, rng)
        return F.mse_loss(net(as_clips(clips)), token_motion(velocity, net.cfg))

    return _optimise(net, preset, preset.temporal_steps, loss_of, on_log)


def train_videomae(net: VideoMAE, pool: ClipPool, preset: PretrainPreset, on_log: Callable[[int, float], None]) -> float:
    """Masked tube reconstruction: mean squared error on the hidden tubes' (normalised) pixels."""
    rng = np.random.default_rng(preset.seed + 2)
    gen = torch.Generator().manual_seed(preset.seed + 3)

    def loss_of(step: int) -> torch.Tensor:
        index = rng.integers(0, len(pool.clips), preset.temporal_batch)
        clips = as_clips(crop_columns(pool, index, rng)[0])
        mask = half_time_mask if preset.masking == "half_time" else tube_mask
        visible, masked = mask(len(index), net.cfg, preset.mask_ratio, gen)
        pixels = tubelet_pixels(clips, net.cfg)
        target = torch.gather(pixels, 1, masked[..., None].expand(-1, -1, pixels.shape[-1]))  # (B, M, P)
        parts = [target]
        if preset.motion_target:  # the tube's second frame minus its first: where the object went
            half = target.shape[-1] // 2
            parts.append(target[..., half:] - target[..., :half])
        if preset.norm_pix_loss:
            parts = [(t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt() for t in parts]
        return F.mse_loss(net(clips, visible, masked), torch.cat(parts, -1))

    return _optimise(net, preset, preset.temporal_steps, loss_of, on_log)


# -- linear probes ---------------------------------------------------------------------------------------
def linear_probe(features: torch.Tensor, labels: torch.Tensor, classes: int, seed: int = 0) -> float:
    """Top-1 of a logistic regression fitted on two thirds of (features, labels), scored on the rest."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    cut = len(labels) * 2 // 3
    tr, te = order[:cut], order[cut:]
    mean, std = features[tr].mean(0), features[tr].std(0) + 1e-6
    x = (features - mean) / std
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x[tr] @ w + b, labels[tr]) + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((x[te] @ w + b).argmax(1) == labels[te]).float().mean())


@torch.no_grad()
def probe_spatial(net: SpatialExpert, probe: ClipPool) -> float:
    """Appearance (6 classes) from the frozen spatial expert's features of one centre-cropped frame."""
    clips, _ = crop_columns(probe, np.arange(len(probe.clips)), None)
    feats = net.features(normalise(clips[:, clips.shape[1] // 2]))
    return linear_probe(feats, torch.from_numpy(probe.first_object[:, 0]), 6)


@torch.no_grad()
def probe_temporal(net: VideoEncoder, probe: ClipPool) -> float:
    """Direction of motion (4 classes) from the frozen temporal expert's features of a centre-cropped clip."""
    clips, _ = crop_columns(probe, np.arange(len(probe.clips)), None)
    feats = torch.cat([net.features(as_clips(clips[i:i + 64])) for i in range(0, len(clips), 64)])
    return linear_probe(feats, torch.from_numpy(probe.first_object[:, 1]), 4)


@dataclass(frozen=True)
class PretrainPools:
    """The clips each expert pretrains on, and the probe's (one object each: labels are unambiguous)."""

    spatial: ClipPool
    temporal: ClipPool | MotionPool
    probe: ClipPool


def pretrain_pools(preset: PretrainPreset, log: Log) -> PretrainPools:
    """Render the preset's pools: one or two objects moving the task's ways (the spatial expert's frames,
    and VideoMAE's clips), free motion (the motion-field objective's clips), and the probe's."""
    t0 = time.perf_counter()
    cfg = preset.config()
    pool = render_pool(preset.pool_clips, cfg, PRETRAIN_SEED + preset.seed)
    temporal = (render_motion_pool(preset.pool_clips, cfg, MOTION_SEED + preset.seed, preset.max_speed)
                if preset.temporal_objective == "motion_field" else pool)
    probe = render_pool(preset.probe_clips, cfg, PROBE_SEED + preset.seed, one_object_share=1.0)
    log(f"rendered {preset.pool_clips} pretraining clips per expert and {preset.probe_clips} probe clips in "
        f"{time.perf_counter() - t0:.1f}s")
    return PretrainPools(pool, temporal, probe)


__all__ = ["PretrainPreset", "PRETRAIN_PRESETS", "TEMPORAL_OBJECTIVES", "PretrainPools", "temporal_net", "train_spatial",
           "train_temporal", "train_motion_field", "train_videomae", "linear_probe", "probe_spatial", "probe_temporal",
           "pretrain_pools"]
