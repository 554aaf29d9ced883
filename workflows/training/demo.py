"""The demo (``cast-demo``, ``make demo``): the whole path on a fresh machine, CPU only, in minutes.

synthetic SSV2-layout videos -> shards (train + validation) -> the project's pretrained tiny experts
(made once, cached under data/experts) -> CAST at the micro geometry fine-tuned from them, experts
frozen, on 2 Ray workers, through the training commands' two steps (:func:`launch.prepare`,
:func:`launch.run`) -> validation top-1 against the demo's pass mark -> registered as ``cast-ssv2``
(aliases candidate / champion) -> how to open the MLflow UI. Idempotent: data already made is reused; an
interrupted training resumes from its checkpoint; a finished demo is reported, not retrained
(``--fresh`` trains a new run and registers a new version, which becomes champion only if it beats the
current one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cast_model.precision import PRECISIONS
from pipelines.synthetic_tasks import objects_id

from ..cli.flags import flag
from ..cluster.ray_connect import connect_ray
from ..experts import ExpertFiles, ensure_experts
from ..tracking.store import DATA_DIR, tracking_uri, ui_command

DEMO_DIR = DATA_DIR / "demo"
# 6 objects x 4 directions of motion (chance 1/24); 8 training videos per class, validation a quarter.
NUM_CLASSES = 24
VIDEOS_PER_CLASS = 8
# The demo fails below this validation top-1. Telling the objects apart alone gives at most 1/4 (one
# direction in four, see pipelines.synthetic_tasks.oracles): passing needs the direction of motion learnt.
PASS_MARK = 0.80
APPEARANCE_ONLY_TOP1 = 0.25
PRESET = "micro"
# The videos: 64 px high (width 4/3 of it), 24 frames at 12 fps; the shards keep a short side of 64, from
# which the micro geometry's loader crops and resizes its 32 px views.
VIDEO_SIZE, VIDEO_FRAMES, VIDEO_FPS = 64, 24, 12.0
SHORT_SIDE = 64


def log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_videos(root: Path, shards: Path) -> dict:
    """The demo's videos in ``root``, written unless ``root`` already holds them as this code paints them. A
    folder of other objects or settings (``synthetic.json`` says which) is stale, and so are the shards
    made from it: both are removed and remade."""
    from pipelines.synthetic import SynthConfig, ensure_dataset

    cfg = SynthConfig(dataset="ssv2", num_classes=NUM_CLASSES, videos_per_class=VIDEOS_PER_CLASS, size=VIDEO_SIZE,
                      frames=VIDEO_FRAMES, fps=VIDEO_FPS)
    return ensure_dataset(cfg, root, derived=(shards,), log=log)


def make_shards(data: dict, out: Path, short_side: int = SHORT_SIDE, log: Callable[[str], None] = log) -> None:
    """Train and validation shards of ``data`` (``write_dataset``'s folders) in ``out``, on the Ray the
    caller connected."""
    from pipelines.preprocess_job import PreprocessConfig, run_preprocess

    for split in ("train", "validation"):
        # Resumable: committed shards are kept, only what is missing is written.
        result = run_preprocess(PreprocessConfig(dataset="ssv2", videos=data["videos"], annotations=data["annotations"],
                                                 split=split, out=str(out), short_side=short_side,
                                                 max_samples_per_shard=16, progress_every=5.0))
        log(f"shards {split}: {result.written} written, {result.already_done} already there, "
            f"{result.rejected} rejected")


def finetune_argv(shards: Path, experts: ExpertFiles, preset: str = PRESET) -> list[str]:
    """The training flags of the demo's fine-tuning: its shards for training and validation, the recipe at
    ``preset`` (the micro one freezes the experts), initialised from the pretrained experts."""
    return ["--shards", str(shards), "--val-shards", str(shards), "--preset", preset,
            "--clip-weights", str(experts.spatial), "--videomae-weights", str(experts.temporal)]


@dataclass(frozen=True)
class DemoConfig:
    """What the demo lets a user choose; everything else is fixed above."""

    fresh: bool = field(default=False, metadata=flag("train a new run even if the demo run finished"))
    epochs: int | None = field(default=None, metadata=flag("training epochs", none=f"the {PRESET} preset's"))
    precision: str = field(default="auto", metadata=flag(
        "training arithmetic (auto: bf16 autocast where bf16 matmuls measure faster, else fp32)", choices=PRECISIONS))


def run_demo(cfg: DemoConfig) -> int:
    """The whole demo; its exit code (1: validation top-1 below the pass mark)."""
    started = time.perf_counter()
    import ray

    from . import launch
    from .command import config_from_args

    shards = DEMO_DIR / "shards"
    # The objects' digest in the name: a finished demo on other objects is not this one's result
    run_name = f"demo-ssv2-{PRESET}-{objects_id()}" + (time.strftime("-%Y%m%d-%H%M%S") if cfg.fresh else "")
    data = make_videos(DEMO_DIR / "videos", shards)
    t0 = time.perf_counter()
    experts = ensure_experts(preset=PRESET, log=log)
    log(f"experts ready in {time.perf_counter() - t0:.0f}s")
    connect_ray(2, dashboard=True)
    try:
        t0 = time.perf_counter()
        make_shards(data, shards)
        log(f"shards ready in {time.perf_counter() - t0:.0f}s")
        argv_train = finetune_argv(shards, experts) + ["--num-workers", "2", "--run-name", run_name,
                                                       "--precision", cfg.precision]
        if cfg.epochs is not None:
            argv_train += ["--epochs", str(cfg.epochs)]
        # The training commands' two steps: prepare (validate, label maps, lease, stores) and run.
        with launch.prepare(config_from_args("ssv2", argv_train)) as job:
            train_cfg = job.cfg
            log(f"fine-tuning CAST ({PRESET}) from the pretrained experts, frozen, on 2 Ray workers (run {run_name!r}; "
                f"progress lines come from rank 0)")
            result = launch.run(job)
    finally:
        ray.shutdown()
    return report(result, train_cfg, time.perf_counter() - started)


def report(result, cfg, seconds: float) -> int:
    from mlflow.exceptions import MlflowException

    from ..tracking import store as tracking
    from ..tracking.registry import CANDIDATE, CHAMPION

    client = tracking.client()
    m = client.get_run(result.run_id).data.metrics
    chance = 1.0 / len(cfg.labels["label"])  # the label maps the preparation read
    top1 = m.get("final_val_top1", float("nan"))
    speed = _mean_metric(client, result.run_id, "clips_per_s_total")
    log(f"validation top-1 {top1:.3f} vs chance {chance:.3f} ({cfg.test_clips} clips x {cfg.test_crops} crops per "
        f"video); training {speed:.1f} clips/s over 2 workers; demo took {seconds:.0f}s")
    try:
        champion = client.get_model_version_by_alias(cfg.registered_model, CHAMPION)
        candidate = client.get_model_version_by_alias(cfg.registered_model, CANDIDATE)
        uri = f"models:/{cfg.registered_model}@{CHAMPION}"
        log(f"registry: {cfg.registered_model} candidate = version {candidate.version}, champion = version "
            f"{champion.version}; predict with\n    cast-predict VIDEO --model {uri}\n"
            f"  or load it in Python (MLflow's own API needs the store named): mlflow.set_tracking_uri("
            f"'{tracking_uri()}'); mlflow.pyfunc.load_model('{uri}')")
    except MlflowException as err:  # reporting only: the training itself succeeded
        log(f"registry lookup failed: {err}")
    log(f"MLflow: {tracking_uri()}; open the UI with\n    {ui_command()}")
    log(f"appearance alone reaches at most {APPEARANCE_ONLY_TOP1:.2f} on this task: above it, the direction of "
        f"motion counts")
    if not top1 >= PASS_MARK:  # NaN (no validation) fails too
        log(f"validation top-1 {top1:.3f} is below the demo's pass mark {PASS_MARK:.2f}")
        return 1
    return 0


def _mean_metric(client, run_id: str, key: str) -> float:
    values = [m.value for m in client.get_metric_history(run_id, key)]
    # the first steps include DALI pipeline and DDP start-up: report the steady state
    steady = values[len(values) // 5:] or values
    return sum(steady) / len(steady) if steady else float("nan")
