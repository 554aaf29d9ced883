"""Checks of a training job that need files and the tracking store but no cluster: run before Ray starts,
each a one-line :class:`TrainConfigError` (exit 2) naming the thing.

  * every sample label in the shards' manifests lies inside ``classes.json`` (a label of -1, from a test
    split, or past the class count would crash a worker after Ray started);
  * expert / init weights are not TorchScript (which runs code when loaded), and an ``--init-checkpoint``
    fits the model config and is complete (checked on the meta device, without loading weights);
  * the two stores agree: Ray Train's checkpoints (``storage_path/<run name>``) and the MLflow run are
    resumed together or not at all (:func:`reconcile_stores`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .config import TrainConfig, TrainConfigError

_CHECKPOINT_PREFIXES = ("checkpoint_", "final_")


def check_shard_labels(cfg: TrainConfig) -> dict[str, int]:
    """Labels of every sample of the train and validation splits, from the manifests (cheap: no tar is
    opened), against the class list (``cfg.labels``: the label maps validation read, the same in both
    folders). Returns the number of samples of each split (``train_split``,
    ``val_split``), read from the same manifests."""
    import pyarrow.compute as pc

    from pipelines.manifest import MANIFEST_FILE, read_manifest
    from pipelines.schema import label_column

    counts: dict[str, int] = {}
    for folder, split in ((cfg.shards, cfg.train_split), (cfg.val_shards, cfg.val_split)):
        if not (Path(folder) / MANIFEST_FILE).is_file():
            raise TrainConfigError(f"{folder}: {MANIFEST_FILE} is missing: cannot check the shards' labels "
                                   "(rerun preprocessing into this folder to rebuild it)")
        table = read_manifest(str(folder), split)
        for head, names in cfg.labels.items():
            column = label_column(head)
            if column not in table.column_names:
                raise TrainConfigError(f"{folder}/{MANIFEST_FILE}: no {column!r} column for head {head!r}")
            values = table[column]
            bad = pc.or_(pc.less(values, 0), pc.greater_equal(values, len(names)))
            n_bad = pc.sum(pc.cast(bad, "int64")).as_py() or 0
            if n_bad:
                first = table.filter(bad).slice(0, 1).to_pylist()[0]
                raise TrainConfigError(
                    f"{folder}: {n_bad} {split} sample(s) have a {column} value outside the {len(names)} classes "
                    f"of classes.json, e.g. {first['source_id']!r} with {first[column]} (in {first['shard']})")
        counts[split] = table.num_rows
    return counts


def check_batch_arithmetic(cfg: TrainConfig, train_samples: int) -> None:
    """An epoch must hold at least one optimizer step on every rank: ``train_samples`` split over the
    workers, in batches of ``batch_size``, then ``update_freq`` batches per step (the loader's and the
    loop's arithmetic, ``pipelines.loader`` and :func:`steps_per_epoch`). Otherwise every worker would
    fail after Ray started, and be retried."""
    from .config import steps_per_epoch

    batches = (train_samples // cfg.num_workers) // cfg.batch_size
    if steps_per_epoch(batches, cfg.update_freq) == 0:
        raise TrainConfigError(
            f"{cfg.shards}: {train_samples} {cfg.train_split} samples over {cfg.num_workers} worker(s) in batches "
            f"of {cfg.batch_size} make {batches} batch(es) per rank per epoch, fewer than the {cfg.update_freq} "
            f"accumulated per optimizer step (total_batch_size {cfg.total_batch_size}): lower --total-batch-size "
            f"or --batch-size, use fewer --num-workers, or give more samples")


def check_weights(cfg: TrainConfig) -> None:
    from cast_model.convert import _is_torchscript

    for name in ("clip_weights", "videomae_weights", "init_checkpoint"):
        path = getattr(cfg, name)
        if path and _is_torchscript(Path(path)):
            raise TrainConfigError(
                f"{name}: {path} is a TorchScript archive, which runs code when loaded; if you trust it, "
                "convert it once in Python (cast_model.convert.read_state_dict(path, allow_torchscript=True), "
                "then torch.save the state dict) and pass that file")
    if cfg.init_checkpoint:
        check_init_checkpoint(cfg)


def check_init_checkpoint(cfg: TrainConfig) -> None:
    """The release checkpoint fits the model config (names and shapes on the meta device) and is
    complete, as batch inference checks its model: a mismatch would otherwise fail inside every worker
    after Ray started."""
    from cast_model.convert import ConversionError, verify_official_cast

    try:  # the class counts: the shards' label maps, read by validation
        verify_official_cast(cfg.init_checkpoint, cfg.model_config())
    except (ConversionError, OSError) as err:
        text = " ".join(str(err).split())  # one line, whatever the library's message held
        raise TrainConfigError(f"init_checkpoint: {text}") from err


def ray_snapshot(cfg: TrainConfig) -> str | None:
    """Ray Train's folder of this run (a local path or a URI, as ``storage_path``) when it holds
    checkpoints: what a resume would start from."""
    import pyarrow.fs as pafs

    from pipelines.shards import resolve_out

    fs, base = resolve_out(cfg.storage_path)
    entries = fs.get_file_info(pafs.FileSelector(f"{base}/{cfg.run_name}", allow_not_found=True))
    if any(e.type == pafs.FileType.Directory and e.base_name.startswith(_CHECKPOINT_PREFIXES) for e in entries):
        return f"{cfg.storage_path.rstrip('/')}/{cfg.run_name}"
    return None


def reconcile_stores(cfg: TrainConfig, log: Callable[[str], None]) -> None:
    """Resume only what both stores hold. When one lacks the run, say so and start afresh: checkpoints
    without an MLflow run are moved aside (``<run name>.orphaned-<time>``), an MLflow run without
    checkpoints is superseded (FAILED, tagged, no longer resumed). With ``cfg.resume`` a disagreement is
    an error instead (exit 2), and so is a run that neither store holds."""
    from . import mlflow_run

    snapshot = ray_snapshot(cfg)
    run = mlflow_run.find_run(cfg.experiment, cfg.run_name)
    if run is not None and run.data.tags.get(mlflow_run.SUPERSEDED_TAG) is not None:
        run = None
    if run is not None and run.info.status == "FINISHED":
        return  # nothing to resume: launch reports it and stops
    if (snapshot is None) == (run is None):
        if cfg.resume and snapshot is None:
            raise TrainConfigError(f"--resume: run {cfg.run_name!r} is in neither the checkpoint store "
                                   f"({cfg.storage_path}) nor the tracking store (experiment {cfg.experiment!r})")
        return
    if snapshot is not None:
        problem = (f"the checkpoint store holds run {cfg.run_name!r} ({snapshot}) but the tracking store "
                   f"(experiment {cfg.experiment!r}) does not")
    else:
        problem = (f"the tracking store holds run {cfg.run_name!r} (MLflow run {run.info.run_id}, "
                   f"{run.info.status}) but the checkpoint store ({cfg.storage_path}) has no checkpoint of it")
    if cfg.resume:
        raise TrainConfigError(f"--resume: {problem}")
    if snapshot is not None:
        if "://" in snapshot:  # object stores cannot rename a folder: the user decides what to keep
            raise TrainConfigError(f"{problem}; remove {snapshot} (or copy it aside) to start afresh, or "
                                   f"choose another --run-name")
        aside = Path(snapshot).with_name(f"{Path(snapshot).name}.orphaned-{time.strftime('%Y%m%d-%H%M%S')}")
        Path(snapshot).rename(aside)
        log(f"[train] {problem}: starting afresh; the old checkpoints are kept in {aside}")
    else:
        mlflow_run.supersede(run.info.run_id, f"no checkpoint of it in {cfg.storage_path}; restarted afresh")
        log(f"[train] {problem}: starting afresh in a new MLflow run (the old one is marked superseded)")
