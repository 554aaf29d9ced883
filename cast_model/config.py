"""CAST configuration: one plain dataclass, presets, and validation at construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .vocab import HEADS

Head = Literal["single", "verb_noun"]  # the keys of vocab.HEADS
# Which tokens a cross-attention query sees:
#   "time"       - the tokens at the same patch position across time steps
#   "space"      - the patches of the same time step
#   "space_time" - every patch of every time step
Window = Literal["time", "space", "space_time"]
Direction = Literal["t2s", "s2t"]
# Which experts the network holds: both (CAST and its ablations) or one alone (the single-expert baselines).
Experts = Literal["both", "spatial", "temporal"]
# How the heads join the two experts. "sum": CAST's, the single head over A_s(s) + A_t(t), or the noun head
# over the spatial and the verb head over the temporal feature. "concat": the late-fusion baseline's, the
# single head over [A_s(s); A_t(t)], or each of the verb and noun heads over [s; t].
Fusion = Literal["sum", "concat"]

_WINDOWS = ("time", "space", "space_time")
_DIRECTIONS = ("t2s", "s2t")
_EXPERTS = ("both", "spatial", "temporal")
_FUSIONS = ("sum", "concat")


class ConfigError(ValueError):
    """A configuration that cannot describe a valid CAST model."""


@dataclass(frozen=True)
class CASTConfig:
    """Everything that defines a CAST network. Sizes derive from these fields, nothing is fixed.

    ``num_frames`` counts input frames (2T): the temporal expert embeds them as ``tubelet_size``-frame
    tubelets, the spatial expert sees one frame per tubelet (the last of each, as the paper's code
    takes ``x[:, :, 1::2]``), so both experts have ``num_frames // tubelet_size`` time steps.
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    num_frames: int = 16
    img_size: int = 224
    patch_size: int = 16
    tubelet_size: int = 2
    # B-CAST bottleneck: width = embed_dim // down_ratio (the paper's 1/2 is down_ratio=2).
    down_ratio: int = 2
    adapter_ratio: float = 0.25
    # Blocks that carry B-CAST (None: every block). An empty tuple means no exchange at all.
    bcast_blocks: tuple[int, ...] | None = None
    directions: tuple[Direction, ...] = ("t2s", "s2t")
    t2s_window: Window = "time"
    s2t_window: Window = "space"
    head: Head = "single"
    experts: Experts = "both"
    fusion: Fusion = "sum"
    num_classes: int = 400
    num_verbs: int = 97
    num_nouns: int = 300
    drop_path_rate: float = 0.0
    head_drop_rate: float = 0.0
    # Head weights are scaled by this at init (the paper's fine-tuning recipe uses 0.001).
    init_scale: float = 0.001
    # False: attention written as explicit softmax(QK^T)V (the baseline of benchmarks/model_speed.py).
    fused_attention: bool = True
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.bcast_blocks is not None and not isinstance(self.bcast_blocks, tuple):
            object.__setattr__(self, "bcast_blocks", tuple(self.bcast_blocks))
        if not isinstance(self.directions, tuple):
            object.__setattr__(self, "directions", tuple(self.directions))
        self.validate()

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patches per frame (N)."""
        return self.grid_size**2

    @property
    def num_steps(self) -> int:
        """Time steps of both experts (T = num_frames / tubelet_size)."""
        return self.num_frames // self.tubelet_size

    @property
    def bcast_dim(self) -> int:
        return self.embed_dim // self.down_ratio

    @property
    def bcast_layers(self) -> tuple[int, ...]:
        return tuple(range(self.depth)) if self.bcast_blocks is None else self.bcast_blocks

    @property
    def has_spatial(self) -> bool:
        return self.experts in ("both", "spatial")

    @property
    def has_temporal(self) -> bool:
        return self.experts in ("both", "temporal")

    # -- validation ------------------------------------------------------------------------------
    def validate(self) -> None:
        problems: list[str] = []
        for name in ("embed_dim", "depth", "num_heads", "num_frames", "img_size", "patch_size",
                     "tubelet_size", "down_ratio"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if problems:
            raise ConfigError("; ".join(problems))
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.embed_dim % self.down_ratio or self.bcast_dim % self.num_heads:
            problems.append(
                f"B-CAST width embed_dim/down_ratio = {self.embed_dim}/{self.down_ratio} must be an "
                f"integer divisible by num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.num_frames % self.tubelet_size:
            problems.append(
                f"num_frames {self.num_frames} is not divisible by tubelet_size {self.tubelet_size}")
        if self.tubelet_size != 2:
            # The spatial expert takes every second frame to align one CLIP frame with one tubelet.
            problems.append(f"tubelet_size must be 2 (one CLIP frame per tubelet), got {self.tubelet_size}")
        if self.bcast_blocks is not None:
            bad = [i for i in self.bcast_blocks if not 0 <= i < self.depth]
            if bad:
                problems.append(f"bcast_blocks {bad} outside 0..{self.depth - 1}")
            if len(set(self.bcast_blocks)) != len(self.bcast_blocks):
                problems.append(f"bcast_blocks has duplicates: {self.bcast_blocks}")
        unknown = [d for d in self.directions if d not in _DIRECTIONS]
        if unknown:
            problems.append(f"directions {unknown} not in {_DIRECTIONS}")
        for name in ("t2s_window", "s2t_window"):
            if getattr(self, name) not in _WINDOWS:
                problems.append(f"{name} must be one of {_WINDOWS}, got {getattr(self, name)!r}")
        if self.head not in HEADS:
            problems.append(f"head must be one of {tuple(HEADS)}, got {self.head!r}")
        problems += self._variant_problems()
        for name in ("num_classes", "num_verbs", "num_nouns"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0.0 <= self.drop_path_rate < 1.0 or not 0.0 <= self.head_drop_rate < 1.0:
            problems.append("drop_path_rate and head_drop_rate must lie in [0, 1)")
        if problems:
            raise ConfigError("invalid CASTConfig: " + "; ".join(problems))

    def _variant_problems(self) -> list[str]:
        """What keeps ``experts``/``fusion``/``directions`` from describing one of the ablation's networks."""
        problems: list[str] = []
        if self.experts not in _EXPERTS:
            return [f"experts must be one of {_EXPERTS}, got {self.experts!r}"]
        if self.fusion not in _FUSIONS:
            return [f"fusion must be one of {_FUSIONS}, got {self.fusion!r}"]
        if self.experts != "both":
            if self.bcast_layers:
                problems.append(f"experts={self.experts!r} has no second expert to exchange with: "
                                f"bcast_blocks must be (), got {self.bcast_blocks!r}")
            if self.fusion != "sum":
                problems.append(f"fusion={self.fusion!r} joins two experts' features: experts={self.experts!r} has one")
        if self.bcast_layers and not self.directions and self.experts == "both":
            problems.append("directions is empty while bcast_blocks asks for B-CAST: use bcast_blocks=() for no exchange")
        return problems

    # -- presets and (de)serialisation -----------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "CASTConfig":
        """A named configuration with field overrides, e.g. ``preset("base", num_classes=174)``."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CASTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown CASTConfig fields: {unknown}")
        values = dict(values)
        if values.get("bcast_blocks") is not None:
            values["bcast_blocks"] = tuple(values["bcast_blocks"])
        if "directions" in values:
            values["directions"] = tuple(values["directions"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["directions"] = list(self.directions)
        if self.bcast_blocks is not None:
            out["bcast_blocks"] = list(self.bcast_blocks)
        return out

    def replace(self, **changes: Any) -> "CASTConfig":
        return dataclasses.replace(self, **changes)


# The paper's ViT-B/16 (16 frames, 224^2), a tiny one that trains on 2 CPU cores in minutes, and a
# micro one (64 channels, 3 blocks, 32^2 frames cut in 16 patches, 4 time steps): the geometry of the
# experts pretrained in the project (workflows.experts), small enough that the ablation's two dozen
# fine-tunings fit half an hour on 2 cores.
PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(embed_dim=768, depth=12, num_heads=12, num_frames=16, img_size=224, patch_size=16),
    "tiny": dict(embed_dim=96, depth=4, num_heads=4, num_frames=8, img_size=64, patch_size=8,
                 init_scale=1.0),
    "micro": dict(embed_dim=64, depth=3, num_heads=4, num_frames=8, img_size=32, patch_size=8,
                  init_scale=1.0),
}

__all__ = ["CASTConfig", "ConfigError", "PRESETS", "Head", "Window", "Direction", "Experts", "Fusion"]
