"""Each step once on the training path: one preparation (validate, the label maps, the tracking store,
the run name's lease, the two stores reconciled) and one run, used by the three training commands and
the demo alike; each shard folder's ``classes.json`` read once per process."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

import pipelines.manifest
from workflows.training import launch, preflight, validation
from workflows.training.command import config_from_args

from tests.support.pipelines_data import ssv2_train_val_shards

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def shards(mlflow_store) -> Path:
    return ssv2_train_val_shards(mlflow_store, videos_per_class=2)


def argv(root: Path, shards: Path, *extra: str) -> list[str]:
    return ["--shards", str(shards), "--val-shards", str(shards), "--preset", "tiny", "--run-name", "once",
            "--storage-path", str(root / "ray"), "--batch-size", "2", "--total-batch-size", "2",
            "--mixup-prob", "0", *extra]


def test_prepare_takes_each_step_once_and_reads_each_label_map_once(mlflow_store, shards, tmp_path, monkeypatch):
    reads: Counter = Counter()
    real_read = pipelines.manifest.read_label_map

    def counted(folder, *args, **kwargs):
        reads[str(folder)] += 1
        return real_read(folder, *args, **kwargs)

    monkeypatch.setattr(pipelines.manifest, "read_label_map", counted)
    steps: Counter = Counter()
    for module, name in ((launch, "validate"), (launch, "check_shard_labels"), (launch, "check_weights"),
                         (launch, "reconcile_stores"), (launch, "hold")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: (steps.update([_name]),
                                                                                       _real(*a, **k))[1])
    cfg = config_from_args("ssv2", argv(mlflow_store, shards))
    with launch.prepare(cfg) as job:
        assert job.cfg.labels == real_read(shards) and job.cfg.run_name == "once"
        held = list((mlflow_store / "ray" / ".run-leases").glob("once*"))
        assert held, "the run name's lease is held while the block lasts"
    assert steps == {"validate": 1, "check_shard_labels": 1, "check_weights": 1, "reconcile_stores": 1, "hold": 1}
    assert reads == {str(shards): 1}  # train and validation shards share the folder here: one read


def test_separate_folders_are_each_read_once(mlflow_store, shards, tmp_path, monkeypatch):
    val = tmp_path / "val"
    val.mkdir()
    for p in shards.iterdir():
        (val / p.name).symlink_to(p)
    reads: Counter = Counter()
    real_read = pipelines.manifest.read_label_map
    monkeypatch.setattr(pipelines.manifest, "read_label_map",
                        lambda folder, *a, **k: (reads.update([str(folder)]), real_read(folder, *a, **k))[1])
    cfg = config_from_args("ssv2", argv(mlflow_store, shards, "--val-shards", str(val)))
    with launch.prepare(cfg):
        pass
    assert reads == {str(shards): 1, str(val): 1}


def test_the_commands_and_the_demo_use_the_one_preparation_and_run():
    """``launch.main`` (the three ``train_<dataset>`` doors) and the demo (``workflows/training/demo.py``)
    call ``prepare`` and ``run``, and nothing else on the path validates, reads a label map, takes the lease
    or reconciles."""
    for path in (REPO / "workflows" / "training" / "launch.py", REPO / "workflows" / "training" / "demo.py"):
        tree = ast.parse(path.read_text())
        calls = Counter(n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                        for n in ast.walk(tree) if isinstance(n, ast.Call))
        assert calls["prepare"] >= 1 and calls["run"] >= 1, path.name
        if path.name == "demo.py":
            assert not {"validate", "read_label_map", "hold", "reconcile_stores", "resolve"} & set(calls), calls
    for door in ("train_ssv2", "train_k400", "train_ek100"):
        assert "launch.main(" in (REPO / "workflows" / f"{door}.py").read_text()
    for name in ("check_shard_labels", "check_init_checkpoint"):  # they take the label maps prepare read
        assert "read_label_map" not in ast.unparse(next(n for n in ast.walk(ast.parse(Path(preflight.__file__).read_text()))
                                                         if isinstance(n, ast.FunctionDef) and n.name == name))
    assert validation.fit_cluster.__doc__ and "validate" in validation.fit_cluster.__doc__
