"""The project's own checkpoint format: a folder with ``model.safetensors`` and ``cast.json``.

``cast.json`` carries the model config and the label map (``{head: {class_id: name}}``), so a
checkpoint is self-describing. No pickles anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .config import CASTConfig
from .model import CAST

FORMAT = "cast-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "cast.json"

LabelMap = dict[str, dict[str, str]]


class CheckpointError(ValueError):
    """A checkpoint that is missing, not in the format it claims, or does not fit the model."""


def validate_label_map(labels: LabelMap, config: CASTConfig) -> None:
    expected = ({"label": config.num_classes} if config.head == "single"
                else {"verb": config.num_verbs, "noun": config.num_nouns})
    if set(labels) != set(expected):
        raise CheckpointError(f"label map heads {sorted(labels)} do not match the model's {sorted(expected)}")
    for head, size in expected.items():
        ids = sorted(int(k) for k in labels[head])
        if ids != list(range(size)):
            raise CheckpointError(f"label map '{head}' must name classes 0..{size - 1}, has {len(ids)} ids")


def save_checkpoint(path: str | Path, model: CAST, labels: LabelMap | None = None,
                    extra: dict[str, Any] | None = None, trainable_only: bool = False) -> Path:
    """Write ``model`` (all weights, or only the trainable ones) with its config and label map."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if trainable_only:
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in names}
    if labels is not None:
        validate_label_map(labels, model.config)
    save_file(state, str(path / WEIGHTS_FILE), metadata={"format": FORMAT})
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": model.config.to_dict(),
            "labels": labels, "trainable_only": trainable_only, "extra": extra or {}}
    (path / META_FILE).write_text(json.dumps(meta, indent=2))
    return path


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{path} is not a CAST checkpoint: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta_path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} does not describe a {FORMAT} (format={meta.get('format')!r})"
                              if isinstance(meta, dict) else f"{meta_path} is not a JSON object")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: unsupported checkpoint version {meta.get('version')!r}")
    return meta


def update_extra(path: str | Path, values: dict[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into the ``extra`` of the checkpoint at ``path`` (weights untouched); returns it."""
    meta = read_checkpoint_meta(path)
    meta["extra"] = {**(meta.get("extra") or {}), **values}
    (Path(path) / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta["extra"]


def _fit_problems(have: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> str | None:
    """What keeps weights of shapes ``have`` from loading into a model of shapes ``expected``."""
    missing = sorted(set(expected) - set(have))
    unexpected = sorted(set(have) - set(expected))
    if missing or unexpected:
        return (f"weights do not fit the config; missing {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
                f"unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    wrong = [f"{k} {have[k]} vs {expected[k]}" for k in sorted(have) if tuple(have[k]) != tuple(expected[k])]
    if wrong:
        return f"weight shapes do not fit the config ({len(wrong)} differ): {wrong[:3]}"
    return None


def verify_checkpoint(path: str | Path, name: str | None = None) -> None:
    """Check a checkpoint folder without loading its weights: metadata, a complete safetensors file
    (a truncated one fails its header/size check), and every weight's name and shape against the
    config (the model is built on the meta device: no memory). Raises :class:`CheckpointError` naming
    ``name`` (e.g. the model URI the folder was downloaded from) or the folder."""
    path = Path(path)
    label = name or str(path)
    meta = read_checkpoint_meta(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{label}: {WEIGHTS_FILE} is missing")
    try:
        with safe_open(str(weights), framework="pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{label}: {WEIGHTS_FILE} is not a complete safetensors file: {err}") from err
    with torch.device("meta"):
        model = CAST(CASTConfig.from_dict(meta["config"]))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if meta.get("trainable_only"):
        expected = {k: v for k, v in expected.items() if CAST.is_trainable(k)}
    problem = _fit_problems(have, expected)
    if problem:
        raise CheckpointError(f"{label}: {problem}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    base: CAST | None = None, name: str | None = None) -> tuple[CAST, LabelMap | None]:
    """Load a checkpoint folder -> (model in eval mode, label map).

    A trainable-only checkpoint needs ``base``: a model holding the frozen expert weights. Errors are
    :class:`CheckpointError` naming ``name`` (what the folder stands for) or the folder.
    """
    path = Path(path)
    label = name or str(path)
    meta = read_checkpoint_meta(path)
    config = CASTConfig.from_dict(meta["config"])
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{label}: {WEIGHTS_FILE} is missing")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{label}: {WEIGHTS_FILE} is not a readable safetensors file: {err}") from err
    if meta.get("trainable_only"):
        if base is None:
            raise CheckpointError(f"{label} holds only trainable weights: pass base= with the expert weights")
        model = base
        if model.config != config:
            raise CheckpointError(f"{label}: config differs from the base model's")
        expected = {n: tuple(p.shape) for n, p in model.named_parameters() if CAST.is_trainable(n)}
    else:
        model = CAST(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problem = _fit_problems({k: tuple(v.shape) for k, v in state.items()}, expected)
    if problem:
        raise CheckpointError(f"{label}: {problem}")
    model.load_state_dict(state, strict=not meta.get("trainable_only"))
    labels = meta.get("labels")
    if labels is not None:
        validate_label_map(labels, config)
    return model.eval(), labels
