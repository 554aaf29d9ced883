"""The driver of a training job, in two steps that every caller takes once, in this order:

* :func:`prepare` (before Ray): derive the run's names, validate the config (each shard folder's
  ``classes.json`` read once, the label maps kept in the config), check the shards' labels and the
  weights, reach the tracking store, take the run name's lease and reconcile the two stores;
* :func:`run` (on the connected Ray cluster): check the cluster's view of the paths and its resources,
  open the MLflow run, run ``TorchTrainer``, register the model.

    python workflows/train_ssv2.py --shards OUT/train --val-shards OUT/validation --preset tiny
    ray job submit --working-dir . -- python workflows/train_ssv2.py --shards ... --num-workers 8

The three ``train_<dataset>`` commands (:func:`main`) and the demo (``workflows.training.demo``) use the
same two steps. The driver owns the job's MLflow run: it opens it (a rerun under the same ``--run-name``
reopens it and Ray resumes from the run's latest checkpoint), hands its id to the workers, logs and
registers the final model, and closes the run FINISHED, or FAILED on any error.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pipelines.lease import LeaseHeld, hold

from ..cli.common import user_error
from ..cli.flags import Parsed
from ..cluster.ray_connect import connect_ray
from ..cluster.shared_storage import alive_nodes, cluster_path_problems
from ..tracking import lineage
from ..tracking import store as tracking
from . import mlflow_run
from .command import command_line, format_train_config, recipe_of, train_config
from .config import TrainConfig, TrainConfigError
from .preflight import check_batch_arithmetic, check_shard_labels, check_weights, reconcile_stores
from .state import MODEL_DIR, read_progress
from .validation import fit_cluster, validate


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    run_name: str
    metrics: dict[str, Any]  # the final report (final_val_*, step, epoch, ...)
    checkpoint_path: str | None  # the final Ray checkpoint folder
    model_version: str | None  # registered version (None with --no-register or an already finished run)
    champion: bool
    seconds: float


DERIVED = ("run_name", "experiment", "registered_model")  # what with_defaults fills in


def with_defaults(cfg: TrainConfig) -> TrainConfig:
    """Names a job needs and the user may leave out: run name, experiment, registered model."""
    return dataclasses.replace(
        cfg,
        run_name=cfg.run_name or f"{cfg.dataset}-{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}",
        experiment=cfg.experiment or f"cast-{cfg.dataset}",
        registered_model=cfg.registered_model or f"cast-{cfg.dataset}")


def wait_for_resources(cfg: TrainConfig, poll_s: float = 2.0, report_s: float = 15.0) -> dict[str, float]:
    """The cluster's resources once they cover the request, or when ``cfg.resource_timeout_s`` has passed
    (then :func:`resolve` refuses with the numbers). An autoscaler adds nodes meanwhile; a progress line
    says what is missing."""
    import ray

    cpus = cfg.cpus_per_worker * cfg.num_workers
    gpus = (cfg.gpus_per_worker or 0.0) * cfg.num_workers  # None (auto) takes GPUs only if present
    started = last = time.monotonic()
    while True:
        have = ray.cluster_resources()
        if have.get("CPU", 0.0) >= cpus and have.get("GPU", 0.0) >= gpus:
            return have
        waited = time.monotonic() - started
        if waited >= cfg.resource_timeout_s:
            return have
        if time.monotonic() - last >= report_s or waited == 0:
            print(f"[train] waiting for the cluster: {have.get('CPU', 0.0):g}/{cpus:g} CPUs, "
                  f"{have.get('GPU', 0.0):g}/{gpus:g} GPUs; {cfg.resource_timeout_s - waited:.0f}s left "
                  f"(--resource-timeout-s)", flush=True)
            last = time.monotonic()
        time.sleep(poll_s)


@dataclass(frozen=True)
class PreparedRun:
    """A training job past :func:`prepare`: ``cfg`` validated, with its names derived and the shards' label
    maps; the run name's lease is held while the ``prepare`` block lasts."""

    cfg: TrainConfig


@contextmanager
def prepare(cfg: TrainConfig, log: Callable[[str], None] | None = None) -> Iterator[PreparedRun]:
    """Every step before Ray, each once (see the module doc). Raises :class:`TrainConfigError` (a wrong
    config, a store disagreement under ``--resume``), ``tracking.TrackingUnavailable`` or ``LeaseHeld``
    before anything starts; the lease is released when the block ends."""
    log = log or _log
    cfg = validate(with_defaults(cfg))  # the label maps: read here, once
    samples = check_shard_labels(cfg)
    check_batch_arithmetic(cfg, samples[cfg.train_split])
    check_weights(cfg)
    tracking.preflight()  # a stopped server or a wrong password: one line now, not minutes of retries
    # One live job per run name: a second one would log every step twice and fight over the run.
    with hold(run_lease_uri(cfg), f"training run {cfg.run_name!r}", log=log):
        reconcile_stores(cfg, log)
        yield PreparedRun(cfg)


def train(cfg: TrainConfig) -> TrainResult:
    """:func:`prepare` then :func:`run`, for a caller already connected to Ray (tests, notebooks)."""
    with prepare(cfg) as job:
        return run(job)


def _trainer(cfg: TrainConfig, run_id: str) -> "ray.train.torch.TorchTrainer":
    """Ray Train's trainer for ``cfg``: the workers, their resources, failures and checkpoints."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .loop import train_loop_per_worker

    resources_per_worker = {"CPU": cfg.cpus_per_worker}
    if cfg.gpus_per_worker:
        resources_per_worker["GPU"] = cfg.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        # The tracking URI resolved here, absolute: workers run elsewhere (another working dir/node).
        train_loop_config={"train": cfg.to_dict(), "mlflow_run_id": run_id, "tracking_uri": tracking.tracking_uri()},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker=resources_per_worker),
        run_config=RunConfig(
            name=cfg.run_name, storage_path=cfg.storage_path,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints, checkpoint_score_attribute="val_top1",
                                               checkpoint_score_order="max")))


def run(job: PreparedRun) -> TrainResult:
    """Run a prepared job on the connected Ray cluster (see the module doc)."""
    cfg = job.cfg
    problems = cluster_path_problems({"--storage-path": cfg.storage_path, "--shards": cfg.shards,
                                      "--val-shards": cfg.val_shards}, alive_nodes(),
                                     local_only=("--shards", "--val-shards"), tracking_uri=tracking.tracking_uri())
    if problems:
        raise TrainConfigError("; ".join(problems))
    resources = wait_for_resources(cfg)
    cfg = fit_cluster(cfg, resources.get("GPU", 0.0), resources.get("CPU", 0.0))
    weights = lineage.weight_tags({"spatial": cfg.clip_weights, "temporal": cfg.videomae_weights,
                                   "init": cfg.init_checkpoint})
    run_id, previous = mlflow_run.open_run(cfg.experiment, cfg.run_name,
                                        {tracking.DATASET_TAG: cfg.dataset, "cast.preset": cfg.preset, **weights})
    lineage.record(run_id, f"workflows/train_{cfg.dataset}.py",
                   {"training": lineage.manifest_dataset(cfg.shards, cfg.train_split),
                    "validation": lineage.manifest_dataset(cfg.val_shards, cfg.val_split)}, log=_log)
    started = time.perf_counter()
    if previous == "FINISHED":
        print(f"[train] run {cfg.run_name!r} already finished (MLflow run {run_id}); nothing to do", flush=True)
        return TrainResult(run_id, cfg.run_name, {}, None, None, False, 0.0)
    print(f"[train] {cfg.dataset}/{cfg.preset}: {cfg.num_workers} workers x {cfg.gpus_per_worker:g} GPU, "
          f"batch {cfg.batch_size} x accumulate {cfg.update_freq} x workers = {cfg.total_batch_size}, "
          f"lr {cfg.lr:.3g}, {cfg.epochs} epochs; MLflow run {run_id}"
          f"{' (resumed)' if previous else ''}", flush=True)
    ok = False
    try:
        result = _trainer(cfg, run_id).fit()
        if result.error is not None:
            raise result.error
        if result.checkpoint is None:
            raise RuntimeError("training ended without a checkpoint")
        with result.checkpoint.as_directory() as folder:
            progress = read_progress(folder)
            if not progress.finished:
                raise RuntimeError(f"the last checkpoint ({folder}) is not the final one")
            metrics = dict(result.metrics or {})
            # The run is FINISHED before a model is registered from it, and registration checks it is:
            # a model never comes from a run some other process marked FAILED meanwhile.
            mlflow_run.close_run(run_id, True)
            ok = True
            version, champion = None, False
            if cfg.register:
                version, champion = _register(cfg, run_id, Path(folder) / MODEL_DIR, metrics)
            return TrainResult(run_id, cfg.run_name, metrics, result.checkpoint.path, version, champion,
                               time.perf_counter() - started)
    finally:
        if not ok:
            mlflow_run.close_run(run_id, False)


def _register(cfg: TrainConfig, run_id: str, model_dir: Path, metrics: dict[str, Any]) -> tuple[str, bool]:
    from ..tracking import registry

    top1 = float(metrics["val_top1"])

    status = mlflow_run.run_status(run_id)
    if status != "FINISHED":
        raise RuntimeError(f"MLflow run {run_id} is {status}, not FINISHED: no model is registered from it")
    try:
        reg = registry.register(run_id, model_dir, cfg.registered_model, top1,
                                tags={"dataset": cfg.dataset, "preset": cfg.preset, "run_name": cfg.run_name},
                                metrics={k: v for k, v in metrics.items() if k.startswith("final_val_")},
                                step=int(metrics.get("step", 0)))
    except BaseException:
        # Not FINISHED without its model: a rerun resumes the finished snapshot and registers again.
        mlflow_run.close_run(run_id, False)
        raise
    print(f"[train] registered {reg.name} version {reg.version} (val top-1 {top1:.4f}): alias "
          f"'candidate'{', champion' if reg.champion else ''}"
          f"{'' if reg.champion or reg.previous_champion is None else f' (champion stays {reg.previous_champion})'}",
          flush=True)
    return reg.version, reg.champion


def main(dataset: str, argv: Sequence[str] | None = None) -> int:
    """The ``cast-train-<dataset>`` command: flags over the recipe, then :func:`prepare`, connect to Ray,
    :func:`run` (``--print-config``: the resolved config, with the names :func:`with_defaults` derives)."""
    return command_line(dataset).run(argv, train_command, layers=recipe_of(dataset), build=train_config,
                                     show=show_config)


def show_config(parsed: Parsed) -> str:
    """What ``--print-config`` prints: each setting, its source, and ``derived`` for the derived names."""
    config = train_config(parsed)
    cfg = with_defaults(config)
    derived = {k: "derived" for k in DERIVED if getattr(config, k) != getattr(cfg, k)}
    return format_train_config(cfg, parsed.sources | derived)


def train_command(parsed: Parsed) -> int:
    """The job of ``parsed.config``: prepare, connect to Ray, run; a config the cluster cannot host (GPUs,
    CPUs), a busy run name or an unreachable store is one line and exit 2."""
    try:
        with prepare(parsed.config) as job:
            try:
                connect_ray(dashboard=True)
            except ValueError as err:  # RAY_ADDRESS names something a driver cannot join
                raise TrainConfigError(str(err)) from err
            result = run(job)
    except (TrainConfigError, tracking.TrackingUnavailable, LeaseHeld) as err:
        return user_error(parsed.prog, err)
    final = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("final_val_")}
    print(f"[train] done in {result.seconds:.0f}s: {final}", flush=True)
    return 0


def run_lease_uri(cfg: TrainConfig) -> str:
    """Where the lease of a run name lives: beside Ray's run folders, not inside (that folder may be
    moved aside by :func:`preflight.reconcile_stores`)."""
    if "://" in cfg.storage_path:
        # Not on the object store: the lease's heartbeat writes beside Ray's checkpoint uploads coincided
        # with corrupted checkpoint reads on the moto S3 server in the cluster tests (under study). The
        # driver's machine holds the lease instead: one live job per run name per submitting host.
        from ..tracking.store import DATA_DIR

        return str(DATA_DIR / "run-leases" / cfg.run_name)
    return f"{cfg.storage_path.rstrip('/')}/.run-leases/{cfg.run_name}"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
