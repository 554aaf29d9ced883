"""End to end on the local cluster stack (infra/local/cluster, what `make cluster-up` starts): Postgres,
an S3-API server, MLflow with logins on both, and a Ray cluster of a head and three worker nodes.

One stack for the module, on ports of its own (a developer's `make cluster-up` stack is left alone):

- a wrong MLflow password fails in seconds, before Ray, with one line;
- preprocessing runs with `ray job submit` (train shards on the stack's shared folder, validation to s3://);
- training runs with `ray job submit`: 2 workers on two different nodes, checkpoints on s3://; one worker
  node's raylet is killed mid-training and the job still ends with its full step count, in one MLflow run;
  the model is registered through the authenticated server (champion alias) with its files in S3;
- batch inference with `ray job submit` from models:/cast-ssv2@champion reads shards from s3:// and
  writes predictions to s3://;
- infra/local's scheduled-inference script runs against the stack; its second run adds nothing;
- a stopped MLflow server fails training and batch inference in seconds, before Ray, losing nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.pipelines_data import make_dataset

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
BIN = Path(PY).parent
# Ports of the test's own stack (not cluster-up's defaults, nor Ray's or MLflow's).
PORTS = {"CAST_RAY_PORT": "6440", "CAST_RAY_DASHBOARD_PORT": "8295", "CAST_PG_PORT": "5452",
         "CAST_MLFLOW_PORT": "5070", "CAST_S3_PORT": "5071"}
STEPS = 6  # 16 training clips, 2 workers x batch 4, 3 epochs
RUN = "cluster-e2e"


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            out[key] = value
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The stack, started and stopped by the script `make cluster-up`/`cluster-down` run."""
    cluster_dir = tmp_path_factory.mktemp("cluster")
    env = dict(os.environ, PYTHONPATH=str(REPO), CAST_CLUSTER_DIR=str(cluster_dir), **PORTS,
               CAST_CLUSTER_RUN_DIR=f"/tmp/cast-cluster-test-{PORTS['CAST_RAY_PORT']}")
    for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACT_ROOT"):
        env.pop(var, None)
    script = [PY, str(REPO / "infra/local/cluster/stack.py")]
    try:
        up = subprocess.run([*script, "up"], env=env, capture_output=True, text=True, timeout=420)
        if up.returncode:
            pytest.fail(f"cluster-up failed (exit {up.returncode}):\n{up.stdout}\n{up.stderr}")
        client = read_env(cluster_dir / "env.sh")
        yield {"dir": cluster_dir, "client": client, "env": dict(env, **client),
               "state": json.loads((cluster_dir / "state.json").read_text())}
    finally:
        subprocess.run([*script, "down"], env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def data(stack):
    """Synthetic SSV2 videos on the stack's shared folder (every node sees it)."""
    shared = Path(stack["client"]["CAST_SHARED_DIRS"])
    return make_dataset("ssv2", shared / "native", num_classes=4, videos_per_class=4)


@pytest.fixture
def mlflow_env(stack, monkeypatch):
    """This process as a client of the stack's MLflow server and object store."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_ENDPOINT_URL",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, stack["client"][key])
    monkeypatch.delenv("MLFLOW_ARTIFACT_ROOT", raising=False)
    import mlflow

    yield stack["client"]
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def submit(stack, entrypoint: list[str], *, wait: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """``ray job submit --working-dir <repo> -- ENTRYPOINT`` (the CLI joins the words into a shell line)."""
    cmd = [str(BIN / "ray"), "job", "submit", "--working-dir", str(REPO)]
    if not wait:
        cmd.append("--no-wait")
    result = subprocess.run([*cmd, "--", *entrypoint], env=stack["env"], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout)
    # Each node has its own Ray temp folder: with one shared folder every node's log monitor forwarded
    # every worker's log lines ("(Actor pid=N, ip=…) …"), so each stood in the job's output once per node.
    forwarded = [line for line in result.stdout.splitlines() if re.match(r"\(\S+ pid=\d+", line)]
    assert not {line for line in forwarded if forwarded.count(line) > 1}, result.stdout[-4000:]
    return result


def ray_cli(stack, *args: str) -> list[dict]:
    out = subprocess.run([str(BIN / "ray"), *args, "--format", "json"], env=stack["env"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def s3_keys(prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3")
    bucket, _, key = prefix.removeprefix("s3://").partition("/")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def train_cmd(stack, shards: Path) -> list[str]:
    return ["python", "workflows/train_ssv2.py", "--shards", str(shards / "train"), "--val-shards",
            str(shards / "train"), "--val-split", "train", "--preset", "tiny", "--run-name", RUN, "--num-workers", "2",
            "--batch-size", "4", "--total-batch-size", "8", "--epochs", "3", "--checkpoint-every", "1",
            "--loader-threads", "1", "--no-freeze-experts", "--resource-timeout-s", "120",
            "--storage-path", f"s3://{stack['client']['CAST_BUCKET']}/ray_results"]


def test_wrong_password_fails_fast(stack, data):
    env = dict(stack["env"], MLFLOW_TRACKING_PASSWORD="not-the-password")
    started = time.monotonic()
    out = subprocess.run([PY, "workflows/batch_infer.py", "--model", "models:/cast-ssv2@champion", "--input",
                          data["videos"], "--out", str(stack["dir"] / "never")], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "refused the credentials" in out.stderr and "MLFLOW_TRACKING_PASSWORD" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60  # a Python start-up and one request, no Ray
    assert not (stack["dir"] / "never").exists()


def test_local_path_refused_on_a_multi_node_cluster(stack, data, tmp_path):
    """Run as a driver on the cluster (env.sh's CAST_RAY_GCS_ADDRESS): an output only one node sees."""
    out = subprocess.run([PY, "workflows/preprocess.py", "--dataset", "ssv2", "--videos", data["videos"],
                          "--annotations", data["annotations"], "--split", "train", "--out", str(tmp_path / "o")],
                         env=stack["env"], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--out" in out.stderr and "CAST_SHARED_DIRS" in out.stderr and "nodes" in out.stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def shards(stack, data) -> Path:
    shared = Path(stack["client"]["CAST_SHARED_DIRS"])
    out = shared / "shards"
    bucket = stack["client"]["CAST_BUCKET"]
    base = ["python", "workflows/preprocess.py", "--dataset", "ssv2", "--videos", data["videos"],
            "--annotations", data["annotations"], "--max-samples-per-shard", "4", "--codec", "vp9",
            "--short-side", "40", "--progress-every", "5"]
    # Training validates on its own split (the tiny run checks the cluster, not the model), so the
    # validation split is written once, to the bucket, where batch inference reads it.
    steps = [base + ["--split", "train", "--out", str(out / "train")],
             base + ["--split", "validation", "--out", f"s3://{bucket}/shards/validation"]]
    # One job each: a driver's ray.shutdown() lets Ray delete the job's unpacked working_dir, so a
    # second command in the same job would find no workflows/ (seen with Ray 2.60).
    for step in steps:
        result = submit(stack, step)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return out


def test_preprocess_with_ray_job_submit(stack, shards, mlflow_env):
    assert len(list((shards / "train").glob("train-*.tar"))) == 4
    assert (shards / "train" / "manifest.parquet").is_file()
    keys = s3_keys(f"s3://{stack['client']['CAST_BUCKET']}/shards/validation/")
    assert any(k.endswith("manifest.parquet") for k in keys) and any(k.endswith(".tar") for k in keys)


def raylet_pid(stack, node_id: str) -> int:
    """The raylet of a worker node, found by the node's custom resource in its command line."""
    node = next(n for n in ray_cli(stack, "list", "nodes", "--detail") if n["node_id"] == node_id)
    tag = next(r for r in node["resources_total"] if r.startswith("cast_worker_"))
    marker = f"CAST_CLUSTER_STACK={stack['state']['run_dir']}\0".encode()
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and marker in (proc / "environ").read_bytes()
                    and (proc / "comm").read_text().strip() == "raylet"
                    and f"{tag},".encode() in (proc / "cmdline").read_bytes()):
                return int(proc.name)
        except OSError:
            continue
    raise AssertionError(f"no raylet with resource {tag}")


def job_status(stack, job_id: str) -> str:
    out = subprocess.run([str(BIN / "ray"), "job", "status", job_id], env=stack["env"], capture_output=True,
                         text=True, timeout=60)
    # "Job 'ID' succeeded" / "failed" / "was stopped" once it ended, "... is currently running" before.
    text = out.stdout + out.stderr
    for word in ("succeeded", "failed", "stopped", "running", "pending"):
        if re.search(rf"{re.escape(job_id)}'?:? .*\b{word}\b", text, re.IGNORECASE):
            return {"succeeded": "SUCCEEDED", "failed": "FAILED", "stopped": "STOPPED", "running": "RUNNING",
                    "pending": "PENDING"}[word]
    return "UNKNOWN"


def job_logs(stack, job_id: str) -> str:
    out = subprocess.run([str(BIN / "ray"), "job", "logs", job_id], env=stack["env"], capture_output=True,
                         text=True, timeout=60)
    return out.stdout + out.stderr


def last_step(client, run_id: str) -> int:
    """The last optimizer step rank 0 logged (step metrics are logged every step)."""
    return max((m.step for m in client.get_metric_history(run_id, "train_loss")), default=0)


def server_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2):
            return True
    except OSError:
        return False


def test_train_survives_a_lost_node_and_registers(stack, shards, mlflow_env):
    from workflows.tracking import store as tracking
    from workflows.training.mlflow_run import RUN_NAME_TAG

    submitted = submit(stack, train_cmd(stack, shards), wait=False, timeout=120)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = re.search(r"raysubmit_\w+", submitted.stdout + submitted.stderr).group(0)

    # Wait until both ranks run and rank 0 has logged a step, then kill the node of one of them.
    client, deadline, nodes, run, actors = tracking.client(), time.monotonic() + 420, set(), None, []
    while time.monotonic() < deadline:
        actors = [a for a in ray_cli(stack, "list", "actors", "--filter", "state=ALIVE", "--limit", "1000")
                  if a["class_name"].endswith("RayTrainWorker")]
        nodes = {a["node_id"] for a in actors}
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string=f"tags.`{RUN_NAME_TAG}` = '{RUN}'")
        run = runs[0] if runs else None
        if len(actors) == 2 and run is not None and "train_loss" in run.data.metrics:  # step 1 is done
            break
        assert job_status(stack, job_id) in ("PENDING", "RUNNING"), \
            f"training ended before the node kill:\n{job_logs(stack, job_id)[-5000:]}"
        time.sleep(1)
    else:
        pytest.fail(f"training did not reach step 1 on two workers in 420s (actors {[a['class_name'] for a in actors]},"
                    f" run {run and run.data.metrics}):\n{job_logs(stack, job_id)[-5000:]}")
    assert len(nodes) == 2, f"the two training workers share a node: {nodes}"
    assert last_step(client, run.info.run_id) < STEPS, "training finished before the node could be killed"
    os.kill(raylet_pid(stack, sorted(nodes)[0]), signal.SIGKILL)

    deadline = time.monotonic() + 420
    while job_status(stack, job_id) in ("PENDING", "RUNNING", "UNKNOWN") and time.monotonic() < deadline:
        time.sleep(3)
    assert job_status(stack, job_id) == "SUCCEEDED", job_logs(stack, job_id)[-5000:]

    runs = client.search_runs([run.info.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{RUN}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    done = runs[0]
    assert last_step(client, done.info.run_id) == STEPS
    assert s3_keys(f"s3://{stack['client']['CAST_BUCKET']}/ray_results/{RUN}/final_step{STEPS:08d}")
    assert "cast.resumed_from_step" in done.data.tags  # the worker group restarted from a checkpoint
    assert s3_keys(f"s3://{stack['client']['CAST_BUCKET']}/ray_results/{RUN}/checkpoint_")
    champion = client.get_model_version_by_alias("cast-ssv2", "champion")
    assert champion.run_id == done.info.run_id
    # Model files went through the server into the bucket, not to a local folder.
    assert champion.source.startswith(("models:/", "mlflow-artifacts:"))
    assert s3_keys(f"s3://{stack['client']['CAST_BUCKET']}/mlflow/")
    alive = [n for n in ray_cli(stack, "list", "nodes") if n["state"] == "ALIVE"]
    assert len(alive) == 3  # head + the two surviving worker nodes


def predictions(prefix: str) -> "pyarrow.Table":
    import pyarrow.dataset as pads

    return pads.dataset(prefix.removeprefix("s3://") + "/predictions", format="parquet",
                        filesystem=__import__("pyarrow.fs", fromlist=["S3FileSystem"]).FileSystem.from_uri(prefix)[0]
                        ).to_table()


def test_batch_inference_to_s3(stack, shards, mlflow_env):
    bucket = stack["client"]["CAST_BUCKET"]
    out = f"s3://{bucket}/predictions/e2e"
    result = submit(stack, ["python", "workflows/batch_infer.py", "--model", "models:/cast-ssv2@champion",
                            # the shards preprocessing wrote to the bucket: input from S3, output to S3
                            "--input", f"s3://{bucket}/shards/validation", "--out", out, "--test-clips", "1",
                            "--test-crops", "1", "--batch-size", "4", "--progress-every", "5"])
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    table = predictions(out)
    assert table.num_rows == 4 and set(table.column("model_name").to_pylist()) == {"cast-ssv2"}


def test_scheduled_inference_script(stack, data, mlflow_env):
    shared = Path(stack["client"]["CAST_SHARED_DIRS"])
    day = shared / "inbox" / "2026-01-02"
    day.mkdir(parents=True)
    for video in sorted(Path(data["videos"]).iterdir())[:3]:
        shutil.copy(video, day / video.name)
    out_root = f"s3://{stack['client']['CAST_BUCKET']}/scheduled"
    env = dict(stack["env"], CAST_INBOX=str(shared / "inbox"), CAST_PREDICTIONS=out_root,
               CAST_LOCK_DIR=str(stack["dir"]), CAST_NUM_CLIPS="1", PYTHON=PY)
    script = [str(REPO / "infra/local/run_scheduled_inference.sh"), "--date", "2026-01-02"]
    first = subprocess.run(script, env=env, capture_output=True, text=True, timeout=420)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    assert predictions(f"{out_root}/2026-01-02").num_rows == 3
    parts = s3_keys(f"{out_root}/2026-01-02/predictions/")
    second = subprocess.run(script, env=env, capture_output=True, text=True, timeout=420)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert '"predicted": 0' in second.stdout and s3_keys(f"{out_root}/2026-01-02/predictions/") == parts


def test_stopped_mlflow_fails_fast_and_loses_nothing(stack, shards, mlflow_env):
    before = s3_keys(f"s3://{stack['client']['CAST_BUCKET']}/")
    os.killpg(stack["state"]["pids"]["mlflow"], signal.SIGTERM)
    deadline = time.monotonic() + 30
    while server_up(stack["client"]["MLFLOW_TRACKING_URI"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    for cmd in ([PY, "workflows/batch_infer.py", "--model", "models:/cast-ssv2@champion", "--input",
                 str(shards / "train"), "--out", f"s3://{stack['client']['CAST_BUCKET']}/predictions/e2e"],
                [PY, *train_cmd(stack, shards)[1:], "--run-name", "never"]):
        started = time.monotonic()
        out = subprocess.run(cmd, env=stack["env"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr[-2000:]
        assert "unreachable" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
        assert time.monotonic() - started < 60
    assert s3_keys(f"s3://{stack['client']['CAST_BUCKET']}/") == before
