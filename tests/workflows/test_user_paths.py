"""The user's paths as typed, where they used to fail late or say the wrong thing: a training job whose
batch arithmetic cannot work on its shards stops before Ray with one line and exit 2; a local --model
that is no folder says "no such checkpoint folder"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pipelines_data import ssv2_train_val_shards

REPO = Path(__file__).resolve().parents[2]


def run(*cmd: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    # 4 classes x 2 videos: 8 training samples.
    return ssv2_train_val_shards(tmp_path_factory.mktemp("arith"), videos_per_class=2)


def test_an_epoch_shorter_than_update_freq_fails_before_ray(shards, tmp_path):
    # 8 samples / 2 workers / batch 2 = 2 batches per rank; total 16 = batch 2 x 2 workers x update_freq 4.
    out = run(str(REPO / "workflows" / "train_ssv2.py"), "--shards", str(shards), "--val-shards", str(shards),
              "--preset", "tiny", "--num-workers", "2", "--batch-size", "2", "--total-batch-size", "16",
              "--storage-path", str(tmp_path / "ray"), "--run-name", "arith",
              env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train_ssv2.py: error:"), out.stderr[-2000:]
    assert "2 batch(es) per rank" in lines[0] and "the 4 accumulated per optimizer step" in lines[0], lines[0]
    assert "--total-batch-size" in lines[0]
    assert not (tmp_path / "ray").exists()  # nothing started, nothing written


def test_enough_samples_pass_the_arithmetic(shards):
    from workflows.training.command import config_from_args
    from workflows.training.preflight import check_batch_arithmetic

    cfg = config_from_args("ssv2", ["--shards", str(shards), "--val-shards", str(shards), "--preset", "tiny",
                                    "--num-workers", "2", "--batch-size", "2", "--total-batch-size", "8"])
    assert cfg.update_freq == 2
    check_batch_arithmetic(cfg, 8)  # 2 batches per rank, 2 per step: one step per epoch


def test_a_local_model_path_that_is_no_folder(tmp_path, capsys):
    from workflows import predict

    video = tmp_path / "clip.webm"
    video.write_bytes(b"not read")
    assert predict.main([str(video), "--model", str(tmp_path / "no" / "such" / "ckpt")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cast-predict: ")]
    assert len(lines) == 1 and "no such checkpoint folder" in lines[0], lines
    assert "artifact" not in lines[0].lower()
