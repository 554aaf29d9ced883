"""The cluster rules without a cluster: which paths every node sees, the MLflow preflight, the batch
inference device and actor pool, storage-path URIs. (End to end on a real stack: tests/e2e/test_cluster.py.)"""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import pytest

from workflows.tracking import store as tracking
from workflows.inference.config import InferConfig, InferConfigError
from workflows.inference.job import choose_device, pool_size
from workflows.cluster.ray_connect import cluster_address
from workflows.cluster.shared_storage import cluster_path_problems


def test_local_paths_need_a_shared_mount_on_a_multi_node_cluster(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    monkeypatch.setenv("CAST_SHARED_DIRS", str(shared))
    paths = {"--out": str(tmp_path / "elsewhere"), "--storage-path": str(shared / "ray"),
             "--input": "s3://bucket/in"}
    assert cluster_path_problems(paths, nodes=1) == []
    problems = cluster_path_problems(paths, nodes=3, tracking_uri="sqlite:////x/mlflow.db")
    assert len(problems) == 2
    assert problems[0].startswith(f"--out {tmp_path / 'elsewhere'} is a local folder") and "CAST_SHARED_DIRS" in problems[0]
    assert "MLFLOW_TRACKING_URI sqlite:////x/mlflow.db" in problems[1] and "tracking server" in problems[1]


def test_dali_inputs_refuse_uris_everywhere():
    problems = cluster_path_problems({"--shards": "s3://b/shards"}, nodes=1, local_only=("--shards",))
    assert len(problems) == 1 and "DALI" in problems[0]


def test_sqlite_artifacts_live_beside_the_database(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ARTIFACT_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}")
    assert tracking.artifact_root() == (tmp_path / "db" / "artifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.artifact_root() is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Refuse(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.send_response(401)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_preflight_names_an_unreachable_server_and_refused_credentials(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(tracking.TrackingUnavailable, match="unreachable"):
        tracking.preflight(timeout_s=2)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "cast")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(tracking.TrackingUnavailable, match="refused the credentials"):
            tracking.preflight(timeout_s=2)
    finally:
        server.shutdown()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/never.db")
    tracking.preflight()  # nothing to ask


def test_job_api_address_is_not_joined(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8285")
    monkeypatch.delenv("CAST_RAY_GCS_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="ray job submit"):
        cluster_address()
    monkeypatch.setenv("CAST_RAY_GCS_ADDRESS", "127.0.0.1:6420")
    assert cluster_address() == "127.0.0.1:6420"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # inside a job: the GCS address
    assert cluster_address() == "10.0.0.1:6379"


def _cfg(tmp_path: Path, **kw) -> InferConfig:
    return InferConfig(model="models:/m@champion", input=str(tmp_path), out=str(tmp_path / "o"), **kw)


def test_device_and_actor_pool(tmp_path):
    logged: list[str] = []
    assert choose_device(_cfg(tmp_path), 0, logged.append) == "cpu" and "running on CPU" in logged[0]
    assert choose_device(_cfg(tmp_path), 2, logged.append) == "gpu"
    assert choose_device(_cfg(tmp_path, device="gpu"), 0, logged.append) == "gpu"  # waits for the autoscaler
    assert pool_size(_cfg(tmp_path, device="gpu"), "gpu", 0) == (1, 1)
    assert pool_size(_cfg(tmp_path, gpus_per_replica=0.5), "gpu", 2) == (1, 4)
    assert pool_size(_cfg(tmp_path, min_replicas=2, max_replicas=8), "gpu", 0) == (2, 8)
    assert pool_size(_cfg(tmp_path, num_replicas=3), "cpu", 0) == (3, 3)
    with pytest.raises(InferConfigError, match="min_replicas <= max_replicas"):
        _cfg(tmp_path, min_replicas=3, max_replicas=2)
    with pytest.raises(InferConfigError, match="gpus_per_replica"):
        _cfg(tmp_path, gpus_per_replica=0)


def test_training_storage_path_may_be_a_uri():
    from workflows.training.config import TrainConfig, TrainConfigError, load_recipe, validate

    base = load_recipe("ssv2", None) | dict(dataset="ssv2", shards="/nonexistent", val_shards="/nonexistent",
                                           run_name="r")
    with pytest.raises(TrainConfigError) as err:
        validate(TrainConfig.from_dict(base | dict(storage_path="s3://bucket/ray")))
    assert "storage_path" not in str(err.value)  # only the missing shards
    with pytest.raises(TrainConfigError, match="storage_path must be an absolute path or a URI"):
        validate(TrainConfig.from_dict(base | dict(storage_path="relative/ray")))
    with pytest.raises(TrainConfigError, match="DALI loaders read local files"):
        validate(TrainConfig.from_dict(base | dict(shards="s3://bucket/shards", storage_path="/abs")))
