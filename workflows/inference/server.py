"""MLflow's scoring server on a registered model, started so that it works as typed: from the project's
tracking store and with this environment's ``bin`` on ``PATH``.

``mlflow models serve --env-manager local`` execs ``uvicorn`` by name, so it fails with ``exec: uvicorn:
not found`` unless the venv is activated; and it finds ``models:/`` URIs only in the registry named by
``MLFLOW_TRACKING_URI``, which the project's commands do not need set (``workflows.tracking``'s default
store). :func:`server_command` supplies both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .. import tracking


def server_command(model_uri: str, host: str, port: int, workers: int) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of ``mlflow models serve`` for ``model_uri``: this interpreter's MLflow, its
    ``bin`` folder first on ``PATH``, the project's tracking and registry URI."""
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")]).rstrip(os.pathsep)
    env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "--host", host, "--port", str(port), "--workers", str(workers)]
    return argv, env
