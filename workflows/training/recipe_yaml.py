"""The training recipes: ``configs/<dataset>.yaml`` read into layers of settings (the paper's recipe, then
a preset overlaying it), each named for ``--print-config``'s sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cast_model.vocab import DATASETS

from ..tracking.store import REPO_ROOT
from .config import TrainConfigError

CONFIG_DIR = REPO_ROOT / "configs"


def recipe_layers(dataset: str, preset: str | None, config_dir: Path = CONFIG_DIR) -> list[tuple[str, dict[str, Any]]]:
    """``[("recipe <file>", values), ("preset <name> of <file>", values)]`` of ``configs/<dataset>.yaml``,
    in precedence order (the preset layer only when ``preset`` is given)."""
    if dataset not in DATASETS:
        raise TrainConfigError(f"unknown dataset {dataset!r}; datasets: {list(DATASETS)}")
    path = Path(config_dir) / f"{dataset}.yaml"
    if not path.is_file():
        raise TrainConfigError(f"recipe {path} is missing")
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("recipe"), dict):
        raise TrainConfigError(f"{path}: expected a mapping with a 'recipe' section")
    if doc.get("dataset") != dataset:
        raise TrainConfigError(f"{path} describes dataset {doc.get('dataset')!r}, not {dataset!r}")
    layers = [(f"recipe {path.name}", {"dataset": dataset, "head": doc.get("head", "single"), **doc["recipe"]})]
    if preset is not None:
        overlay = (doc.get("presets") or {}).get(preset) or {}
        if not isinstance(overlay, dict):
            raise TrainConfigError(f"{path}: presets.{preset} must be a mapping")
        layers.append((f"preset {preset} of {path.name}", {**overlay, "preset": preset}))
    return layers


def load_recipe(dataset: str, preset: str | None, config_dir: Path = CONFIG_DIR) -> dict[str, Any]:
    """``recipe`` of ``configs/<dataset>.yaml`` with ``presets.<preset>`` applied on top."""
    values: dict[str, Any] = {}
    for _, layer in recipe_layers(dataset, preset, config_dir):
        values.update(layer)
    return values
