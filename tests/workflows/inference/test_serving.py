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
REPO = Path(__file__).resolve().parents[3]


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
    run_job(plan_job(InferConfig(model=URI, input=str(videos[0].parent), out=str(out), eval=False)))
    rows = pq.read_table(out / "predictions").to_pylist()
    return {r["path"]: r for r in rows}


@pytest.fixture(scope="module")
def server(registered, store):
    """`cast-serve` as a user types it: without an activated venv (the venv's bin is not on PATH, so a
    bare `mlflow models serve` would fail with `exec: uvicorn: not found`)."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=path or "/usr/bin:/bin")
    cmd = [sys.executable, str(REPO / "workflows" / "serve.py"), URI, "--port", str(PORT)]
    log = open(store / "server.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 150
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"cast-serve exited {proc.returncode}: "
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


def test_cast_serve_refuses_an_unknown_alias_before_starting(registered, capsys):
    from workflows import serve

    assert serve.main([f"models:/{NAME}@nosuchalias", "--port", str(PORT + 1)]) == 2  # refused before serving
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cast-serve")]
    assert len(err) == 1 and err[0].startswith("cast-serve: error:") and "nosuchalias" in err[0], err


def test_a_request_file_sent_with_curl_as_documented(server, videos, batch, tmp_path):
    """The docs' commands as typed: `cast-request VIDEO > request.json`, then `curl ... -d @request.json`,
    with a clip well over the ~96 KB a command-line argument can carry."""
    big = tmp_path / "big.webm"
    big.write_bytes(videos[0].read_bytes())
    request = tmp_path / "request.json"
    with open(request, "w") as f:
        subprocess.run([sys.executable, str(REPO / "workflows" / "request.py"), str(videos[0]), str(videos[1])],
                       stdout=f, check=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    out = subprocess.run(["curl", "-s", f"{server}/invocations", "-H", "Content-Type: application/json",
                          "-d", f"@{request}"], capture_output=True, text=True, check=True, timeout=120)
    rows = json.loads(out.stdout)["predictions"]
    assert_same(rows[0], batch[str(videos[0].resolve())])
    assert_same(rows[1], batch[str(videos[1].resolve())])
    # The same video padded past 96 KB (trailing bytes after the stream): still one file, still answered.
    big.write_bytes(videos[0].read_bytes() + b"\0" * 200_000)
    with open(request, "w") as f:
        subprocess.run([sys.executable, str(REPO / "workflows" / "request.py"), str(big)],
                       stdout=f, check=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert request.stat().st_size > 200_000
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", f"{server}/invocations",
                          "-H", "Content-Type: application/json", "-d", f"@{request}"],
                         capture_output=True, text=True, check=True, timeout=120)
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200", body
    assert len(json.loads(body)["predictions"]) == 1


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
    # The message says what the model takes and what it was given.
    assert "'video'" in answer["message"] and "'path'" in answer["message"], answer
    assert "frames" in answer["message"], answer


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
