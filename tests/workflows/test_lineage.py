"""Lineage on a real SQLite-backed MLflow store: a run carries MLflow's source tags with the code's git
commit (or the one the submitting side passed in CAST_GIT_COMMIT) and its input shards' manifests as
MLflow datasets with their digests and contexts; the registered model's version leads to both."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

from tests.support.pipelines_data import ssv2_train_val_shards
from tests.support.models import tiny_checkpoint
from workflows.tracking import lineage, registry
from workflows.tracking import store as tracking

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return ssv2_train_val_shards(tmp_path_factory.mktemp("lineage"), videos_per_class=1)


def head() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_commit_comes_from_the_checkout_or_the_submitting_side(tmp_path, monkeypatch):
    monkeypatch.delenv(lineage.COMMIT_ENV, raising=False)
    assert lineage.code_version(REPO) == (head(), "git")
    # A working dir uploaded by `ray job submit` has no .git: no commit, and the note says what to set.
    commit, why = lineage.code_version(tmp_path)
    assert commit is None and lineage.COMMIT_ENV in why
    monkeypatch.setenv(lineage.COMMIT_ENV, "0123456789abcdef0123456789abcdef01234567")
    assert lineage.code_version(tmp_path)[0] == "0123456789abcdef0123456789abcdef01234567"
    tags, note = lineage.source_tags("workflows/train_ssv2.py", tmp_path)
    assert tags[MLFLOW_GIT_COMMIT] == "0123456789abcdef0123456789abcdef01234567" and "CAST_GIT_COMMIT" in note


def test_a_run_records_its_code_and_its_shards_and_the_model_leads_back(mlflow_store, shards, tmp_path,
                                                                          monkeypatch):
    monkeypatch.delenv(lineage.COMMIT_ENV, raising=False)
    client = tracking.client()
    run_id = client.create_run(tracking.ensure_experiment("cast-lineage"), run_name="train").info.run_id
    inputs = {"training": lineage.manifest_dataset(str(shards), "train"),
              "validation": lineage.manifest_dataset(str(shards), "validation")}
    lineage.record(run_id, "workflows/train_ssv2.py", inputs, log=lambda _: None)
    lineage.record(run_id, "workflows/train_ssv2.py", inputs, log=lambda _: None)  # a resumed job: no twins

    labels = {"label": {str(i): f"class {i}" for i in range(4)}}
    ckpt = tiny_checkpoint(tmp_path / "ckpt", labels, num_classes=4)
    client.set_terminated(run_id)
    reg = registry.register(run_id, ckpt, "cast-lineage", val_top1=0.5)

    # "Which code and which data made me": from the registered version to its run.
    run = client.get_run(client.get_model_version("cast-lineage", reg.version).run_id)
    assert run.data.tags[MLFLOW_GIT_COMMIT] == head()
    assert run.data.tags[MLFLOW_SOURCE_NAME] == "workflows/train_ssv2.py"
    assert run.data.tags[MLFLOW_SOURCE_TYPE] == "JOB"
    logged = {t.value: d.dataset for d in run.inputs.dataset_inputs for t in d.tags
              if t.key == lineage.CONTEXT_TAG}
    assert len(run.inputs.dataset_inputs) == 2 and set(logged) == {"training", "validation"}
    for context, split in (("training", "train"), ("validation", "validation")):
        assert logged[context].digest == inputs[context].digest
        assert logged[context].name == f"{shards.name}/{split}"
        assert "manifest.parquet" in logged[context].source
    assert logged["training"].digest != logged["validation"].digest  # the digest follows the rows


def test_weight_tags_name_each_file_its_digest_and_the_run_that_made_it(tmp_path):
    """The tags a training run carries for the weight files it starts from: a project expert (safetensors
    with the pretraining run in its metadata) gets its run id; a plain file only its digest and path."""
    import hashlib

    import torch
    from safetensors.torch import save_file

    expert = tmp_path / "spatial.safetensors"
    save_file({"w": torch.ones(3)}, str(expert), metadata={lineage.PRETRAIN_RUN_KEY: "run123"})
    other = tmp_path / "init.pth"
    other.write_bytes(b"released weights")
    tags = lineage.weight_tags({"spatial": str(expert), "temporal": None, "init": str(other)})
    assert tags == {
        "cast.lineage.spatial_path": str(expert),
        "cast.lineage.spatial_sha256": hashlib.sha256(expert.read_bytes()).hexdigest(),
        "cast.lineage.spatial_run_id": "run123",
        "cast.lineage.init_path": str(other),
        "cast.lineage.init_sha256": hashlib.sha256(b"released weights").hexdigest(),
    }
