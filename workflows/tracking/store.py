"""Where MLflow lives: the one place that knows the default tracking URI and artifact root.

Ray workers run in their own working directories, so every default here is absolute.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import mlflow
from mlflow.entities import Param, RunStatus
from mlflow.tracking import MlflowClient

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data"

DATASET_TAG = "cast.dataset"  # run / model-version tag naming the dataset (training and evaluation runs)
PARAM_VALUE_LIMIT = 6000  # characters MLflow keeps of a param value


def param(key: str, value: str) -> Param:
    """An MLflow param, its value cut to :data:`PARAM_VALUE_LIMIT` (MLflow rejects longer ones)."""
    return Param(key, value[:PARAM_VALUE_LIMIT])


def default_tracking_uri() -> str:
    """An absolute SQLite database under ``<repo>/data/mlflow`` (its folder is made where the store is
    opened, :func:`client`)."""
    return f"sqlite:///{DATA_DIR / 'mlflow' / 'mlflow.db'}"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else an absolute SQLite database under ``<repo>/data/mlflow``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, else ``None``."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def artifact_root() -> str | None:
    """Artifact location for new experiments: ``MLFLOW_ARTIFACT_ROOT`` if set; beside the database for
    any SQLite store (``<db folder>/artifacts``; MLflow's own default is ``<cwd>/mlruns``, which on a
    Ray worker is a temporary folder); else ``None`` (a tracking server's own default).

    Decided from the URI, not from the variable being set: ``mlflow.set_tracking_uri`` exports it.
    """
    if os.environ.get("MLFLOW_ARTIFACT_ROOT"):
        return os.environ["MLFLOW_ARTIFACT_ROOT"]
    db = sqlite_path(tracking_uri())
    if db is None:
        return None
    return (db.resolve().parent / "artifacts").as_uri()


def client() -> MlflowClient:
    """A client bound to :func:`tracking_uri` (tracking and registry). Process-wide MLflow state is left
    alone (that is :func:`use_store`); a local SQLite store's folder is created, as opening a file for
    writing creates it, since SQLite cannot create the folder of its database."""
    uri = tracking_uri()
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def use_store() -> str:
    """Make :func:`tracking_uri` MLflow's process-wide tracking and registry URI, for MLflow's fluent API
    (``mlflow.start_run``, ``mlflow.pyfunc.log_model``), which takes no URI argument; returns the URI.
    Called explicitly right where that API is used; everything else passes the URI or uses :func:`client`."""
    uri = tracking_uri()
    client()  # the local store's folder
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """The id of experiment ``name``, created with :func:`artifact_root` if it does not exist."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    root = artifact_root()
    db = sqlite_path(tracking_uri())
    if db is not None and not os.environ.get("MLFLOW_ARTIFACT_ROOT"):  # the folder beside the database
        (db.resolve().parent / "artifacts").mkdir(parents=True, exist_ok=True)
    return c.create_experiment(name, artifact_location=root)


def end_run(run_id: str, ok: bool) -> None:
    """End a run FINISHED (``ok``) or FAILED: the one way a run of this project ends."""
    client().set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))


@contextmanager
def one_shot_run(experiment: str, run_name: str, tags: Mapping[str, str]) -> Iterator[tuple[MlflowClient, str]]:
    """A new run for a job that logs once (an evaluation, the balanced measure): yields (client, run id)
    and ends the run FINISHED when the block completes, FAILED when it raises. (A training run, opened or
    resumed by name by the driver, is ``training.mlflow_run``'s.)"""
    c = client()
    run_id = c.create_run(ensure_experiment(experiment), run_name=run_name, tags=dict(tags)).info.run_id
    ok = False
    try:
        yield c, run_id
        ok = True
    finally:
        end_run(run_id, ok)


def ui_command() -> str:
    """The command that opens the MLflow UI on this tracking store."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        return f"open {uri}"
    root = artifact_root()
    artifacts = f" --default-artifact-root {root}" if root else ""
    return f".venv/bin/mlflow ui --backend-store-uri {uri}{artifacts}"


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be used (unreachable, or it refuses our credentials)."""


def preflight(timeout_s: float = 5.0) -> None:
    """Check in seconds, before Ray or any heavy work, that the tracking server answers and accepts our
    credentials; raise :class:`TrackingUnavailable` with a one-line reason otherwise.

    A SQLite store needs no check. MLflow's own client retries for minutes on a stopped server, so this
    asks the REST API once, directly, with a short timeout.
    """
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    auth = None
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        auth = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
    try:
        # A stopped server refuses the connection at once; a busy one may take a while to check a
        # password (PBKDF2), so the answer gets longer than the connection.
        resp = requests.post(url, json={"max_results": 1}, auth=auth, timeout=(timeout_s, 6 * timeout_s))
    except requests.ReadTimeout as err:
        raise TrackingUnavailable(f"MLflow tracking server {uri} accepted the connection but did not answer in "
                                  f"{6 * timeout_s:.0f}s: is it overloaded or hung?") from err
    except requests.RequestException as err:
        raise TrackingUnavailable(f"MLflow tracking server {uri} is unreachable ({type(err).__name__}): "
                                  f"start it or fix MLFLOW_TRACKING_URI") from err
    if resp.status_code in (401, 403):
        who = auth[0] if auth else "no user"
        raise TrackingUnavailable(f"MLflow tracking server {uri} refused the credentials ({who}; HTTP "
                                  f"{resp.status_code}): check MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD")
    if resp.status_code >= 400:
        raise TrackingUnavailable(f"MLflow tracking server {uri} answered HTTP {resp.status_code} to a "
                                  f"search: {resp.text[:200]!r}")
