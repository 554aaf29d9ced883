"""The MLflow side of a training job: one run per job name, opened by the driver, written by rank 0.

Ray Train v2 has no MLflow callback, so the driver creates (or, for a resumed job, reopens) the run and
passes its id to the workers; rank 0 logs into it by id with a plain client. The driver alone decides
the run's final status, so a crash anywhere leaves the run FAILED rather than FINISHED.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import mlflow
import mlflow.system_metrics
from mlflow.entities import Metric
from mlflow.environment_variables import MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL

from ..tracking import store as tracking

RUN_NAME_TAG = "cast.run_name"
SUPERSEDED_TAG = "cast.superseded"


def filter_value(text: str) -> str:
    """``text`` as a quoted value of an MLflow search filter (``it's`` -> ``"it's"``). MLflow's filter
    grammar has no escapes: a value holding both quote kinds cannot be searched for."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ValueError(f"{text!r} holds both ' and \"; MLflow filters cannot match it")


def find_run(experiment: str, run_name: str):
    """The latest MLflow run of the job ``run_name`` in ``experiment`` (None when there is none)."""
    client = tracking.client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    found = client.search_runs([exp.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = {filter_value(run_name)}",
                               max_results=1, order_by=["attributes.start_time DESC"])
    return found[0] if found else None


def open_run(experiment: str, run_name: str, tags: Mapping[str, str]) -> tuple[str, str | None]:
    """(run id, previous status) of the job ``run_name`` in ``experiment``; a new run when the name is
    new (previous status ``None``), else the same run set back to RUNNING (a resumed job)."""
    client = tracking.client()
    exp_id = tracking.ensure_experiment(experiment)
    run = find_run(experiment, run_name)
    if run is not None and run.data.tags.get(SUPERSEDED_TAG) is None:
        if run.info.status != "FINISHED":
            client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id, run.info.status
    run = client.create_run(exp_id, run_name=run_name, tags={RUN_NAME_TAG: run_name, **tags})
    return run.info.run_id, None


def supersede(run_id: str, reason: str) -> None:
    """Retire a run that cannot be resumed (its checkpoints are gone): FAILED, with the reason, and
    never found again by :func:`open_run`, so a fresh run's steps do not mix with its metrics."""
    client = tracking.client()
    client.set_tag(run_id, SUPERSEDED_TAG, reason[:4000])
    client.set_tag(run_id, RUN_NAME_TAG, f"{client.get_run(run_id).data.tags.get(RUN_NAME_TAG, '')} (superseded)")
    if client.get_run(run_id).info.status in ("RUNNING", "SCHEDULED"):
        tracking.end_run(run_id, ok=False)


def close_run(run_id: str, ok: bool) -> None:
    tracking.end_run(run_id, ok)


def run_status(run_id: str) -> str:
    return tracking.client().get_run(run_id).info.status


class RunLogger:
    """Rank 0's handle on the job's run: params once, step/epoch metrics, artifacts, system metrics."""

    def __init__(self, run_id: str, system_metrics_interval_s: float = 10.0) -> None:
        self.run_id = run_id
        self.client = tracking.client()
        self._last: dict[str, int] = {}
        # MLflow's public system-metrics API: the run made active in this (rank 0) process with
        # log_system_metrics=True; its monitor stops when the run is ended in close().
        if MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.get() is None:  # the documented variable wins
            mlflow.system_metrics.set_system_metrics_sampling_interval(system_metrics_interval_s)
        tracking.use_store()  # this worker process's fluent MLflow (start_run, system metrics) logs there
        mlflow.start_run(run_id=run_id, log_system_metrics=True)

    def log_params(self, params: Mapping[str, str]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        # A resumed job logs its params again: MLflow refuses changed values, so only new keys go.
        changed = {k: (existing[k], v) for k, v in params.items() if k in existing and existing[k] != v}
        if changed:
            self.client.set_tag(self.run_id, "cast.resumed_with_changed_params", json.dumps(changed)[:4000])
        fresh = {k: v for k, v in params.items() if k not in existing}
        items = list(fresh.items())
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=[tracking.param(k, v) for k, v in items[i:i + 100]])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log ``metrics`` at ``step``, except those already logged at this step or later: a worker
        restarted from a checkpoint replays the steps after it, and each point must appear once."""
        fresh = {k: v for k, v in metrics.items() if step > self._last_step(k)}
        if not fresh:
            return
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in fresh.items()])
        self._last.update({k: step for k in fresh})

    def _last_step(self, key: str) -> int:
        if key not in self._last:  # once per key and (re)start: what the run already holds
            self._last[key] = max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=-1)
        return self._last[key]

    def log_json(self, name: str, obj: Any) -> None:
        self.client.log_dict(self.run_id, obj, name)

    def log_files(self, files: Mapping[str, Any], artifact_path: str) -> None:
        """Write ``{file name: writer(path)}`` into a temp folder and log them under ``artifact_path``."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, write in files.items():
                write(Path(tmp) / name)
            self.client.log_artifacts(self.run_id, tmp, artifact_path)

    def close(self) -> None:
        # Ending the active run stops the monitor; the status stays the driver's to set (close_run), so
        # the run is put back to RUNNING until then.
        mlflow.end_run()
        self.client.update_run(self.run_id, status="RUNNING")
