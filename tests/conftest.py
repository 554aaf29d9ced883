"""Shared test configuration.

Markers (see pyproject.toml): ``slow``, ``ray`` (starts a local Ray), ``gpu`` (needs CUDA; skipped
where there is none, which is the only skip the suite has).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

# Two cores on CI: keep torch from oversubscribing when Ray workers share the machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray per test module that asks for it (two CPUs, as on CI)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> Iterator[Path]:
    """A fresh SQLite tracking store and artifact root for this module (absolute paths: Ray workers run
    in another working directory), in a folder the module may use for its other files too."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("MLFLOW_ARTIFACT_ROOT", str(root / "artifacts"))
        yield root


@pytest.fixture(autouse=True)
def no_leaked_mlflow_run():
    """A test that leaves an MLflow run active in this process breaks every later one: fail it."""
    yield
    mlflow = sys.modules.get("mlflow")  # a test that never imported MLflow left no run (GPU machine: none installed)
    run = mlflow.active_run() if mlflow is not None else None
    if run is not None:
        mlflow.end_run()
        pytest.fail(f"the test left MLflow run {run.info.run_id} active")
