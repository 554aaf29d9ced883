"""The per-worker training loop run by Ray Train's ``TorchTrainer`` on every rank.

Every rank: builds the model, reads its own part of the shards through the DALI loader, trains with
DDP (gloo on CPU, NCCL on GPU: Ray picks the backend from the device), evaluates its part of the
validation split, and calls ``ray.train.report`` at the same points as every other rank (it is a
barrier). Rank 0 alone writes checkpoints and logs to MLflow.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from cast_model import save_checkpoint
from cast_model.precision import autocast, describe, resolve_precision, store_frozen_weights
from cast_model.vocab import EVAL_VIEW_KEYS, as_heads, view_average

from pipelines.loader import LoaderConfig, eval_loader, train_loader

from ..evaluation import metrics as M
from .config import TrainConfig, steps_per_epoch, warmup_steps
from .recipe import VideoMixup, build_criterion, build_model, build_optimizer, build_scheduler, total_loss
from .state import MODEL_DIR, Progress, load_train_state, rng_state, save_train_state
from .mlflow_run import RunLogger

# val_top1 of a mid-epoch checkpoint: below every real accuracy, so Ray keeps it only while it is the
# latest. Finite on purpose: Ray's checkpoint snapshot (JSON) turns NaN into null and then fails to rank it.
NOT_VALIDATED = -1.0
# Progress lines go through logging: in a Ray Train worker the root logger writes them to the console
# (forwarded to the driver) and to Train's structured log, once each. A print would reach the driver
# twice: Ray Train's patched print tees to stdout whenever sys.stdout is not sys.__stdout__, and Ray
# replaces sys.stdout in every worker.
log = logging.getLogger("cast.train")


@dataclass
class Worker:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()


def loader_config(cfg: TrainConfig, worker: Worker, views: tuple[int, int]) -> LoaderConfig:
    mc = cfg.model_config()
    return LoaderConfig(num_frames=mc.num_frames, img_size=mc.img_size, sampling=cfg.sampling,
                        dense_stride=cfg.sampling_rate, hflip=cfg.hflip, rand_augment=cfg.rand_augment,
                        ra_n=cfg.rand_augment_n, ra_m=cfg.rand_augment_m, rrc_scale=(cfg.crop_scale_min, 1.0),
                        batch_size=cfg.batch_size,
                        shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed,
                        num_threads=cfg.loader_threads, device="gpu" if worker.device.type == "cuda" else "cpu",
                        eval_clips=views[0], eval_crops=views[1])


def labels_of(batch: dict[str, Any], heads: tuple[str, ...], device: torch.device) -> dict[str, torch.Tensor]:
    return {h: batch[h].to(device, non_blocking=True).long() for h in heads}


@torch.no_grad()
def validation_scores(model: torch.nn.Module, loader, cfg: TrainConfig, worker: Worker) -> tuple[dict, dict]:
    """Multi-view evaluation of this rank's part, gathered on every rank.

    Returns ({head: (N, C) mean softmax over views}, {head: (N,) labels}) over the whole split, each clip
    once (deduplicated by key in case a loader pads the last batch of a rank).
    """
    model.eval()
    amp = resolve_precision(cfg.precision, worker.device)
    keys: list[str] = []
    scores: dict[str, list[np.ndarray]] = {h: [] for h in cfg.heads}
    labels: dict[str, list[np.ndarray]] = {h: [] for h in cfg.heads}
    for batch in loader:
        video = batch["video"].to(worker.device, non_blocking=True)  # (B, V, 3, T, H, W)
        B, V = video.shape[:2]
        with autocast(worker.device, amp):
            out = as_heads(model(video.flatten(0, 1)))  # {head: (B*V, C)}
        for h in cfg.heads:
            prob = view_average(out[h], V)  # (B, C)
            scores[h].append(prob.cpu().numpy())
            labels[h].append(batch[h].cpu().numpy().astype(np.int64))
        keys.extend(batch["key"])
    model.train()
    local = (keys, {h: _cat(scores[h], 2) for h in cfg.heads}, {h: _cat(labels[h], 1) for h in cfg.heads})
    parts = worker.all_gather(local)
    all_keys = [k for p in parts for k in p[0]]
    _, first = np.unique(np.asarray(all_keys, dtype=object), return_index=True)
    first.sort()
    merged_scores = {h: np.concatenate([p[1][h] for p in parts])[first] for h in cfg.heads}
    merged_labels = {h: np.concatenate([p[2][h] for p in parts])[first] for h in cfg.heads}
    return merged_scores, merged_labels


def checkpoint_extra(cfg: TrainConfig, run_id: str, metrics: dict[str, float]) -> dict[str, Any]:
    """What inference needs to know beyond the weights: the dataset, label heads and evaluation views
    (the checkpoint is the contract between training and inference), plus the run that made it."""
    return {"run_id": run_id, "val_top1": metrics.get("val_top1"), "dataset": cfg.dataset,
            "heads": list(cfg.heads), **{k: getattr(cfg, k) for k in EVAL_VIEW_KEYS}}


def _cat(parts: list[np.ndarray], ndim: int) -> np.ndarray:
    if parts:
        return np.concatenate(parts)
    return np.zeros((0,) * ndim, dtype=np.float32 if ndim == 2 else np.int64)


def _maybe_fault(cfg: TrainConfig, worker: Worker, step: int) -> None:
    """Test-only: a real process death of rank 1 at ``fault_kill_step``, once per run."""
    if cfg.fault_kill_step is None or worker.rank != 1 or step != cfg.fault_kill_step:
        return
    marker = Path(cfg.storage_path) / cfg.run_name / "fault_injected"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(step))
    os._exit(1)


@dataclass
class WorkerRun:
    """One rank's training job: built by :func:`build_run`, advanced by :func:`train_epochs`."""

    cfg: TrainConfig
    worker: Worker
    run_id: str
    model: torch.nn.Module  # the bare model: checkpoints and validation
    ddp: torch.nn.Module  # the same model wrapped for data-parallel training
    train: Any  # this rank's training loader
    val: Any  # this rank's per-epoch (single-view) validation loader
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp: torch.dtype | None
    mixup: VideoMixup
    criterion: Any
    progress: Progress
    steps_in_epoch: int
    logger: RunLogger | None  # rank 0 only

    @property
    def micro_batches_per_epoch(self) -> int:
        return self.steps_in_epoch * self.cfg.update_freq

    def report(self, metrics: dict[str, float], final_model: bool = False) -> None:
        """Every rank calls this at the same point (it is a barrier); rank 0 attaches the checkpoint
        with the RNG states of every rank."""
        progress = self.progress
        metrics = {**metrics, "epoch": progress.epoch, "step": progress.step, "clips_seen": progress.clips_seen}
        rngs = self.worker.all_gather(rng_state())
        if not self.worker.is_main:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_train_state(tmp, self.model, self.optimizer, self.scheduler, self.scaler, progress, rngs)
            if final_model:
                save_checkpoint(Path(tmp) / MODEL_DIR, self.model, labels=self.cfg.labels,
                                extra=checkpoint_extra(self.cfg, self.run_id, metrics))
            name = f"{'final' if final_model else 'checkpoint'}_step{progress.step:08d}"
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    cfg = TrainConfig.from_dict(config["train"])
    os.environ["MLFLOW_TRACKING_URI"] = config["tracking_uri"]  # the driver's, absolute
    ctx = ray.train.get_context()
    worker = Worker(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())
    if worker.device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    run = build_run(cfg, worker, config["mlflow_run_id"])
    if run.logger is not None:
        log_run_start(run)
    try:
        if not run.progress.finished:
            train_epochs(run)
            final_validation(run)
        return {"step": run.progress.step, "epoch": run.progress.epoch}
    finally:
        if run.logger is not None:
            run.logger.close()


def build_run(cfg: TrainConfig, worker: Worker, run_id: str) -> WorkerRun:
    """This rank's loaders, model, optimizer and schedule, restored from Ray's checkpoint when resuming."""
    # -- data: each rank reads its own part of the shards --------------------------------------------------
    train = train_loader(cfg.shards, split=cfg.train_split, cfg=loader_config(cfg, worker, (1, 1)),
                         rank=worker.rank, world_size=worker.world)
    # Per-epoch validation: one centre view per clip; the final one uses the recipe's test views.
    val = eval_loader(cfg.val_shards, split=cfg.val_split, cfg=loader_config(cfg, worker, (1, 1)),
                      rank=worker.rank, world_size=worker.world)
    batches = len(train)
    steps_in_epoch = steps_per_epoch(batches, cfg.update_freq)
    if steps_in_epoch == 0:
        raise ValueError(f"an epoch of {batches} batches per rank is shorter than update_freq {cfg.update_freq}: "
                         f"lower batch_size or total_batch_size")
    total_steps = steps_in_epoch * cfg.epochs

    # -- model, optimizer, schedule ----------------------------------------------------------------------
    # The same seed on every rank and on every restart: randomly initialised frozen weights (runs without
    # expert weights) are never in a checkpoint, so a resumed run must rebuild them identically.
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(worker.device)
    torch.manual_seed(cfg.seed + 1 + worker.rank)  # then each rank its own stream (dropout, mixup)
    np.random.seed(cfg.seed + 1 + worker.rank)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, total_steps, warmup_steps(cfg, steps_in_epoch))
    amp = resolve_precision(cfg.precision, worker.device)
    # Frozen experts in the autocast dtype: half their memory, no per-step casts, the same numbers.
    # Train states hold only the trainable weights, so a resume rebuilds and converts them alike.
    store_frozen_weights(model, amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    progress = Progress()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            progress = load_train_state(folder, model, optimizer, scheduler, scaler, worker.rank)
    scheduler.step_update(progress.step)
    ddp = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": False})

    mixup = VideoMixup(cfg, {h: len(cfg.labels[h]) for h in cfg.heads})
    return WorkerRun(cfg, worker, run_id, model, ddp, train, val, optimizer, scheduler, scaler, amp, mixup,
                     build_criterion(cfg, mixup.active), progress, steps_in_epoch,
                     RunLogger(run_id) if worker.is_main else None)


def log_run_start(run: WorkerRun) -> None:
    """Rank 0: the run's params (config, precision path, sizes), config and label map as artifacts."""
    cfg, worker, logger = run.cfg, run.worker, run.logger
    path = describe(cfg.precision, worker.device, run.amp)
    log.info(f"[train] {path}")
    logger.log_params(cfg.params() | {"precision_path": path, "steps_per_epoch": str(run.steps_in_epoch),
                                      "total_steps": str(run.steps_in_epoch * cfg.epochs),
                                      "world_size": str(worker.world), "device": worker.device.type,
                                      "batches_per_epoch_per_rank": str(len(run.train))})
    logger.log_json("config/train_config.json", cfg.to_dict())
    logger.log_json("config/classes.json", cfg.labels)
    if run.progress.step:
        logger.client.set_tag(run.run_id, "cast.resumed_from_step", str(run.progress.step))


def final_validation(run: WorkerRun) -> None:
    """Multi-view validation on the recipe's test views, then the final checkpoint with the model."""
    cfg, worker = run.cfg, run.worker
    final_val = eval_loader(cfg.val_shards, split=cfg.val_split,
                            cfg=loader_config(cfg, worker, (cfg.test_clips, cfg.test_crops)),
                            rank=worker.rank, world_size=worker.world)
    scores, labels = validation_scores(run.model, final_val, cfg, worker)
    summary = M.classification_summary(scores, labels)
    final_metrics = {f"final_val_{k}": v for k, v in summary.items()}
    if run.logger is not None:
        run.logger.log_metrics(final_metrics, step=run.progress.step)
        log_eval_artifacts(run.logger, cfg, scores, labels, "final_validation")
    run.progress.finished = True
    run.report({**final_metrics, "val_top1": summary["top1"]}, final_model=True)


@dataclass
class _Window:
    """What a stretch of micro-batches did: for step metrics (since the last log) or an epoch's summary."""

    clips: int = 0
    loss: float = 0.0
    wait: float = 0.0  # seconds spent waiting for the loader
    micro: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, clips: int, loss: float) -> None:
        self.clips, self.loss, self.micro = self.clips + clips, self.loss + loss, self.micro + 1


def train_epochs(run: WorkerRun) -> None:
    """The remaining epochs, each followed by its single-view validation and a checkpoint ranked by it."""
    run.ddp.train()
    while run.progress.epoch < run.cfg.epochs:
        epoch = train_epoch(run)
        validate_epoch(run, epoch, time.perf_counter() - epoch.started)


def train_epoch(run: WorkerRun) -> _Window:
    """One epoch's micro-batches (a resumed epoch continues where its checkpoint stopped): forward and
    backward every one, an optimizer step at the end of each accumulation group. Returns the epoch's
    totals."""
    cfg, worker, progress, accum = run.cfg, run.worker, run.progress, run.cfg.update_freq
    run.train.set_epoch(progress.epoch)
    window = _Window()
    run.train.skip(progress.batch_in_epoch)
    batches = iter(run.train)
    epoch = _Window()
    while progress.batch_in_epoch < run.micro_batches_per_epoch:
        t_wait = time.perf_counter()
        batch = next(batches)
        window.wait += time.perf_counter() - t_wait
        video = batch["video"].to(worker.device, non_blocking=True)  # (B, 3, T, H, W)
        video, targets = run.mixup(video, labels_of(batch, cfg.heads, worker.device))
        last_micro = (progress.batch_in_epoch + 1) % accum == 0
        # Gradients are all-reduced only on the micro-batch that ends an accumulation group.
        with (nullcontext() if last_micro or worker.world == 1 else run.ddp.no_sync()):
            with autocast(worker.device, run.amp):
                logits = as_heads(run.ddp(video))
            loss = total_loss(run.criterion, logits, targets)
            run.scaler.scale(loss / accum).backward()
        progress.batch_in_epoch += 1
        progress.clips_seen += len(video) * worker.world
        loss_value = float(loss.detach())
        window.add(len(video), loss_value)
        epoch.add(len(video), loss_value)
        if not last_micro:
            continue
        grad_norm = optimizer_step(run)
        if progress.step % cfg.log_every == 0:
            log_step(run, window, grad_norm)
            window = _Window()
        epoch_done = progress.batch_in_epoch >= run.micro_batches_per_epoch
        if cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0 and not epoch_done:
            run.report({"val_top1": NOT_VALIDATED})
    batches.close()
    return epoch


def optimizer_step(run: WorkerRun) -> float:
    """The step that ends an accumulation group; returns the gradient norm before clipping (NaN: not
    clipped, not measured)."""
    if run.cfg.clip_grad is not None:
        run.scaler.unscale_(run.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.clip_grad))
    else:
        grad_norm = float("nan")
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.progress.step += 1
    run.scheduler.step_update(run.progress.step)
    _maybe_fault(run.cfg, run.worker, run.progress.step)
    return grad_norm


def log_step(run: WorkerRun, window: _Window, grad_norm: float) -> None:
    """Step metrics over the window since the last log (every rank: the sums are collective)."""
    elapsed = time.perf_counter() - window.started
    clips_all, loss_all = run.worker.sum([window.clips, window.loss / window.micro])
    if run.logger is None:
        return
    progress = run.progress
    step_metrics = {
        "train_loss": loss_all / run.worker.world,
        "lr": max(g["lr"] for g in run.optimizer.param_groups),
        "clips_per_s_worker": window.clips / elapsed,
        "clips_per_s_total": clips_all / elapsed,
        "data_wait_s": window.wait,
        "data_wait_frac": window.wait / elapsed,
        "epoch_float": progress.epoch + progress.batch_in_epoch / run.micro_batches_per_epoch,
    }
    if not math.isnan(grad_norm):
        step_metrics["grad_norm"] = grad_norm
    run.logger.log_metrics(step_metrics, step=progress.step)


def validate_epoch(run: WorkerRun, epoch: _Window, train_s: float) -> None:
    """End of an epoch: single-view validation, then a checkpoint ranked by it."""
    progress = run.progress
    progress.epoch += 1
    progress.batch_in_epoch = 0
    scores, labels = validation_scores(run.model, run.val, run.cfg, run.worker)
    summary = M.classification_summary(scores, labels)
    progress.best_val_top1 = max(progress.best_val_top1, summary["top1"])
    epoch_metrics = {f"val_{k}": v for k, v in summary.items()}
    if run.logger is not None:
        run.logger.log_metrics({**epoch_metrics, "epoch": progress.epoch}, step=progress.step)
        log.info(f"[train] epoch {progress.epoch}/{run.cfg.epochs} step {progress.step}: loss "
                 f"{epoch.loss / max(epoch.micro, 1):.3f}, val top-1 {summary['top1']:.3f}, "
                 f"{epoch.clips / train_s:.1f} clips/s on rank 0 ({train_s:.0f}s)")
    run.report(epoch_metrics)


def log_eval_artifacts(logger: RunLogger, cfg: TrainConfig, scores: dict[str, np.ndarray],
                       labels: dict[str, np.ndarray], folder: str) -> None:
    """Confusion-matrix PNG and per-class accuracy CSV per head."""
    files = {}
    for h in cfg.heads:
        names = [cfg.labels[h][str(i)] for i in range(len(cfg.labels[h]))]
        cm = M.confusion_matrix(scores[h].argmax(1), labels[h], len(names))
        files[f"confusion_{h}.png"] = (lambda p, cm=cm, names=names, h=h: M.plot_confusion_matrix(
            p, cm, names, title=f"{cfg.dataset} {h}: {int(cm.sum())} clips, top-1 {np.trace(cm) / max(cm.sum(), 1):.3f}"))
        files[f"per_class_{h}.csv"] = lambda p, cm=cm, names=names: M.write_per_class_csv(p, cm, names)
    logger.log_files(files, folder)
