"""Batch inference under hostile input and concurrency (issue 11): odd paths, absurd headers, garbage
or truncated shards and indices are rejects with a reason beside the good videos; one writer per --out;
kill -9 then a rerun loses and duplicates nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cast_model import CAST, CASTConfig, save_checkpoint
from pipelines.datasets import read_dataset
from pipelines.lease import OutputLease
from tests.support.pipelines_data import make_dataset, shards_without_ray
from tests.support.hostile import add_hostile_videos, ray_address, stopped
from workflows.batch_infer import main as batch_infer_main
from workflows.inference.config import InferConfig
from workflows.inference.job import plan_job, run_job
from workflows.inference.store import OutputStore
from workflows.stamp_checkpoint import recipe_contract

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A tiny model folder, a video folder with hostile entries and a shard folder with broken shards."""
    root = tmp_path_factory.mktemp("infer")
    d = make_dataset("ssv2", root, videos_per_class=1)
    labels = read_dataset("ssv2", d["videos"], d["annotations"], "train").label_map
    torch.manual_seed(0)
    model = save_checkpoint(root / "model", CAST(CASTConfig.preset("tiny", num_classes=len(labels["label"]))), labels,
                            extra=recipe_contract("ssv2", labels, test_clips=1))
    folder = root / "videos"
    shutil.copytree(d["videos"], folder)
    good_files = {str(p) for p in folder.glob("*.webm")}
    bad_files = add_hostile_videos(folder, Path(next(iter(good_files))).read_bytes())
    shards = root / "shards"
    shards_without_ray("ssv2", d["videos"], d["annotations"], "train", shards, per_shard=2, codec="mjpeg")
    return {"model": str(model), "folder": folder, "good_files": good_files, "bad_files": bad_files,
            "shards": shards, "dataset": d}


def break_shards(shards: Path) -> tuple[set[str], dict[str, str], set[str]]:
    """Garbage .idx in shard 1, shard 2 cut in half, shard 3 without .idx (shard 0 stays good). Returns the source ids that
    stay predictable, the expected whole-shard rejects {tar: reason} and the ids of the cut shard."""
    from pipelines.manifest import read_manifest

    m = read_manifest(str(shards), "train").to_pandas()
    by_shard = m.groupby("shard")["source_id"].apply(list).to_dict()
    names = sorted(by_shard)
    (shards / names[1]).with_suffix(".idx").write_bytes(b"\x00\xffgarbage\n1 2 3")
    cut = shards / names[2]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (shards / names[3]).with_suffix(".idx").unlink()
    good = {sid for n in names if n not in names[1:4] for sid in by_shard[n]}
    rejects = {str(shards / names[1]): "bad_index", str(shards / names[3]): "bad_index"}
    return good, rejects, set(by_shard[names[2]])


def outcome(out: Path) -> tuple[list[str], dict[str, str]]:
    store = OutputStore(str(out))
    t = store.read_predictions(["source_id"])
    r = store.read_rejects()
    return ([] if t is None else t["source_id"].to_pylist(),
            {} if r is None else dict(zip(r["source_id"].to_pylist(), r["reason"].to_pylist())))


def cfg(world, inp, out, **kw) -> InferConfig:
    return InferConfig(model=world["model"], input=str(inp), out=str(out), batch_size=4, flush_rows=4,
                       test_clips=1, test_crops=1, evaluate=False, progress_every_s=0, **kw)


@pytest.mark.ray
def test_hostile_folder_and_broken_shards_are_rejects_beside_good_predictions(world, tmp_path, local_ray):
    result = run_job(plan_job(cfg(world, world["folder"], tmp_path / "a")))
    predicted, rejects = outcome(tmp_path / "a")
    assert sorted(predicted) == sorted(world["good_files"]) and rejects == world["bad_files"]
    assert result.rejected == len(world["bad_files"])

    shards = tmp_path / "shards"
    shutil.copytree(world["shards"], shards)
    good, expected_rejects, cut = break_shards(shards)
    run_job(plan_job(cfg(world, shards, tmp_path / "b")))
    predicted, rejects = outcome(tmp_path / "b")
    assert len(predicted) == len(set(predicted))
    assert good <= set(predicted) and set(predicted) <= good | cut
    assert {k: v for k, v in rejects.items() if k in expected_rejects} == expected_rejects
    truncated = {k for k, v in rejects.items() if v == "truncated"}
    # each sample of the cut shard once: predicted (before the cut) or a "truncated" reject ("<tar>#<n>":
    # its id was in the JSON member that the cut removed)
    assert truncated and len(truncated) + len(set(predicted) & cut) == len(cut)


def test_a_second_writer_into_one_out_exits_2_naming_the_holder(world, tmp_path, capsys):
    holder = OutputLease(str(tmp_path), "batch_infer").acquire()
    try:
        assert batch_infer_main(["--model", world["model"], "--input", str(world["folder"]), "--out",
                                 str(tmp_path), "--no-eval"]) == 2
    finally:
        holder.release()
    err = capsys.readouterr().err
    assert "is in use by batch_infer (host" in err and f"pid {os.getpid()}" in err


@pytest.mark.ray
@pytest.mark.slow
def test_kill_9_mid_job_then_rerun_loses_and_duplicates_nothing(world, tmp_path, local_ray):
    out = tmp_path / "out"
    # The job joins this module's Ray (no start-up of its own); kill -9 of its process group kills the
    # driver, and Ray ends the tasks and actors of a dead driver.
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ADDRESS=ray_address())
    cmd = [sys.executable, str(REPO / "workflows" / "batch_infer.py"), "--model", world["model"], "--input",
           str(world["folder"]), "--out", str(out), "--no-eval", "--test-clips", "1", "--test-crops", "1",
           "--batch-size", "2", "--flush-rows", "2"]
    log = open(tmp_path / "job.log", "w")
    job = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log, stderr=log)
    try:
        deadline = time.time() + 180
        while (not list((out / "predictions").glob("part-*.parquet")) and time.time() < deadline
               and job.poll() is None):
            time.sleep(0.1)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        log.close()
    before, _ = outcome(out)
    assert 0 < len(before) < len(world["good_files"]), (tmp_path / "job.log").read_text()[-3000:]
    said = []
    run_job(plan_job(cfg(world, world["folder"], out)), log=said.append)
    predicted, rejects = outcome(out)
    assert sorted(predicted) == sorted(world["good_files"]) and rejects == world["bad_files"]
    assert any("recovered the lease of a dead job, batch_infer" in s for s in said)


# A driver that runs the job as the CLI does and stops itself (SIGSTOP) right after the part holding its
# last prediction is written, before that flush's rejects are: a window of milliseconds that watching
# files from outside cannot hit. ``write_part`` is wrapped, not replaced: the real write runs first.
_STOP_AFTER_LAST_PART = """
import os, signal
import ray
from workflows.inference.config import InferConfig
from workflows.inference.job import plan_job, run_job
from workflows.inference.store import OutputStore
write_part = OutputStore.write_part
def stop_after_the_last(self, *args, **kwargs):
    name = write_part(self, *args, **kwargs)
    if self.read_predictions(["source_id"]).num_rows == {good}:
        os.kill(os.getpid(), signal.SIGSTOP)
    return name
OutputStore.write_part = stop_after_the_last
ray.init(address={address!r}, log_to_driver=False)
run_job(plan_job(InferConfig(**{config!r})))
"""


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("point", ["lease_taken", "last_part_written"])
def test_kill_9_before_the_first_part_or_after_the_last_loses_and_duplicates_nothing(world, tmp_path, local_ray,
                                                                                   point):
    """kill -9 of the job's process group (1) once it holds the lease, before any part is written,
    (2) after the part with its last prediction, before that flush's rejects; the rerun completes."""
    from pipelines.lease import LEASE_DIR

    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ADDRESS=ray_address())
    if point == "lease_taken":
        cmd = [sys.executable, str(REPO / "workflows" / "batch_infer.py"), "--model", world["model"], "--input",
               str(world["folder"]), "--out", str(out), "--no-eval", "--test-clips", "1", "--test-crops", "1",
               "--batch-size", "2", "--flush-rows", "2"]
    else:
        config = {"model": world["model"], "input": str(world["folder"]), "out": str(out), "batch_size": 2,
                  "flush_rows": 2, "test_clips": 1, "test_crops": 1, "evaluate": False, "progress_every_s": 0}
        cmd = [sys.executable, "-c", _STOP_AFTER_LAST_PART.format(address=ray_address(),
                                                                  good=len(world["good_files"]), config=config)]
    log = open(tmp_path / "job.log", "w")
    job = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log, stderr=log)
    try:
        deadline = time.time() + 180
        if point == "lease_taken":
            while not list((out / LEASE_DIR).glob("*.json")) and time.time() < deadline and job.poll() is None:
                time.sleep(0.01)
            os.killpg(job.pid, signal.SIGSTOP)  # the model replicas need seconds more before a first part
            assert job.poll() is None and list((out / LEASE_DIR).glob("*.json")), "no lease in 180 s"
            assert outcome(out)[0] == [], "a part was written before the freeze"
        else:
            while not stopped(job.pid) and time.time() < deadline and job.poll() is None:
                time.sleep(0.05)
            assert job.poll() is None and stopped(job.pid), (tmp_path / "job.log").read_text()[-3000:]
            assert sorted(outcome(out)[0]) == sorted(world["good_files"])
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        log.close()
    said = []
    run_job(plan_job(cfg(world, world["folder"], out)), log=said.append)
    predicted, rejects = outcome(out)
    assert sorted(predicted) == sorted(world["good_files"]) and rejects == world["bad_files"]
    assert any("recovered the lease of a dead job, batch_infer" in s for s in said)
