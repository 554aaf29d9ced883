"""A released checkpoint -> a checkpoint folder of ours that inference, serving and the registry take:
the weights, the class names in the order the checkpoint's head uses, and the contract (dataset, heads,
evaluation views) batch inference reads.

Two kinds of release are read:

* the paper's ``.pth`` (KHU-VLL/CAST's key layout), through ``cast_model.load_official_cast``
  (``torch.load(weights_only=True)``: nothing is unpickled). It holds weights only, so the class names
  come from the dataset's own label file (``pipelines.datasets.read_label_file``), numbered the way the
  paper's code numbers its head: SSV2 by the ids of ``labels.json``; K400 by sorted class name (the
  paper's lists give K400 labels as numbers in the sorted-name order of the Kinetics lists VideoMAE
  uses); EK100 by the official ``verb_class``/``noun_class`` ids (its lists are ``video,verb,noun``
  with those ids);
* one of ours (a folder with ``cast.json``): its own label map is kept as it is, order included; a label
  file is read only when it has none.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from cast_model import CASTConfig, CheckpointError, load_official_cast
from cast_model.checkpoint import META_FILE, LabelMap, read_checkpoint_meta, save_checkpoint, update_extra
from cast_model.vocab import CONTRACT_KEYS, EK100_HEADS, EVAL_VIEW_KEYS


def recipe_contract(dataset: str, heads: tuple[str, ...] | list[str], preset: str | None = None,
                    **views: Any) -> dict[str, Any]:
    """The contract training would write for ``dataset`` (its recipe's evaluation views, ``views`` on top)."""
    from workflows.training.recipe_yaml import load_recipe

    recipe = load_recipe(dataset, preset)
    values = {k: recipe[k] for k in EVAL_VIEW_KEYS} | {k: v for k, v in views.items() if v is not None}
    return {"dataset": dataset, "heads": list(heads), **values}


def model_config(preset: str, labels: LabelMap) -> CASTConfig:
    """The preset with the head the label map asks for (one head, or EK100's verb and noun)."""
    if set(labels) == set(EK100_HEADS):
        return CASTConfig.preset(preset, head="verb_noun", num_verbs=len(labels["verb"]),
                                 num_nouns=len(labels["noun"]))
    return CASTConfig.preset(preset, num_classes=len(labels["label"]))


def prepare_release(checkpoint: Path, dataset: str, dst: Path, preset: str = "base",
                    label_file: str | None = None) -> Path:
    """Write ``dst`` (a checkpoint folder with label map and contract) from ``checkpoint``: a folder of
    ours or a file in the paper's layout. Raises ``CheckpointError`` (or ``AnnotationError`` for the label
    file, ``ConversionError`` for weights that do not fit) with a one-line message."""
    if checkpoint.is_dir():
        if not (checkpoint / META_FILE).is_file():
            raise CheckpointError(f"{checkpoint}: no {META_FILE}: not a checkpoint folder of ours")
        shutil.copytree(checkpoint, dst)
        meta = read_checkpoint_meta(dst)
        labels = meta.get("labels") or _label_file(dataset, label_file, checkpoint)
        if not meta.get("labels"):
            meta_labels_into(dst, labels)
        extra = meta.get("extra") or {}
    elif checkpoint.is_file():
        labels = _label_file(dataset, label_file, checkpoint)
        model = load_official_cast(checkpoint, model_config(preset, labels))
        save_checkpoint(dst, model, labels)
        extra = {}
    else:
        raise CheckpointError(f"{checkpoint}: no such file or checkpoint folder")
    if extra.get("dataset") not in (None, dataset):
        raise CheckpointError(f"{checkpoint}: trained on {extra['dataset']}, not {dataset}")
    missing = [k for k in CONTRACT_KEYS if k not in extra]
    if missing:
        update_extra(dst, recipe_contract(dataset, tuple(labels), None if preset == "base" else preset))
    return dst


def _label_file(dataset: str, label_file: str | None, checkpoint: Path) -> LabelMap:
    from pipelines.datasets import read_label_file

    if not label_file:
        raise CheckpointError(f"{checkpoint} carries no class names: give the dataset's label file with "
                              f"--labels (ssv2: labels.json; k400: an annotation CSV; ek100: EPIC_100_train.csv)")
    return read_label_file(dataset, label_file)


def meta_labels_into(folder: Path, labels: LabelMap) -> None:
    """Put ``labels`` into the ``cast.json`` of ``folder`` (a checkpoint saved without a label map)."""
    import json

    from cast_model.checkpoint import validate_label_map

    meta = read_checkpoint_meta(folder)
    validate_label_map(labels, CASTConfig.from_dict(meta["config"]))
    meta["labels"] = labels
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
