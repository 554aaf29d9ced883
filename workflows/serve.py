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

import argparse
import sys

from workflows.cli.common import user_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cast-serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", metavar="MODEL",
                   help="models:/NAME@ALIAS, models:/NAME/VERSION or another MLflow model URI")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=5001, help="port to listen on")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (each loads the model)")
    a = p.parse_args(argv)
    if not 0 < a.port < 65536:
        p.error(f"--port must be 1..65535, got {a.port}")
    if a.workers < 1:
        p.error(f"--workers must be >= 1, got {a.workers}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from workflows.inference.config import InferConfigError
    from workflows.inference.model import lookup_model
    from workflows.inference.server import serve

    if ":/" not in a.model:
        return user_error("cast-serve", f"MODEL {a.model}: not an MLflow model URI (models:/NAME@ALIAS); "
                                        f"register a checkpoint folder first with cast-register")
    try:
        name, version = lookup_model(a.model)
    except InferConfigError as e:
        return user_error("cast-serve", e)
    print(f"cast-serve: {name} v{version} on http://{a.host}:{a.port}/invocations", file=sys.stderr, flush=True)
    serve(a.model, a.host, a.port, a.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
