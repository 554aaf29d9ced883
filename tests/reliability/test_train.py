"""Training and checkpoint records after faults (issue 11), without a cluster: every check here runs
before Ray would start. MLflow runs on a SQLite store; shards and checkpoints are real files."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient

from cast_model import CAST, CASTConfig, CheckpointError, load_checkpoint, save_checkpoint, verify_checkpoint
from pipelines.lease import OutputLease
from tests.support.pipelines_data import ssv2_train_val_shards
from workflows.tracking import store as tracking
from workflows.batch_infer import main as batch_infer_main
from workflows.training import launch, mlflow_run, preflight
from workflows.training.config import TrainConfigError, config_from_args, read_label_map


@pytest.fixture(scope="module")
def root(mlflow_store) -> Path:
    return mlflow_store


@pytest.fixture(scope="module")
def shards(root) -> Path:
    return ssv2_train_val_shards(root, videos_per_class=2)


def argv(root: Path, shards: Path, run_name: str, *extra: str) -> list[str]:
    return ["--shards", str(shards), "--val-shards", str(shards), "--preset", "tiny", "--run-name", run_name,
            "--storage-path", str(root / "ray"), "--batch-size", "2", "--total-batch-size", "2",
            "--mixup-prob", "0", *extra]


def cfg_of(root, shards, run_name, *extra):
    return launch.with_defaults(config_from_args("ssv2", argv(root, shards, run_name, *extra)))


def test_a_shard_label_outside_the_class_list_fails_before_ray(root, shards, tmp_path, capsys):
    import ray

    bad = tmp_path / "shards"
    bad.mkdir()
    for p in shards.iterdir():
        (bad / p.name).symlink_to(p)
    (bad / "manifest.parquet").unlink()
    m = pq.read_table(shards / "manifest.parquet")
    labels = m["label"].to_pylist()
    labels[0] = -1  # what a test split (no labels) or a wrong class list puts there
    pq.write_table(m.set_column(m.column_names.index("label"), "label", pa.array(labels, m["label"].type)),
                   bad / "manifest.parquet")
    assert launch.main("ssv2", argv(root, bad, "labels")) == 2
    err = capsys.readouterr().err
    assert "have a label value outside the 4 classes" in err and repr(m["source_id"][0].as_py()) in err
    assert not ray.is_initialized()


def test_run_name_with_a_quote_is_found_and_one_with_both_quotes_refused(root):
    run_id, previous = mlflow_run.open_run("quotes", "it's", {})
    assert previous is None and mlflow_run.find_run("quotes", "it's").info.run_id == run_id
    assert mlflow_run.open_run("quotes", "it's", {}) == (run_id, "RUNNING")
    with pytest.raises(TrainConfigError, match="must not hold both"):
        launch.validate(cfg_of(root, Path("/nonexistent"), "it's \"x\""))


def test_a_live_job_holds_its_run_name(root, shards, capsys):
    held = OutputLease(launch.run_lease_uri(cfg_of(root, shards, "busy")), "training run 'busy'").acquire()
    try:
        assert launch.main("ssv2", argv(root, shards, "busy")) == 2
    finally:
        held.release()
    assert "in use by training run 'busy'" in capsys.readouterr().err


def test_stores_that_disagree_start_afresh_or_refuse_to_resume(root, shards):
    said = []
    # the checkpoint store holds the run, a fresh tracking store does not
    cfg = cfg_of(root, shards, "orphan")
    (Path(cfg.storage_path) / "orphan" / "checkpoint_step00000002").mkdir(parents=True)
    with pytest.raises(TrainConfigError, match="checkpoint store holds run 'orphan'.*tracking store.*does not"):
        preflight.reconcile_stores(cfg_of(root, shards, "orphan", "--resume"), said.append)
    preflight.reconcile_stores(cfg, said.append)
    assert preflight.ray_snapshot(cfg) is None and "starting afresh" in said[-1]
    assert list(Path(cfg.storage_path).glob("orphan.orphaned-*/checkpoint_step00000002"))
    # the tracking store holds the run, its checkpoints are gone: a new MLflow run, the old superseded
    cfg = cfg_of(root, shards, "lost")
    old, _ = mlflow_run.open_run(cfg.experiment, "lost", {})
    with pytest.raises(TrainConfigError, match="no checkpoint of it"):
        preflight.reconcile_stores(cfg_of(root, shards, "lost", "--resume"), said.append)
    preflight.reconcile_stores(cfg, said.append)
    assert mlflow_run.run_status(old) == "FAILED" and "superseded" in said[-1]
    new, previous = mlflow_run.open_run(cfg.experiment, "lost", {})
    assert new != old and previous is None


def test_replayed_steps_are_logged_once(root):
    run_id, _ = mlflow_run.open_run("replay", "r", {})
    first = mlflow_run.RunLogger(run_id, system_metrics_interval_s=3600)
    for step in range(1, 6):
        first.log_metrics({"train_loss": 1.0 / step}, step)
    first.close()
    restarted = mlflow_run.RunLogger(run_id, system_metrics_interval_s=3600)  # a worker restarted from step 3
    for step in range(3, 8):
        restarted.log_metrics({"train_loss": 2.0 / step, "lr": 0.1}, step)
    restarted.close()
    steps = [m.step for m in MlflowClient().get_metric_history(run_id, "train_loss")]
    assert sorted(steps) == list(range(1, 8))
    mlflow_run.close_run(run_id, True)


def test_no_model_is_registered_from_a_run_that_is_not_finished(root, tmp_path):
    run_id, _ = mlflow_run.open_run("reg", "failed-one", {})
    mlflow_run.close_run(run_id, False)
    cfg = cfg_of(root, Path("/x"), "failed-one")
    with pytest.raises(RuntimeError, match="is FAILED, not FINISHED"):
        launch._register(cfg, run_id, tmp_path, {"val_top1": 0.5})
    assert not MlflowClient().search_registered_models()


def _checkpoint(tmp_path: Path, classes: int = 4) -> Path:
    model = CAST(CASTConfig.preset("tiny", num_classes=classes))
    return save_checkpoint(tmp_path / "ckpt", model, {"label": {str(i): f"c{i}" for i in range(classes)}})


def test_checkpoint_problems_are_checkpoint_errors_naming_the_checkpoint(tmp_path, capsys):
    import ray

    ckpt = _checkpoint(tmp_path)
    meta = json.loads((ckpt / "cast.json").read_text())
    meta["config"]["num_classes"] = 7  # config and weights disagree
    (ckpt / "cast.json").write_text(json.dumps(meta))
    for check in (lambda: load_checkpoint(ckpt, name="models:/m/3"), lambda: verify_checkpoint(ckpt, "models:/m/3")):
        with pytest.raises(CheckpointError, match=r"^models:/m/3: weight shapes do not fit the config"):
            check()
    assert batch_infer_main(["--model", str(ckpt), "--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"batch_infer: error: {ckpt}: weight shapes do not fit" in capsys.readouterr().err
    ckpt2 = _checkpoint(tmp_path / "b")
    w = ckpt2 / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])  # truncated weights
    with pytest.raises(CheckpointError, match=r"^runs:/abc/model: model.safetensors is not a complete"):
        verify_checkpoint(ckpt2, "runs:/abc/model")
    with pytest.raises(CheckpointError, match=r"^runs:/abc/model: model.safetensors is not a readable"):
        load_checkpoint(ckpt2, name="runs:/abc/model")
    assert not ray.is_initialized()


def test_an_init_checkpoint_that_does_not_fit_or_is_cut_fails_before_ray(root, shards, tmp_path, capsys):
    """``--init-checkpoint`` (a release checkpoint in the paper's naming) is checked like batch inference's
    model: names and shapes against the config on the meta device, a complete file; one line, exit 2."""
    import ray
    from safetensors.torch import save_file

    from tests.support.cast_reference import random_official_state_dict

    fits = tmp_path / "cast_ssv2.pth"
    config = dataclasses.replace(cfg_of(root, shards, "init"), labels=read_label_map(shards)).model_config()
    state = random_official_state_dict(config, dtype=torch.float32)
    torch.save({"model": state, "epoch": 3}, fits)
    preflight.check_weights(cfg_of(root, shards, "init", "--init-checkpoint", str(fits)))  # fits: no error
    other = random_official_state_dict(config.replace(num_classes=config.num_classes + 3), dtype=torch.float32)
    torch.save(other, tmp_path / "other_classes.pth")
    save_file({k: v for k, v in state.items() if k != "blocks.0.cross_t_up.bias"}, str(tmp_path / "no_key.safetensors"))
    save_file(state, str(tmp_path / "cut.safetensors"))
    for cut, whole in (("cut.safetensors", tmp_path / "cut.safetensors"), ("cut.pth", fits)):
        data = whole.read_bytes()
        (tmp_path / cut).write_bytes(data[: len(data) // 2])
    says = {"other_classes.pth": r"shapes differ from the model's: head\.weight",
            "no_key.safetensors": r"missing blocks\.0\.bcast\.t_up\.bias",
            "cut.safetensors": "is not a complete safetensors file",
            "cut.pth": "is not a weights-only torch checkpoint"}
    for name, message in says.items():
        path = tmp_path / name
        assert launch.main("ssv2", argv(root, shards, "init", "--init-checkpoint", str(path))) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("train_ssv2: error: init_checkpoint: ") and str(path) in err, err
        assert re.search(message, err), err
    assert not ray.is_initialized()
