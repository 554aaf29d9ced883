"""`make reproduce` / `cast-reproduce`: the paper's ablation (CAST against each expert alone, their
ensemble, late fusion, no exchange, one direction only) on the synthetic motion and binding tasks,
as Ray Tune trials over Ray Train runs, under one MLflow parent run.

    cast-reproduce                     # the default profile (fits 30 min on 2 cores)
    cast-reproduce --full              # more seeds
    ray job submit --working-dir . -- python workflows/reproduce.py   # on a cluster (RAY_ADDRESS)

Prints the comparison table; exits 1 when CAST is not the best on the appearance-motion balance by more
than the seeds' spread (``--no-gate``: always 0 after a complete run), 2 on a wrong flag.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from workflows.ablation.config import FULL, AblationConfig
from workflows.cli.common import user_error
from workflows.cli.flags import CommandLine, Parsed


def command_line() -> CommandLine:
    command = CommandLine(AblationConfig, "cast-reproduce", __file__, description=__doc__)
    full = ", ".join(f"--{k} {','.join(map(str, v))}" for k, v in FULL.items())
    command.parser.add_argument("--full", action="store_true", default=argparse.SUPPRESS,
                                help=f"the full profile: {full} (flags given win)")
    command.parser.add_argument("--num-cpus", type=int, default=argparse.SUPPRESS,
                                help="CPUs of the local Ray (ignored on a cluster) (default: all)")
    return command


def profile(flags: dict[str, Any], extra: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The layer under the flags: ``--full``'s profile when given."""
    return [("--full", FULL)] if extra.get("full") else []


def validated(parsed: Parsed) -> AblationConfig:
    cfg = AblationConfig(**parsed.values)
    cfg.validate()  # an AblationConfigError (a ValueError): one line, exit 2, before anything starts
    cfg.check_local_cpus(parsed.extra.get("num_cpus"))
    return cfg


def main(argv: list[str] | None = None) -> int:
    return command_line().run(argv, reproduce, layers=profile, build=validated)


def reproduce(parsed: Parsed) -> int:
    """The job: the tracking store, then every trial on Ray; the table, the gates and the UI command."""
    cfg: AblationConfig = parsed.config
    from workflows.tracking import store as tracking
    from workflows.cluster.ray_connect import connect_ray

    try:
        tracking.preflight()
    except tracking.TrackingUnavailable as err:
        return user_error(parsed.prog, err)
    import ray

    from workflows.ablation.run import run_ablation

    # dashboard: the state API Ray Train's placement-group cleaner polls
    started = connect_ray(parsed.extra.get("num_cpus"), dashboard=True)
    try:
        result = run_ablation(cfg, log=lambda m: print(f"[reproduce {time.strftime('%H:%M:%S')}] {m}", flush=True))
    finally:
        if started:
            ray.shutdown()
    print(result.markdown)
    for gate in result.gates:
        print(gate.line())
    print(f"[reproduce] {result.seconds:.0f}s; MLflow parent run {result.parent_run_id}; open the UI with\n    "
          f"{tracking.ui_command()}", flush=True)
    return 0 if result.passed or not cfg.gate else 1


if __name__ == "__main__":
    sys.exit(main())
