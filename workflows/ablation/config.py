"""What one ablation runs: tasks, variants, seeds, the one recipe every variant trains with, sizes.

The defaults are the profile measured to fit 30 minutes on 2 CPU cores (docs/reproduce.md); ``FULL``
is the ``--full`` profile. Validated before any work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cast_model import PRESETS
from pipelines.synthetic_tasks import TASKS

from ..cli.flags import flag
from ..cluster.ray_connect import too_few_cpus
from ..experts.pretrain import PRETRAIN_PRESETS
from ..tracking.store import DATA_DIR
from .variants import NAMES, select

EXPERT_SOURCES = ("project", "none")  # the experts pretrained here (workflows.experts), or random frozen ones


# Both tasks and more seeds. The default runs the binding task alone: on the one-object motion task each
# head reads what its own expert sees, so the exchange has nothing to add there (measured,
# docs/reproduce.md) and it would double the time.
FULL = dict(tasks=("motion", "binding"), seeds=(0, 1, 2, 3, 4))


class AblationConfigError(ValueError):
    """An ablation that cannot run as configured; raised before any work starts."""


_RUNS, _RECIPE, _DATA, _EXEC = "what runs", "the one recipe (every trained variant)", "data", "execution"


def _setting(default: Any, help: str, group: str, **kw: Any) -> Any:
    return field(default=default, metadata=flag(help, group=group, **kw))


@dataclass(frozen=True)
class AblationConfig:
    tasks: tuple[str, ...] = _setting(("binding",), f"comma separated, of {', '.join(TASKS)} (--full: "
                                      f"{','.join(FULL['tasks'])})", _RUNS, sep=",")
    variants: tuple[str, ...] = _setting(NAMES, f"comma separated, of {', '.join(NAMES)}", _RUNS, sep=",")
    seeds: tuple[int, ...] = _setting((0, 1, 2), f"comma separated (--full: {','.join(map(str, FULL['seeds']))})",
                                      _RUNS, sep=",")
    # "project": the tiny experts pretrained in this project (made once, cached under data/); "none":
    # randomly initialised frozen experts, for smoke tests of the machinery only (said in every run).
    experts: str = _setting("project", "project: the tiny experts pretrained here (made once); none: random "
                                       "frozen experts (smoke runs)", _RUNS, choices=EXPERT_SOURCES)
    # experts="project": the expert preset (workflows.experts; its files carry the geometry every variant
    # is built at); experts="none": the cast_model preset the random experts are built at.
    preset: str = _setting("micro", "model geometry (the experts' preset)", _RUNS)
    experts_dir: str = _setting("", "expert cache folder", _RUNS, none="data/experts")
    # -- the one recipe (every trained variant) -----------------------------------------------------------
    steps: int = _setting(800, "optimizer steps of every trained variant (one recipe)", _RECIPE)
    batch_size: int = _setting(16, "clips per step", _RECIPE)
    lr: float = _setting(3e-3, "AdamW learning rate (warmup, then cosine decay)", _RECIPE)
    weight_decay: float = _setting(0.05, "AdamW weight decay (not on biases, norms, positions)", _RECIPE)
    warmup_frac: float = _setting(0.1, "fraction of the steps spent warming the learning rate up", _RECIPE)
    eval_every: int = _setting(100, "steps between validation points of the learning curves", _RECIPE)
    # -- data ---------------------------------------------------------------------------------------------
    videos_per_class: int = _setting(24, "training videos per class (validation gets a quarter)", _DATA)
    heldout_per_class: int = _setting(8, "test videos per class, rendered from another seed", _DATA)
    data_seed: int = _setting(0, "seed of the synthetic videos", _DATA)
    data_dir: str = _setting(str(DATA_DIR / "ablation"), "where each task's videos, shards and decoded clips are "
                                                          "cached", _DATA)
    # -- execution ---------------------------------------------------------------------------------------
    concurrent_trials: int = _setting(2, "trials run at once (one Ray Train worker each)", _EXEC)
    cpus_per_trial: float = _setting(1.0, "CPUs of a trial's Train worker (its torch threads)", _EXEC)
    attention_videos: int = _setting(3, "test videos whose attention maps CAST's runs show", _EXEC)
    storage_path: str = _setting(str(DATA_DIR / "ablation" / "ray_results"), "Ray Tune/Train run folders (a URI "
                                                                              "or a shared folder on a cluster)", _EXEC)
    experiment: str = _setting("cast-ablation", "MLflow experiment", _EXEC)
    run_name: str = _setting("", "parent run name", _EXEC, none="ablation-<time>")
    gate: bool = _setting(True, "exit 1 when CAST does not lead on the appearance-motion balance (--no-gate: "
                                "exit 0 after a complete run)", _EXEC)

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

    def check_local_cpus(self, num_cpus: int | None) -> None:
        """Refuse, before Ray starts, a local Ray smaller than one trial: a trial's Train worker holds
        ``cpus_per_trial`` CPUs (the trial itself none), and a worker that never fits is a grid that waits
        forever. Fewer CPUs than ``concurrent_trials`` x that only runs fewer trials at once."""
        problem = too_few_cpus(num_cpus, self.cpus_per_trial,
                               f"a trial's Train worker holds --cpus-per-trial {self.cpus_per_trial:g}")
        if problem:
            raise AblationConfigError(problem)

    def replace(self, **changes: Any) -> "AblationConfig":
        return dataclasses.replace(self, **changes)

    def to_params(self) -> dict[str, str]:
        return {k: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
                for k, v in dataclasses.asdict(self).items()}

    def recipe(self) -> dict[str, Any]:
        """The fields every trial trains with (one recipe for every variant)."""
        return {k: getattr(self, k) for k in ("steps", "batch_size", "lr", "weight_decay", "warmup_frac",
                                               "eval_every", "attention_videos")}

