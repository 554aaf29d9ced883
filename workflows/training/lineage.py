"""Lineage of a training run: which weight files it started from (sha256 and, for the project's own
pretrained experts, the MLflow run that made each), logged as tags of the run."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .config import TrainConfig

# TrainConfig field -> tag prefix
_WEIGHTS = {"clip_weights": "cast.lineage.spatial", "videomae_weights": "cast.lineage.temporal",
            "init_checkpoint": "cast.lineage.init"}
PRETRAIN_RUN_KEY = "cast.pretrain_run_id"  # safetensors metadata written by workflows.experts


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pretrain_run(path: Path) -> str | None:
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get(PRETRAIN_RUN_KEY)


def weight_tags(cfg: TrainConfig) -> dict[str, str]:
    """``<prefix>_sha256`` / ``_path`` / ``_run_id`` tags for every weight file ``cfg`` names."""
    tags: dict[str, str] = {}
    for field, prefix in _WEIGHTS.items():
        value = getattr(cfg, field)
        if not value:
            continue
        path = Path(value)
        tags[f"{prefix}_path"] = str(path)
        tags[f"{prefix}_sha256"] = file_sha256(path)
        run = _pretrain_run(path)
        if run:
            tags[f"{prefix}_run_id"] = run
    return tags


__all__ = ["weight_tags", "file_sha256", "PRETRAIN_RUN_KEY"]
