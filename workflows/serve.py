"""Serve a registered model over HTTP (MLflow's scoring server): videos in, top-k classes out.

    cast-serve models:/cast-ssv2@champion --port 5001
    cast-request clip.webm > request.json
    curl -s localhost:5001/invocations -H 'Content-Type: application/json' -d @request.json

MLflow's scoring app (the one ``mlflow models serve`` runs: same routes and formats) run by uvicorn in
this process, so it works without an activated venv, from the project's tracking store
(``MLFLOW_TRACKING_URI``, else the embedded one under ``data/mlflow``); see ``workflows.inference.server``.
An unknown model, alias or version, or an unreachable registry, is one line and exit 2 before the server
starts. The request format is in ``workflows.inference.pyfunc``'s doc and the docs' Serving page.
"""

from __future__ import annotations

import sys

from workflows.cli.common import user_error
from workflows.cli.flags import CommandLine, Parsed
from workflows.inference.config import InferConfigError, ServeConfig


def command_line() -> CommandLine:
    return CommandLine(ServeConfig, "cast-serve", __file__, description=__doc__)


def main(argv: list[str] | None = None) -> int:
    return command_line().run(argv, serve)


def serve(parsed: Parsed) -> int:
    """The job: look the model up in the registry (refused before the server starts), then serve it."""
    cfg: ServeConfig = parsed.config
    from workflows.inference.model import lookup_model
    from workflows.inference.server import serve as serve_model

    try:
        name, version = lookup_model(cfg.model)
    except InferConfigError as e:
        return user_error(parsed.prog, e)
    print(f"{parsed.prog}: {name} v{version} on http://{cfg.host}:{cfg.port}/invocations", file=sys.stderr, flush=True)
    serve_model(cfg.model, cfg.host, cfg.port, cfg.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
