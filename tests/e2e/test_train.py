"""Training end to end on real synthetic shards with 2 Ray workers on CPU (DDP over gloo):

- a job that loses a worker process mid-run (``os._exit``) survives it through ``FailureConfig`` and
  ends with the step count of an uninterrupted run; it logs its metrics, params and artifacts, keeps
  its checkpoints, registers the model (candidate + champion), and a fresh process loading
  ``models:/cast-ssv2@champion`` serves a video with the trained model's top-5;
- the champion alias only moves to a better model; a finished job is not repeated;
- a job whose worker dies with no failures allowed ends FAILED in MLflow, and rerun under the same name
  it resumes from its latest checkpoint in the same MLflow run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from ray.train import TrainingFailedError

from cast_model import load_checkpoint
from workflows.tracking import registry
from workflows.training import launch
from workflows.training.config import config_from_args
from workflows.inference.classify import VideoClassifier, views_for
from workflows.inference.model import model_from_folder, version_model_id
from workflows.training.state import MODEL_DIR, STATE_FILE, TRAINABLE_FILE

from tests.support.pipelines_data import ssv2_train_val_shards

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# 16 training clips over 2 ranks in batches of 4: 2 optimizer steps per epoch, 4 in 2 epochs.
STEPS = 4


@pytest.fixture(scope="module")
def root(mlflow_store):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # inherited by the local Ray's workers
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield mlflow_store
        ray.shutdown()


@pytest.fixture(scope="module")
def shards(root) -> Path:
    return ssv2_train_val_shards(root, videos_per_class=4)


def tiny_config(root: Path, shards: Path, run_name: str, *extra: str):
    argv = ["--shards", str(shards), "--val-shards", str(shards), "--preset", "tiny", "--run-name", run_name,
            "--num-workers", "2", "--batch-size", "4", "--total-batch-size", "8", "--epochs", "2",
            "--checkpoint-every", "1", "--storage-path", str(root / "ray"), "--loader-threads", "1",
            "--mixup-prob", "1.0", "--freeze-experts", *extra]
    cfg = launch.with_defaults(config_from_args("ssv2", argv))
    launch.validate(cfg)
    return cfg


def resumed_from(run_id: str) -> int:
    """The step the job restarted from. The fault hits after step 3's optimizer step, before step 3's
    checkpoint; step 2's (end of epoch 1) is the latest unless the controller had not registered it yet
    when the worker group died (reports reach it asynchronously), then step 1's is."""
    return int(MlflowClient().get_run(run_id).data.tags["cast.resumed_from_step"])


def run_status(run_id: str) -> str:
    return MlflowClient().get_run(run_id).info.status


@pytest.fixture(scope="module")
def trained(root, shards):
    """A job that loses a worker process at step 3 and survives it (FailureConfig, one restart). In bf16
    autocast (the GPU path, frozen experts stored in bf16), so DDP and the resume run that path here too."""
    cfg = dataclasses.replace(tiny_config(root, shards, "e2e", "--max-failures", "1", "--precision", "bf16"),
                              fault_kill_step=3)
    result = launch.train(cfg)
    return {"cfg": cfg, "result": result}


def test_lost_worker_is_survived(trained, root):
    result = trained["result"]
    assert (root / "ray" / "e2e" / "fault_injected").read_text() == "3"  # rank 1's process really died
    assert result.metrics["step"] == STEPS and result.metrics["epoch"] == 2  # as without the fault
    assert run_status(result.run_id) == "FINISHED"
    assert resumed_from(result.run_id) in (1, 2)  # a checkpoint from before the fault (see resumed_from)


def test_metrics_params_and_artifacts_logged(trained):
    client = MlflowClient()
    run_id = trained["result"].run_id
    run = client.get_run(run_id)
    history = {k: client.get_metric_history(run_id, k) for k in
               ("train_loss", "lr", "clips_per_s_worker", "clips_per_s_total", "data_wait_s", "val_top1")}
    assert {m.step for m in history["train_loss"]} == set(range(1, STEPS + 1))
    assert all(np.isfinite(m.value) for m in history["train_loss"])
    assert all(m.value > 0 for m in history["clips_per_s_total"] + history["clips_per_s_worker"])
    assert len({m.step for m in history["val_top1"]}) == 2  # one validation per epoch
    assert 0.0 <= run.data.metrics["final_val_top1"] <= 1.0 and "final_val_top5" in run.data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics)
    # the registered version's logged model carries the validation figures (MLflow 3 model_id)
    version = client.get_model_version("cast-ssv2", trained["result"].model_version)
    linked = {m.key for m in client.get_logged_model(version_model_id(version)).metrics}
    assert {"val_top1", "final_val_top1", "final_val_top5"} <= linked
    params = run.data.params
    assert params["preset"] == "tiny" and params["update_freq"] == "1" and params["world_size"] == "2"
    assert params["precision_path"].startswith("precision bf16 -> bf16 autocast on cpu")
    assert float(params["lr"]) == pytest.approx(float(params["base_lr"]) * 8 / 256)
    files = {a.path for d in ("config", "final_validation") for a in client.list_artifacts(run_id, d)}
    assert files == {"config/train_config.json", "config/classes.json", "final_validation/confusion_label.png",
                     "final_validation/per_class_label.csv"}


def test_progress_lines_are_written_once(trained):
    """Each rank-0 progress line stands once in its worker's output (Ray forwards a worker's .out and .err
    to the driver): Ray Train's patched print wrote every print to both."""
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    by_worker: dict[str, list[str]] = {}
    for path in logs.glob("worker-*"):
        if path.suffix in (".out", ".err"):
            lines = [s for s in path.read_text(errors="replace").splitlines() if s.startswith("[train] ")]
            by_worker.setdefault(path.stem, []).extend(lines)
    epochs = [s for lines in by_worker.values() for s in lines if s.startswith("[train] epoch ")]
    assert len(epochs) >= 2 and any("precision bf16" in s for lines in by_worker.values() for s in lines)
    for worker, lines in by_worker.items():
        assert len(lines) == len(set(lines)), (worker, lines)


def test_checkpoints_hold_the_training_state(trained):
    result = trained["result"]
    final = Path(result.checkpoint_path)
    assert final.name == f"final_step{STEPS:08d}"
    state = torch.load(final / STATE_FILE, weights_only=True)
    assert state["progress"]["step"] == STEPS and state["progress"]["finished"]
    assert len(state["rng"]) == 2 and state["optimizer"]["state"]  # every rank's RNG; AdamW moments
    assert (final / TRAINABLE_FILE).is_file() and (final / MODEL_DIR / "model.safetensors").is_file()
    kept = sorted(p.name for p in final.parent.iterdir() if p.name.startswith(("checkpoint_", "final_")))
    assert len(kept) <= 3 and kept[-1] == final.name  # best 2 by val_top1 plus the latest


def test_champion_served_from_a_fresh_process(trained, root, shards):
    result = trained["result"]
    assert result.model_version == "1" and result.champion
    client = MlflowClient()
    for alias in ("candidate", "champion"):
        assert str(client.get_model_version_by_alias("cast-ssv2", alias).version) == "1"
    folder = Path(result.checkpoint_path) / MODEL_DIR
    _, labels = load_checkpoint(folder)
    assert labels == json.loads((shards / "classes.json").read_text())
    # One validation video, out of its shard: the served model takes video files, not tensors.
    with tarfile.open(sorted(shards.glob("validation-*.tar"))[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith((".webm", ".avi", ".mp4")))
        video = root / f"one{Path(member.name).suffix}"
        video.write_bytes(tar.extractfile(member).read())
    source = model_from_folder(folder, name="cast-ssv2")  # views as batch inference picks them for this name
    expected = VideoClassifier.load(source, views=views_for(source)).classify([str(video)])[0]
    code = ("import sys, json, pandas as pd, mlflow\n"
            "m = mlflow.pyfunc.load_model('models:/cast-ssv2@champion')\n"
            "out = m.predict(pd.DataFrame({'path': [sys.argv[1]]}))\n"
            "open(sys.argv[2], 'w').write(out.to_json(orient='records'))\n")
    subprocess.run([sys.executable, "-c", code, str(video), str(root / "served.json")], check=True,
                   cwd=root, env={**os.environ, "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]},
                   timeout=300)
    served = json.loads((root / "served.json").read_text())[0]
    assert served["reason"] == "" and served["top_ids"] == expected["top_ids"]
    assert served["top_names"] == [labels["label"][str(i)] for i in served["top_ids"]]
    np.testing.assert_allclose(served["top_probs"], expected["top_probs"], rtol=1e-5, atol=1e-6)


def test_champion_moves_only_to_a_better_model(trained):
    folder = Path(trained["result"].checkpoint_path) / MODEL_DIR
    run_id = trained["result"].run_id
    top1 = trained["result"].metrics["val_top1"]
    worse = registry.register(run_id, folder, "cast-ssv2", top1 - 0.1)
    client = MlflowClient()
    assert not worse.champion and worse.previous_champion == "1"
    assert str(client.get_model_version_by_alias("cast-ssv2", "candidate").version) == worse.version
    assert str(client.get_model_version_by_alias("cast-ssv2", "champion").version) == "1"
    better = registry.register(run_id, folder, "cast-ssv2", top1 + 0.1)
    assert better.champion and str(client.get_model_version_by_alias("cast-ssv2", "champion").version) == better.version


def test_finished_job_is_not_repeated(trained):
    again = launch.train(dataclasses.replace(trained["cfg"], max_failures=1))
    assert again.run_id == trained["result"].run_id and again.model_version is None and again.seconds == 0.0


def test_failed_job_is_failed_and_a_rerun_resumes_it(root, shards):
    cfg = tiny_config(root, shards, "resume", "--max-failures", "0", "--no-register")
    with pytest.raises(TrainingFailedError):
        launch.train(dataclasses.replace(cfg, fault_kill_step=3))
    client = MlflowClient()
    exp = client.get_experiment_by_name("cast-ssv2").experiment_id
    failed = client.search_runs([exp], filter_string="tags.`cast.run_name` = 'resume'")
    assert [r.info.status for r in failed] == ["FAILED"]
    result = launch.train(cfg)  # same name: the same MLflow run, Ray's latest checkpoint
    assert result.run_id == failed[0].info.run_id and run_status(result.run_id) == "FINISHED"
    assert resumed_from(result.run_id) in (1, 2)
    assert result.metrics["step"] == STEPS
    losses = client.get_metric_history(result.run_id, "train_loss")
    assert {m.step for m in losses} == set(range(1, STEPS + 1))  # steps 3 and 4 logged again on resume
