"""What one ablation runs: tasks, variants, seeds, the one recipe every variant trains with, sizes.

The defaults are the profile measured to fit 30 minutes on 2 CPU cores (docs/reproduce.md); ``FULL``
is the ``--full`` profile. Validated before any work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cast_model import PRESETS
from pipelines.synthetic_tasks import TASKS

from ..experts.pretrain import PRETRAIN_PRESETS
from ..tracking.store import DATA_DIR
from .variants import NAMES, select

EXPERT_SOURCES = ("project", "none")  # the experts pretrained here (workflows.experts), or random frozen ones


class AblationConfigError(ValueError):
    """An ablation that cannot run as configured; raised before any work starts."""


@dataclass(frozen=True)
class AblationConfig:
    tasks: tuple[str, ...] = ("motion", "binding")
    variants: tuple[str, ...] = NAMES
    seeds: tuple[int, ...] = (0, 1, 2)
    # "project": the tiny experts pretrained in this project (made once, cached under data/); "none":
    # randomly initialised frozen experts, for smoke tests of the machinery only (said in every run).
    experts: str = "project"
    # experts="project": the expert preset (workflows.experts; its files carry the geometry every variant
    # is built at); experts="none": the cast_model preset the random experts are built at.
    preset: str = "micro"
    experts_dir: str = ""  # where expert files are cached ("": workflows.experts' default, data/experts)
    # -- the one recipe (every trained variant) -----------------------------------------------------------
    steps: int = 500
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    eval_every: int = 100  # steps between validation points (the learning curves)
    # -- data ---------------------------------------------------------------------------------------------
    videos_per_class: int = 12  # training videos per class; validation gets a quarter
    heldout_per_class: int = 4  # test videos per class, rendered from another seed
    data_seed: int = 0
    # -- execution ---------------------------------------------------------------------------------------
    concurrent_trials: int = 2
    cpus_per_trial: float = 1.0
    attention_videos: int = 3  # test videos whose B-CAST attention maps CAST's run shows
    data_dir: str = str(DATA_DIR / "ablation")
    storage_path: str = str(DATA_DIR / "ablation" / "ray_results")
    experiment: str = "cast-ablation"
    run_name: str = ""
    gate: bool = True

    def validate(self) -> None:
        problems = []
        unknown = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or unknown:
            problems.append(f"tasks must be a non-empty subset of {TASKS}, got {list(self.tasks)}")
        try:
            select(self.variants)
        except ValueError as err:
            problems.append(str(err))
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds must be distinct and at least one, got {list(self.seeds)}")
        if self.experts not in EXPERT_SOURCES:
            problems.append(f"experts must be one of {EXPERT_SOURCES}, got {self.experts!r}")
        presets = PRESETS if self.experts == "none" else PRETRAIN_PRESETS
        if self.preset not in presets:
            problems.append(f"preset must be one of {sorted(presets)} with experts={self.experts!r}, "
                            f"got {self.preset!r}")
        for name in ("steps", "batch_size", "eval_every", "videos_per_class", "heldout_per_class",
                     "concurrent_trials", "attention_videos"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.warmup_frac < 1 and self.cpus_per_trial > 0):
            problems.append("lr and cpus_per_trial must be > 0, weight_decay >= 0, warmup_frac in [0, 1)")
        if problems:
            raise AblationConfigError("; ".join(problems))

    def replace(self, **changes: Any) -> "AblationConfig":
        return dataclasses.replace(self, **changes)

    def to_params(self) -> dict[str, str]:
        return {k: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
                for k, v in dataclasses.asdict(self).items()}

    def recipe(self) -> dict[str, Any]:
        """The fields every trial trains with (one recipe for every variant)."""
        return {k: getattr(self, k) for k in ("steps", "batch_size", "lr", "weight_decay", "warmup_frac",
                                               "eval_every", "attention_videos")}


# More seeds (the default's spread is measured over 3); both tasks as by default.
FULL = dict(seeds=(0, 1, 2, 3, 4))
