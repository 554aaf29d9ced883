"""The paper's balanced measure for a model family: the harmonic mean of top-1 over the datasets it was
evaluated on, from the ``metrics.json`` files batch inference writes (``OUT/evaluation/<model>/``).

    cast-balanced-measure ssv2_out/evaluation/cast-ssv2-v3/metrics.json \\
        k400_out/evaluation/cast-k400-v2/metrics.json ek100_out/evaluation/cast-ek100-v1/metrics.json \\
        --out balanced.json [--log-mlflow]

EK100 enters with its verb and noun top-1 (``--ek100-figures`` to change, e.g. ``action_top1``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from workflows.cli.common import user_error
from workflows.cli.flags import CommandLine, Parsed
from workflows.evaluation.report import BalancedConfig, balanced_measure


def command_line() -> CommandLine:
    return CommandLine(BalancedConfig, "cast-balanced-measure", __file__, description=__doc__)


def main(argv: list[str] | None = None) -> int:
    return command_line().run(argv, measure)


def measure(parsed: Parsed) -> int:
    """The job: read the reports, compute the mean, write it (``--out``), log it (``--log-mlflow``)."""
    cfg: BalancedConfig = parsed.config
    reports = []
    for path in cfg.metrics:
        try:
            reports.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            return user_error(parsed.prog, f"cannot read {path}: {e}")
    try:
        result = balanced_measure(reports, cfg.ek100_figures)
    except ValueError as e:
        return user_error(parsed.prog, e)
    result["inputs"] = [str(Path(p).resolve()) for p in cfg.metrics]
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(result, indent=1))
    if cfg.log_mlflow:
        result["run_id"] = _log_run(cfg.experiment, result)
    print(json.dumps(result))
    return 0


def _log_run(experiment: str, result: dict) -> str:
    from workflows.evaluation.report import KIND_TAG
    from workflows.tracking import store as tracking

    tags = {KIND_TAG: "balanced_measure", "cast.models": ",".join(result["models"])}
    with tracking.one_shot_run(experiment, "balanced-measure", tags) as (client, run_id):
        client.log_metric(run_id, "harmonic_mean_top1", result["harmonic_mean"])
        for name, value in result["top1"].items():
            client.log_metric(run_id, f"top1_{name}", value)
        client.log_dict(run_id, result, "balanced_measure.json")
    return run_id


if __name__ == "__main__":
    sys.exit(main())
