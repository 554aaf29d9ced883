"""Every check of a training config that needs no cluster, run once before Ray starts: fields, sizes,
paths, shard folders and their label maps (each ``classes.json`` read once), then the fit to the
cluster's resources once Ray is there (:func:`fit_cluster`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cast_model import PRESETS
from cast_model.precision import PRECISIONS
from cast_model.vocab import DATASETS, HEADS, SAMPLINGS
from pipelines import manifest
from pipelines.manifest import CLASSES_FILE, LabelMapError

from ..cluster.shared_storage import is_uri
from .config import TrainConfig, TrainConfigError


def shard_files(folder: str | Path, split: str) -> list[Path]:
    return sorted(Path(folder).glob(f"{split}-*.tar"))


def read_label_map(folder: str | Path) -> dict[str, dict[str, str]]:
    """The shards' ``classes.json`` (:func:`pipelines.manifest.read_label_map`), its problems as
    :class:`TrainConfigError`."""
    try:
        return manifest.read_label_map(folder)
    except LabelMapError as err:
        raise TrainConfigError(str(err)) from err


def validate(cfg: TrainConfig) -> TrainConfig:
    """Every check that needs no cluster: fields, sizes, paths, shards, label maps. Problems are reported
    together, a stage at a time (later stages read what earlier ones checked). Returns ``cfg`` with its
    label maps filled from the shards: each folder's ``classes.json`` is read here, once."""
    for stage in ((_field_problems,), (_size_and_path_problems, _shard_problems)):
        problems = [problem for check in stage for problem in check(cfg)]
        if problems:
            raise TrainConfigError("invalid training config: " + "; ".join(problems))
    maps = {folder: read_label_map(folder) for folder in dict.fromkeys((cfg.shards, cfg.val_shards))}
    return dataclasses.replace(cfg, labels=_checked_label_maps(cfg, maps[cfg.shards], maps[cfg.val_shards]))


def _field_problems(cfg: TrainConfig) -> list[str]:
    """Each field on its own: known names, ranges, absolute paths."""
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    need(cfg.dataset in DATASETS, f"dataset must be one of {DATASETS}, got {cfg.dataset!r}")
    need(cfg.head in HEADS, f"head must be one of {sorted(HEADS)}, got {cfg.head!r}")
    need(cfg.preset in PRESETS, f"unknown preset {cfg.preset!r}; presets: {sorted(PRESETS)}")
    need(cfg.sampling in SAMPLINGS, f"sampling must be one of {SAMPLINGS}, got {cfg.sampling!r}")
    need(cfg.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    for name in ("epochs", "batch_size", "total_batch_size", "num_workers", "test_clips", "test_crops",
                 "loader_threads", "sampling_rate", "keep_checkpoints", "log_every", "shuffle_buffer",
                 "rand_augment_n"):
        need(isinstance(getattr(cfg, name), int) and getattr(cfg, name) > 0,
             f"{name} must be a positive integer, got {getattr(cfg, name)!r}")
    for name in ("checkpoint_every", "max_failures"):
        need(getattr(cfg, name) >= 0, f"{name} must be >= 0, got {getattr(cfg, name)!r}")
    for name in ("base_lr", "cpus_per_worker"):
        need(getattr(cfg, name) > 0, f"{name} must be > 0, got {getattr(cfg, name)!r}")
    for name in ("min_lr", "warmup_lr", "warmup_epochs", "weight_decay", "mixup", "cutmix", "opt_eps"):
        need(getattr(cfg, name) >= 0, f"{name} must be >= 0, got {getattr(cfg, name)!r}")
    for name in ("label_smoothing", "mixup_prob", "mixup_switch_prob"):
        need(0.0 <= getattr(cfg, name) <= 1.0, f"{name} must lie in [0, 1], got {getattr(cfg, name)!r}")
    need(0.0 < cfg.crop_scale_min <= 1.0, f"crop_scale_min must lie in (0, 1], got {cfg.crop_scale_min!r}")
    need(0 <= cfg.rand_augment_m <= 10, f"rand_augment_m must lie in [0, 10], got {cfg.rand_augment_m!r}")
    need(0.0 < cfg.layer_decay <= 1.0, f"layer_decay must lie in (0, 1], got {cfg.layer_decay!r}")
    need(0.0 <= cfg.drop_path < 1.0, f"drop_path must lie in [0, 1), got {cfg.drop_path!r}")
    need(len(cfg.betas) == 2 and all(0.0 <= b < 1.0 for b in cfg.betas), "betas must be two values in [0, 1)")
    need(cfg.clip_grad is None or cfg.clip_grad > 0, f"clip_grad must be > 0 or None, got {cfg.clip_grad!r}")
    need(cfg.gpus_per_worker is None or cfg.gpus_per_worker >= 0,
         f"gpus_per_worker must be >= 0, got {cfg.gpus_per_worker!r}")
    need(bool(cfg.run_name) and "/" not in cfg.run_name, f"run_name must be a non-empty name without '/', "
         f"got {cfg.run_name!r}")
    need(not ("'" in cfg.run_name and '"' in cfg.run_name),
         f"run_name must not hold both ' and \" (MLflow filters cannot match it), got {cfg.run_name!r}")
    need(is_uri(cfg.storage_path) or Path(cfg.storage_path).is_absolute(),
         f"storage_path must be an absolute path or a URI such as s3://bucket/prefix (Ray workers change "
         f"their working directory), got {cfg.storage_path!r}")
    need(cfg.resource_timeout_s >= 0, f"resource_timeout_s must be >= 0, got {cfg.resource_timeout_s!r}")
    for name in ("shards", "val_shards"):
        need(not is_uri(getattr(cfg, name)), f"{name} {getattr(cfg, name)}: the DALI loaders read local files, "
             f"not URIs; copy the shards to a folder every node mounts and pass that folder")
    return problems


def _size_and_path_problems(cfg: TrainConfig) -> list[str]:
    """Fields together: batch arithmetic, the weights to start from."""
    problems: list[str] = []
    # Batch arithmetic: the total batch must split evenly into workers x micro-batches.
    per_step = cfg.batch_size * cfg.num_workers
    if cfg.total_batch_size % per_step:
        problems.append(
            f"total_batch_size {cfg.total_batch_size} is not divisible by batch_size {cfg.batch_size} x "
            f"num_workers {cfg.num_workers} = {per_step} (it sets the gradient accumulation steps)")
    if cfg.mixup_prob > 0 and (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
        problems.append(f"batch_size {cfg.batch_size} must be even while mixup/cutmix is on (it mixes "
                        f"each clip with its mirror in the batch)")

    for name in ("clip_weights", "videomae_weights", "init_checkpoint"):
        path = getattr(cfg, name)
        if path is not None and not Path(path).is_file():
            problems.append(f"{name}: {path} does not exist")
    if cfg.init_checkpoint and (cfg.clip_weights or cfg.videomae_weights):
        problems.append("init_checkpoint already holds the experts: drop clip_weights/videomae_weights")
    return problems


def _shard_problems(cfg: TrainConfig) -> list[str]:
    """The shard folders: tars of the split, their DALI indices, classes.json."""
    problems: list[str] = []
    for name, split in (("shards", cfg.train_split), ("val_shards", cfg.val_split)):
        folder = Path(getattr(cfg, name))
        if not folder.is_dir():
            problems.append(f"{name}: {folder} is not a folder")
            continue
        tars = shard_files(folder, split)
        if not tars:
            problems.append(f"{name}: no '{split}-*.tar' shards in {folder}")
        missing_idx = [t.name for t in tars if not t.with_suffix(".idx").is_file()]
        if missing_idx:
            problems.append(f"{name}: shards without a DALI .idx file: {missing_idx[:5]}")
        if not (folder / CLASSES_FILE).is_file():
            problems.append(f"{name}: {CLASSES_FILE} is missing in {folder}")
    return problems


def _checked_label_maps(cfg: TrainConfig, train_labels: dict, val_labels: dict) -> dict[str, dict[str, str]]:
    """The shards' label maps against each other, the recipe's heads and the config; the model buildable."""
    if set(train_labels) != set(cfg.heads):
        raise TrainConfigError(f"{cfg.shards}/classes.json has heads {sorted(train_labels)}; the {cfg.dataset} "
                               f"recipe trains heads {list(cfg.heads)}")
    if train_labels != val_labels:
        raise TrainConfigError(f"the label maps of {cfg.shards} and {cfg.val_shards} differ")
    for head, names in train_labels.items():
        ids = sorted(int(k) for k in names)
        if ids != list(range(len(ids))) or len(ids) < 2:
            raise TrainConfigError(f"classes.json head '{head}' must name classes 0..C-1 (C >= 2)")
    if cfg.labels and cfg.labels != train_labels:
        raise TrainConfigError("labels in the config differ from the shards' classes.json")
    # The model must be buildable with these sizes (catches e.g. a preset override that breaks it).
    dataclasses.replace(cfg, labels=train_labels).model_config()
    return train_labels


def fit_cluster(cfg: TrainConfig, cluster_gpus: float, cluster_cpus: float) -> TrainConfig:
    """The GPU count filled in (``None``: 1 per worker when the cluster has them, else 0), and the request
    checked against what the cluster has. ``cfg`` has passed :func:`validate`."""
    gpus = cfg.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if cluster_gpus >= cfg.num_workers else 0.0
    if gpus * cfg.num_workers > cluster_gpus:
        raise TrainConfigError(f"{cfg.num_workers} workers x {gpus:g} GPUs requested, the Ray cluster has "
                               f"{cluster_gpus:g} GPUs")
    if cfg.cpus_per_worker * cfg.num_workers > cluster_cpus:
        raise TrainConfigError(f"{cfg.num_workers} workers x {cfg.cpus_per_worker:g} CPUs requested, the Ray "
                               f"cluster has {cluster_cpus:g} CPUs")
    return dataclasses.replace(cfg, gpus_per_worker=gpus)
