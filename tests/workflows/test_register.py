"""`cast-register` on the paper's released weights: a `.pth` in the paper's key layout (tiny config)
becomes a registered model whose class names come from the dataset's own label file, in the order the
paper's code numbers its head, and which `cast-predict` answers with. The label orders are fixed here."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cast_model import CASTConfig, load_official_cast
from pipelines.datasets import read_label_file
from tests.support.cast_reference import random_official_state_dict
from tests.support.pipelines_data import make_dataset
from workflows import register
from workflows.tracking import store as tracking
from workflows.inference.model import resolve_model


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


# -- the order of each dataset's classes ---------------------------------------------------------------------
def test_ssv2_classes_are_numbered_by_labels_json(tmp_path):
    # Ids deliberately not in alphabetical or file order.
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something": "2", "Dropping something": "0",
                                                       "Tearing something": "1"}))
    want = {"label": {"0": "Dropping something", "1": "Tearing something", "2": "Pushing something"}}
    assert read_label_file("ssv2", str(tmp_path / "labels.json")) == want
    assert read_label_file("ssv2", str(tmp_path)) == want  # the labels folder too


def test_k400_classes_are_numbered_by_sorted_name(tmp_path):
    rows = [{"label": n, "youtube_id": f"id{i}", "time_start": "0", "time_end": "10", "split": "train"}
            for i, n in enumerate(["zumba", "abseiling", "juggling balls", "abseiling"])]
    got = read_label_file("k400", str(write_csv(tmp_path / "train.csv", rows)))
    assert got == {"label": {"0": "abseiling", "1": "juggling balls", "2": "zumba"}}


def test_ek100_classes_are_numbered_by_the_official_ids(tmp_path):
    write_csv(tmp_path / "EPIC_100_verb_classes.csv", [{"id": "1", "key": "put"}, {"id": "0", "key": "take"}])
    write_csv(tmp_path / "EPIC_100_noun_classes.csv", [{"id": "0", "key": "tap"}, {"id": "2", "key": "cup"},
                                                        {"id": "1", "key": "plate"}])
    ann = write_csv(tmp_path / "EPIC_100_train.csv", [{"narration_id": "P01_01_0", "verb": "put", "verb_class": "1",
                                                       "noun": "cup", "noun_class": "2"}])
    got = read_label_file("ek100", str(ann))
    assert got == {"verb": {"1": "put", "0": "take"}, "noun": {"0": "tap", "2": "cup", "1": "plate"}}
    assert [got["noun"][str(i)] for i in range(3)] == ["tap", "plate", "cup"]


# -- a .pth registered and used -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return make_dataset("ssv2", tmp_path_factory.mktemp("native"), videos_per_class=1)


@pytest.fixture(scope="module")
def released(data, tmp_path_factory) -> tuple[Path, CASTConfig]:
    """A tiny CAST saved the way the paper's code (VideoMAE's save_model) saves it: torch.save of the
    state dict under "model", beside the epoch and the argparse Namespace, keys in the release naming."""
    n = len(json.loads((Path(data["annotations"]) / "labels.json").read_text()))
    cfg = CASTConfig.preset("tiny", num_classes=n)
    path = tmp_path_factory.mktemp("release") / "cast_ssv2.pth"
    torch.save({"model": random_official_state_dict(cfg, seed=11, dtype=torch.float32), "epoch": 29,
                "args": argparse.Namespace(data_set="SSV2", nb_classes=n, batch_size=6)}, path)
    return path, cfg


def test_a_released_pth_becomes_a_registered_model_with_the_datasets_names(mlflow_store, data, released, capsys):
    pth, cfg = released
    labels_json = Path(data["annotations"]) / "labels.json"
    code = register.main([str(pth), "--dataset", "ssv2", "--labels", str(labels_json), "--preset", "tiny"])
    assert code == 0, capsys.readouterr().err
    assert "models:/cast-ssv2/1 (candidate, champion)" in capsys.readouterr().out

    source = resolve_model("models:/cast-ssv2@champion")
    ids = json.loads(labels_json.read_text())
    assert source.labels == {"label": {str(v): k for k, v in sorted(ids.items(), key=lambda kv: int(kv[1]))}}
    assert source.dataset == "ssv2" and source.extra["test_clips"] >= 1  # the recipe's views
    # The weights are the release's, converted: every tensor equal to load_official_cast's.
    want = load_official_cast(pth, cfg).state_dict()
    got = load_file(str(source.checkpoint / "model.safetensors"))
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    version = tracking.client().get_model_version("cast-ssv2", "1")
    assert version.tags["cast.source_sha256"] == hashlib.sha256(pth.read_bytes()).hexdigest()


def test_cast_predict_answers_with_the_registered_release(mlflow_store, data, released, capsys):
    from workflows import predict

    video = sorted(Path(data["videos"]).rglob("*.webm"))[0]
    assert predict.main([str(video), "--model", "models:/cast-ssv2@champion", "--json", "--top-k", "3"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = json.loads((Path(data["annotations"]) / "labels.json").read_text())
    by_id = {int(v): k for k, v in names.items()}
    assert [by_id[i] for i in row["top_ids"]] == row["top_names"]


def test_a_label_file_that_does_not_fit_the_head_registers_nothing(mlflow_store, released, tmp_path, capsys):
    pth, cfg = released
    (tmp_path / "labels.json").write_text(json.dumps({"only one class": "0"}))
    code = register.main([str(pth), "--dataset", "ssv2", "--labels", str(tmp_path / "labels.json"),
                          "--preset", "tiny", "--name", "cast-misfit"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cast-register")]
    assert code == 2 and len(err) == 1 and err[0].startswith("cast-register: error:"), err
    assert tracking.client().search_registered_models("name = 'cast-misfit'") == []


def test_a_pth_without_a_label_file_is_refused(mlflow_store, released, capsys):
    code = register.main([str(released[0]), "--dataset", "ssv2", "--preset", "tiny"])
    err = capsys.readouterr().err
    assert code == 2 and "--labels" in err


def test_a_registered_version_is_registered_again_from_its_checkpoint(mlflow_store, released, capsys):
    """What a model logged with older code paths needs: its checkpoint artifact, registered with the
    current code, same names and weights."""
    assert register.main(["models:/cast-ssv2/1", "--dataset", "ssv2"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "models:/cast-ssv2/1 -> models:/cast-ssv2/2 (candidate)" in out  # version 1 stays champion
    old, new = resolve_model("models:/cast-ssv2/1"), resolve_model("models:/cast-ssv2/2")
    assert new.labels == old.labels and new.extra == old.extra
    a, b = load_file(str(old.checkpoint / "model.safetensors")), load_file(str(new.checkpoint / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert tracking.client().get_model_version("cast-ssv2", "2").tags["cast.source"] == "models:/cast-ssv2/1"
