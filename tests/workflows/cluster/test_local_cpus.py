"""A local Ray too small for a job's actors is refused before Ray starts, with one line and exit 2: the
model replicas of batch inference (plus a CPU for decoding), an ablation trial's Train worker, a
preprocessing decode task. No Ray is started by these tests."""

from __future__ import annotations

import pytest

from workflows.cluster.ray_connect import local_cpus, too_few_cpus


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _one_line_error(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{prog}: error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("flags, need", [([], 2), (["--num-replicas", "2"], 3), (["--min-replicas", "3"], 4)])
def test_batch_infer_refuses_a_local_ray_without_a_cpu_for_decoding(tmp_path, capsys, flags, need):
    import ray

    from workflows.batch_infer import main

    (tmp_path / "model").mkdir()  # never read: the check comes before the model is resolved
    (tmp_path / "videos").mkdir()
    given = need - 1
    argv = ["--model", str(tmp_path / "model"), "--input", str(tmp_path / "videos"), "--out", str(tmp_path / "out"),
            "--num-cpus", str(given), *flags]
    assert main(argv) == 2
    err = _one_line_error(capsys, "cast-batch-infer")
    assert f"needs at least {need} CPUs" in err and f"--num-cpus {given} given" in err
    assert "for decoding" in err
    assert not (tmp_path / "out").exists() and not ray.is_initialized()


def test_batch_infer_arithmetic_passes_enough_cpus(tmp_path):
    from workflows.inference.config import InferConfig
    from workflows.inference.job import check_local_cpus

    (tmp_path / "model").mkdir()
    cfg = InferConfig(model=str(tmp_path / "model"), input=str(tmp_path), out=str(tmp_path / "out"),
                      num_replicas=2)
    check_local_cpus(cfg, 3)  # two replicas and one decode task: runs


def test_reproduce_refuses_a_local_ray_smaller_than_one_trial(capsys):
    from workflows.reproduce import main

    assert main(["--num-cpus", "1", "--cpus-per-trial", "2"]) == 2
    err = _one_line_error(capsys, "cast-reproduce")
    assert "needs at least 2 CPUs" in err and "--cpus-per-trial 2" in err and "--num-cpus 1 given" in err


def test_preprocess_refuses_a_local_ray_without_cpus(tmp_path, capsys):
    from workflows.preprocess import main

    (tmp_path / "videos").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "labels.json").write_text("{}")
    assert main(["--dataset", "ssv2", "--videos", str(tmp_path / "videos"), "--annotations", str(tmp_path / "labels"),
                 "--split", "train", "--out", str(tmp_path / "out"), "--num-cpus", "0"]) == 2
    err = _one_line_error(capsys, "cast-preprocess")
    assert "needs at least 1 CPUs" in err and "--num-cpus 0 given" in err


def test_joining_a_cluster_is_not_checked(monkeypatch):
    # A cluster's size is the cluster's (an autoscaler may add nodes); --num-cpus is ignored there.
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert local_cpus(1) is None and too_few_cpus(1, 5, "anything") is None
    monkeypatch.delenv("RAY_ADDRESS")
    assert local_cpus(4) == 4 and too_few_cpus(4, 5, "x") and too_few_cpus(5, 5, "x") is None
