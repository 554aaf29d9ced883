"""Where MLflow lives: the one place that knows the default tracking URI and artifact root.

Ray workers run in their own working directories, so every default here is absolute.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"


def default_tracking_uri() -> str:
    db = DATA_DIR / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else an absolute SQLite database under ``<repo>/data/mlflow``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def artifact_root() -> str | None:
    """Artifact location for new experiments: ``MLFLOW_ARTIFACT_ROOT`` if set; beside the database for
    the default store; else ``None`` (a tracking server's own default).

    Decided from the URI, not from the variable being set: ``mlflow.set_tracking_uri`` exports it.
    """
    if os.environ.get("MLFLOW_ARTIFACT_ROOT"):
        return os.environ["MLFLOW_ARTIFACT_ROOT"]
    if tracking_uri() != default_tracking_uri():
        return None
    root = DATA_DIR / "mlflow" / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root.as_uri()


def client() -> MlflowClient:
    """A client bound to :func:`tracking_uri` (also made the process-wide default)."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(name: str) -> str:
    """The id of experiment ``name``, created with :func:`artifact_root` if it does not exist."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    return c.create_experiment(name, artifact_location=artifact_root())


def ui_command() -> str:
    """The command that opens the MLflow UI on this tracking store."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        return f"open {uri}"
    root = artifact_root()
    artifacts = f" --default-artifact-root {root}" if root else ""
    return f".venv/bin/mlflow ui --backend-store-uri {uri}{artifacts}"
