"""Tiny experts pretrained in the project, written in the released checkpoints' layouts.

``ensure_experts()`` returns the cached files (``data/experts/<preset>/``), pretraining them first
when missing: a spatial (appearance) expert on still frames, a temporal (motion) expert by VideoMAE's
masked tube reconstruction, each tracked in its own MLflow run with a linear probe of the frozen
expert. Load them with ``cast_model.load_experts(model, clip=files.spatial, videomae=files.temporal)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cast_model.config import CASTConfig


@dataclass(frozen=True)
class ExpertFiles:
    spatial: Path  # OpenAI-CLIP layout safetensors -> load_experts(model, clip=spatial)
    temporal: Path  # VideoMAE layout safetensors    -> load_experts(model, videomae=temporal)
    config: CASTConfig  # the geometry the experts fit (embed_dim, depth, heads, patch, img_size, frames)
    lineage: dict[str, str]  # spatial_sha256, temporal_sha256, spatial_run_id, temporal_run_id


def ensure_experts(root: Path | None = None, *, preset: str = "micro",
                   log: Callable[[str], None] = print) -> ExpertFiles:
    """Return cached expert files under root (default data/experts), pretraining them (tracked in MLflow's
    project store) when missing."""
    from workflows.tracking.store import DATA_DIR

    from .cache import FILES, config_of, make_experts, preset_of, read_manifest

    recipe = preset_of(preset)  # an unknown preset fails before anything is made
    folder = Path(root if root is not None else DATA_DIR / "experts") / preset
    manifest = read_manifest(folder, recipe)
    if manifest is None:
        log(f"pretraining the {preset!r} experts into {folder} (once; later runs reuse the files)")
        manifest = make_experts(folder, preset, log)
    else:
        log(f"pretrained experts in {folder} (spatial run {manifest['lineage']['spatial_run_id']}, "
            f"temporal run {manifest['lineage']['temporal_run_id']})")
    return ExpertFiles(folder / FILES["spatial"], folder / FILES["temporal"], config_of(manifest),
                       dict(manifest["lineage"]))


__all__ = ["ExpertFiles", "ensure_experts"]
