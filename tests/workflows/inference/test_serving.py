"""The registered pyfunc serves videos: a tiny CAST registered as cast-ssv2 (SQLite store), served by a real
``mlflow models serve`` process, answers a posted video file exactly as batch inference does."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.schema import REJECT_REASONS
from workflows.tracking import store as tracking
from workflows.inference.config import InferConfig
from workflows.inference.job import plan_job, run_job
from workflows.inference.pyfunc import read_videos

from tests.support.registered import NAME, URI, data, registered, store  # noqa: F401 (module fixtures)

PORT = 5217

@pytest.fixture(scope="module")
def videos(data, tmp_path_factory) -> list[Path]:
    """Two of the dataset's videos in a folder of their own (the batch job's input)."""
    folder = tmp_path_factory.mktemp("inbox")
    src = sorted(Path(data["videos"]).rglob("*.webm"))[:2]
    for p in src:
        (folder / p.name).write_bytes(p.read_bytes())
    return sorted(folder.iterdir())


@pytest.fixture(scope="module")
def batch(registered, videos, tmp_path_factory, local_ray) -> dict[str, dict]:
    """Batch inference (the Ray Data job) on the same videos: source path -> its prediction row."""
    out = tmp_path_factory.mktemp("batch")
    run_job(plan_job(InferConfig(model=URI, input=str(videos[0].parent), out=str(out), evaluate=False)))
    rows = pq.read_table(out / "predictions").to_pylist()
    return {r["path"]: r for r in rows}


@pytest.fixture(scope="module")
def server(registered, store):
    # The server runs `uvicorn` from PATH: the venv of this interpreter first.
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", URI, "--env-manager", "local",
           "-p", str(PORT), "-h", "127.0.0.1"]
    log = open(store / "server.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 150
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited {proc.returncode}: "
                                   f"{(store / 'server.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/ping", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                if time.time() > deadline:
                    raise RuntimeError("the model server did not answer /ping in 150 s")
                time.sleep(1)
        yield f"http://127.0.0.1:{PORT}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def post(url: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def assert_same(served: dict, batch_row: dict) -> None:
    assert served["top_ids"] == batch_row["top_ids"]
    assert served["top_names"] == batch_row["top_names"]
    np.testing.assert_allclose(served["top_probs"], batch_row["top_probs"], rtol=1e-5, atol=1e-6)
    assert served["reason"] == ""


def test_a_posted_video_gets_the_batch_answer(server, videos, batch):
    body = {"dataframe_split": {"columns": ["video"],
                                "data": [[base64.b64encode(v.read_bytes()).decode()] for v in videos]}}
    status, answer = post(server, body)
    assert status == 200, answer
    rows = answer["predictions"]
    assert len(rows) == len(videos)
    for row, v in zip(rows, videos):
        assert len(row["top_ids"]) == 5 and row["top_probs"] == sorted(row["top_probs"], reverse=True)
        assert_same(row, batch[str(v.resolve())])


def test_a_path_the_server_can_read_and_a_broken_video(server, videos, batch, tmp_path):
    status, answer = post(server, {"dataframe_split": {"columns": ["path"], "data": [[str(videos[1])]]}})
    assert status == 200, answer
    assert_same(answer["predictions"][0], batch[str(videos[1].resolve())])
    junk = base64.b64encode(b"\x1a\x45\xdf\xa3 not really a webm" * 20).decode()
    status, answer = post(server, {"dataframe_split": {"columns": ["video"], "data": [[junk]]}})
    assert status == 200, answer
    row = answer["predictions"][0]
    assert row["reason"] in REJECT_REASONS and row["top_ids"] == [] and row["detail"]
    status, answer = post(server, {"dataframe_split": {"columns": ["path"], "data": [[str(tmp_path / "gone.mp4")]]}})
    assert status == 200 and answer["predictions"][0]["reason"] == "missing", answer
    status, answer = post(server, {"dataframe_split": {"columns": ["frames"], "data": [[1.0]]}})
    assert status == 400, answer


def test_a_mixed_batch_over_http_answers_each_video_in_its_place(server, videos, batch, tmp_path):
    """Good videos between bad ones (garbage, zero bytes, cut in half): 200, one row per video in order,
    the good ones answered as batch inference does, the bad ones with their reason and no prediction."""
    good = videos[0].read_bytes()
    clips = [good, b"\x00\xffgarbage" * 50, b"", good[: len(good) // 2], videos[1].read_bytes()]
    body = {"dataframe_split": {"columns": ["video"], "data": [[base64.b64encode(c).decode()] for c in clips]}}
    status, answer = post(server, body)
    assert status == 200, answer
    rows = answer["predictions"]
    assert [r["reason"] for r in rows] == ["", "undecodable", "empty", "truncated", ""]
    assert all(r["top_ids"] == [] and r["detail"] for r in rows[1:4])
    assert_same(rows[0], batch[str(videos[0].resolve())])
    assert_same(rows[4], batch[str(videos[1].resolve())])


def test_the_logged_model_says_what_it_takes_and_carries_the_project_packages_whole(registered, store, tmp_path):
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=URI, dst_path=str(tmp_path)))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [(c["name"], c["type"]) for c in inputs] == [("video", "binary"), ("path", "string")]
    outputs = [c["name"] for c in json.loads(mlmodel["signature"]["outputs"])]
    assert outputs == ["video", "top_ids", "top_names", "top_probs", "reason", "detail"]
    example = json.loads((local / mlmodel["saved_input_example_info"]["artifact_path"]).read_text())
    clip = base64.b64decode(example["data"][0][0] if "data" in example else example["dataframe_split"]["data"][0][0])
    assert clip[:4] == b"\x1a\x45\xdf\xa3"  # a real WebM video
    views = mlmodel["flavors"]["python_function"]["config"]["views"]
    assert (views["clips"], views["crops"]) == (2, 3)  # the checkpoint's test views, as batch inference
    # The code is the project's packages, whole, as in the repository (no hand-kept list of files).
    code, repo = local / "code", Path(__file__).resolve().parents[3]
    assert sorted(p.name for p in code.iterdir()) == ["cast_model", "pipelines", "workflows"]
    for package in ("cast_model", "pipelines", "workflows"):
        shipped = {p.relative_to(code).as_posix() for p in (code / package).rglob("*") if p.is_file()}
        assert shipped == {p.relative_to(repo).as_posix() for p in (repo / package).rglob("*.py")}
    assert (code / "workflows" / "inference" / "pyfunc_entry.py").is_file()


def test_read_videos_refuses_ambiguous_rows():
    import pandas as pd

    with pytest.raises(ValueError, match="exactly one"):
        read_videos(pd.DataFrame({"video": [b"x"], "path": ["/a.webm"]}))
    with pytest.raises(ValueError, match="neither bytes nor base64"):
        read_videos(pd.DataFrame({"video": ["not base64 !"]}))
    assert read_videos(pd.DataFrame({"video": [b"abc"]})) == ([b"abc"], ["video-0"])
    assert read_videos(pd.DataFrame({"path": ["/no/such.webm"]})) == (["/no/such.webm"], ["/no/such.webm"])
    # a URI is read per video, where a bad one is a reject row (tests/reliability/test_serving.py)
    assert read_videos(pd.DataFrame({"path": ["s3://b/no.webm"]})) == (["s3://b/no.webm"], ["s3://b/no.webm"])


def test_metrics_attach_to_the_logged_model_and_the_evaluation_links_its_version(registered, data, tmp_path,
                                                                                  local_ray):
    from workflows.evaluation.report import EVAL_RUN_TAG, evaluate_job
    from workflows.inference.model import version_model_id

    client = tracking.client()
    model_id = version_model_id(client.get_model_version(NAME, registered["version"]))
    assert model_id
    linked = {m.key: m for m in client.get_logged_model(model_id).metrics}
    assert linked["val_top1"].value == 0.5
    plan = plan_job(InferConfig(model=URI, input=data["videos"], out=str(tmp_path / "out"), dataset="ssv2",
                                annotations=data["annotations"], split="train"))
    assert plan.model.model_id == model_id
    run_job(plan, log=lambda _: None)
    run_id = evaluate_job(plan, log=lambda _: None)["run_id"]
    assert client.get_model_version(NAME, registered["version"]).tags[EVAL_RUN_TAG] == run_id
    by_run = {(m.run_id, m.key) for m in client.get_logged_model(model_id).metrics}
    assert (run_id, "top1") in by_run and (run_id, "samples") in by_run
