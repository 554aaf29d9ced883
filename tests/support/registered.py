"""A tiny CAST registered as ``cast-ssv2`` (champion) in a SQLite MLflow store, with the small SSV2
dataset it was labelled from: module fixtures for the serving and predict tests (import them into the
test module)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.datasets import read_dataset
from workflows.tracking import registry, store as tracking

from .models import tiny_checkpoint
from .pipelines_data import make_dataset

NAME = "cast-ssv2"
URI = f"models:/{NAME}@champion"


@pytest.fixture(scope="module")
def store(mlflow_store) -> Path:
    return mlflow_store


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return make_dataset("ssv2", tmp_path_factory.mktemp("native"), videos_per_class=1)


@pytest.fixture(scope="module")
def registered(store, data, tmp_path_factory) -> dict:
    labels = read_dataset("ssv2", data["videos"], data["annotations"], "train").label_map
    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", labels, num_classes=len(labels["label"]))
    client = tracking.client()
    run = client.create_run(tracking.ensure_experiment(NAME), run_name="tiny")
    reg = registry.register(run.info.run_id, ckpt, NAME, val_top1=0.5)
    client.set_terminated(run.info.run_id)
    return {"labels": labels, "version": reg.version, "checkpoint": ckpt}
