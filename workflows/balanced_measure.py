"""The paper's balanced measure for a model family: the harmonic mean of top-1 over the datasets it was
evaluated on, from the ``metrics.json`` files batch inference writes (``OUT/evaluation/<model>/``).

    python workflows/balanced_measure.py ssv2_out/evaluation/cast-ssv2-v3/metrics.json \\
        k400_out/evaluation/cast-k400-v2/metrics.json ek100_out/evaluation/cast-ek100-v1/metrics.json \\
        --out balanced.json [--log-mlflow]

EK100 enters with its verb and noun top-1 (``--ek100-figures`` to change, e.g. ``action_top1``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workflows.cli.common import user_error
from workflows.evaluation.report import EK100_FIGURES, balanced_measure


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("metrics", nargs="+", help="metrics.json files, one per dataset")
    p.add_argument("--ek100-figures", default=",".join(EK100_FIGURES),
                   help="EK100 summary figures that enter the mean, comma separated")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.add_argument("--log-mlflow", action="store_true", help="log it as a run in --experiment")
    p.add_argument("--experiment", default="cast-evaluation")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    reports = []
    for path in a.metrics:
        try:
            reports.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            return user_error("balanced_measure", f"cannot read {path}: {e}")
    try:
        result = balanced_measure(reports, tuple(f for f in a.ek100_figures.split(",") if f))
    except ValueError as e:
        return user_error("balanced_measure", e)
    result["inputs"] = [str(Path(p).resolve()) for p in a.metrics]
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))
    if a.log_mlflow:
        from workflows.tracking import store as tracking
        from workflows.evaluation.report import KIND_TAG

        tags = {KIND_TAG: "balanced_measure", "cast.models": ",".join(result["models"])}
        with tracking.one_shot_run(a.experiment, "balanced-measure", tags) as (client, run_id):
            client.log_metric(run_id, "harmonic_mean_top1", result["harmonic_mean"])
            for name, value in result["top1"].items():
                client.log_metric(run_id, f"top1_{name}", value)
            client.log_dict(run_id, result, "balanced_measure.json")
        result["run_id"] = run_id
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
