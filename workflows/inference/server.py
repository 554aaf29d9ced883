"""The REST server of ``cast-serve``: MLflow's own scoring app (``mlflow.pyfunc.scoring_server``, the app
``mlflow models serve`` runs, same routes, same request and response formats) on a registered model,
run by uvicorn in this process, with one check in front of it.

Why not ``mlflow models serve``: it execs ``uvicorn`` by name, so it fails with ``exec: uvicorn: not
found`` unless the venv is activated, and it finds ``models:/`` URIs only in the registry named by
``MLFLOW_TRACKING_URI``, which the project's commands do not need set. Here uvicorn is imported, and the
project's store (``workflows.tracking``) is the registry.

The check: MLflow drops request columns its signature does not name before the model sees them, so a
request with a wrong column reached the model empty and came back as a generic "unexpected error". A
request whose columns hold neither ``video`` nor ``path`` is answered here instead: HTTP 400 with a
message naming the columns expected and the columns received.
"""

from __future__ import annotations

import json
import os

from ..tracking import store as tracking
from .pyfunc import PATH_COLUMN, VIDEO_COLUMN

MODEL_ENV = "CAST_SERVE_MODEL"  # the model URI, for the app factory of each uvicorn worker


def request_columns(body: bytes) -> list[str] | None:
    """The columns of a JSON scoring request (``dataframe_split``, ``dataframe_records``, ``inputs`` or
    ``instances`` as records), or ``None`` when they cannot be told (not JSON, another shape: MLflow
    answers those itself)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    if isinstance(payload.get("dataframe_split"), dict):
        return [str(c) for c in payload["dataframe_split"].get("columns") or []]
    records = payload.get("dataframe_records", payload.get("instances", payload.get("inputs")))
    if isinstance(records, list) and records and all(isinstance(r, dict) for r in records):
        return sorted({str(k) for r in records for k in r})
    if isinstance(records, dict):
        return sorted(str(k) for k in records)
    return None


def column_problem(columns: list[str]) -> str | None:
    """The 400 message for a request with these columns, or ``None`` when the model takes them."""
    if {VIDEO_COLUMN, PATH_COLUMN} & set(columns):
        return None
    return (f"expected a column {VIDEO_COLUMN!r} (the video file's bytes, base64 in JSON) or {PATH_COLUMN!r} "
            f"(a path or URI the server reads), got columns {columns}")


def build_app(model_uri: str):
    """MLflow's scoring app for ``model_uri`` (looked up in the project's store) behind the column check."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from mlflow.pyfunc import scoring_server

    tracking.use_store()  # models:/ URIs are resolved in the process-wide registry
    app = scoring_server.init(scoring_server.load_model_with_mlflow_config(model_uri))

    @app.middleware("http")
    async def check_columns(request: Request, call_next):
        if request.method == "POST" and request.url.path == "/invocations":
            columns = request_columns(await request.body())
            problem = None if columns is None else column_problem(columns)
            if problem:
                return JSONResponse({"error_code": "BAD_REQUEST", "message": problem}, status_code=400)
        return await call_next(request)

    return app


def app_from_env():
    """uvicorn's app factory (``--workers`` > 1 starts each worker from an import string)."""
    return build_app(os.environ[MODEL_ENV])


def serve(model_uri: str, host: str, port: int, workers: int) -> None:
    """Serve until interrupted."""
    import uvicorn

    os.environ[MODEL_ENV] = model_uri
    uvicorn.run("workflows.inference.server:app_from_env", factory=True, host=host, port=port, workers=workers)
