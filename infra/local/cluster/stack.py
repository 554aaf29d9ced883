"""The cluster stack on one machine: PostgreSQL, an S3-API object store, an MLflow server with logins,
and a Ray cluster of a head and worker nodes — the parts infra/k8s deploys, each a real server.

    python infra/local/cluster/stack.py up      # start (or report the running stack); writes data/cluster/env.sh
    python infra/local/cluster/stack.py down    # stop exactly what `up` started
    python infra/local/cluster/stack.py status

The stack is ephemeral: its object store (moto's server) keeps objects in memory, so `up` always starts
from empty stores (a fresh Postgres cluster and bucket) and `down` removes their state. Ports are not
Ray's, MLflow's or Postgres's defaults, so a default local Ray or MLflow on the machine is left alone;
every port can be moved with an environment variable (see ``Settings``). Never ``ray stop``: it would
stop every Ray on the machine; the stack stops its own processes by PID.
"""

from __future__ import annotations

import argparse
import sys
import time

from components import Settings, StackError, busy_ports, start_stack, stop_stack, stack_alive


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["up", "down", "status"])
    a = p.parse_args(argv)
    settings = Settings.from_env()
    if a.action == "status":
        alive = stack_alive(settings)
        print(f"cluster stack: {'running' if alive else 'not running'} ({settings.state_file})")
        return 0 if alive else 1
    if a.action == "down":
        stop_stack(settings)
        print("cluster stack: stopped")
        return 0
    if stack_alive(settings):
        print(f"cluster stack: already running (state in {settings.state_file})")
        print(usage(settings))
        return 0
    busy = busy_ports(settings)
    if busy:
        taken = ", ".join(f"{port} ({name})" for name, port in busy.items())
        print(f"cluster-up: port(s) already in use: {taken}. Another stack or server holds them: move this "
              f"one with those variables, or stop a stack of an earlier run with `stack.py down` under the "
              f"same settings (`make cluster-down` for the default one). Nothing was started or stopped.",
              file=sys.stderr)
        return 1
    stop_stack(settings)  # whatever a half-dead earlier stack left
    started = time.time()
    try:
        start_stack(settings)
    except StackError as err:
        print(f"cluster-up: {err}", file=sys.stderr)
        print(f"cluster-up: logs in {settings.log_dir}; stopping what started", file=sys.stderr)
        stop_stack(settings)
        return 1
    print(f"cluster stack: up in {time.time() - started:.0f}s")
    print(usage(settings))
    return 0


def usage(s: Settings) -> str:
    return (f"  source {s.env_file}\n"
            f"  ray job submit --working-dir . -- python workflows/train_ssv2.py ...\n"
            f"  MLflow UI: {s.mlflow_url} (user {s.client_user}, password in env.sh); "
            f"Ray dashboard: http://127.0.0.1:{s.dashboard_port}\n"
            f"  make cluster-down")


if __name__ == "__main__":
    sys.exit(main())
