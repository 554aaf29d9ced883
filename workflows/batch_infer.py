"""Batch inference with a registered CAST model over shards or raw videos (see ``workflows.inference``).

On a cluster:   ray job submit --working-dir . -- python workflows/batch_infer.py \\
                    --model models:/cast-ssv2@champion --input DIR --out OUT
Locally:        cast-batch-infer ...   (or python workflows/batch_infer.py: starts a local Ray, the same)

``--input`` is a shard folder (preprocessing output), a folder of videos, a text file listing videos,
or, with ``--dataset`` and ``--annotations``, a dataset's video folder in its native layout. Writes
``OUT/predictions/*.parquet`` and ``OUT/rejects.parquet``; a rerun predicts only what is missing. When
the input carries labels, an evaluation (top-1/top-5, mean class accuracy, per-class precision/recall/F1,
EK100 verb/noun/action) is written to ``OUT/evaluation/`` and logged as an MLflow run.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from workflows.cli.common import quiet_download_bars, user_error
from workflows.cli.flags import CommandLine, Parsed
from workflows.cluster.ray_connect import connect_ray
from workflows.inference.config import InferConfig


def command_line() -> CommandLine:
    command = CommandLine(InferConfig, "cast-batch-infer", __file__, description=__doc__)
    command.parser.add_argument("--num-cpus", type=int, default=argparse.SUPPRESS,
                                help="local Ray only: CPUs to use (default: all)")
    return command


def main(argv: list[str] | None = None) -> int:
    return command_line().run(argv, batch_infer)


def batch_infer(parsed: Parsed) -> int:
    """The job: the tracking store, OUT's lease, the plan, then Ray (only when something is new)."""
    cfg: InferConfig = parsed.config
    quiet_download_bars()
    from cast_model import CheckpointError
    from pipelines.lease import LeaseHeld, hold
    from workflows.inference.config import InferConfigError
    from workflows.inference.job import check_local_cpus, plan_job

    from workflows.tracking import store as tracking
    from workflows.cluster.shared_storage import ClusterPathError

    try:
        # Config (by ``run``), the local Ray's CPUs, tracking server, model, input listing and labels are
        # checked before Ray starts; so is OUT's lease.
        check_local_cpus(cfg, parsed.extra.get("num_cpus"))
        tracking.preflight()
        with hold(cfg.out, "batch_infer", wait_s=cfg.lease_wait,
                  log=lambda m: print(m, file=sys.stderr, flush=True)):
            summary = _predict_and_evaluate(plan_job(cfg), parsed.extra.get("num_cpus"))
    except (InferConfigError, CheckpointError, LeaseHeld, tracking.TrackingUnavailable, ClusterPathError) as e:
        return user_error(parsed.prog, e)
    print(json.dumps(summary, default=str))
    return 0


def _predict_and_evaluate(plan, num_cpus: int | None) -> dict:
    from workflows.tracking import store as tracking
    # Imported before Ray: under `ray job submit`, a driver's ray.shutdown() lets Ray delete the job's
    # unpacked working_dir, and the evaluation after it could no longer import the project.
    from workflows.evaluation.report import evaluate_job, has_evaluation
    from workflows.inference.job import run_job
    from workflows.cluster.shared_storage import ClusterPathError, alive_nodes, cluster_path_problems

    if plan.todo:
        import ray

        try:
            connect_ray(num_cpus)
        except ValueError as e:  # RAY_ADDRESS names something a driver cannot join
            raise ClusterPathError(str(e)) from e
        try:
            problems = cluster_path_problems({"--input": plan.cfg.input, "--out": plan.cfg.out}, alive_nodes(),
                                             tracking_uri=tracking.tracking_uri())
            if problems:
                raise ClusterPathError("; ".join(problems))
            result = run_job(plan)
        finally:
            ray.shutdown()
    else:
        result = run_job(plan)  # nothing new: no Ray needed (a scheduled rerun costs seconds)
    summary = asdict(result) | {"parts": len(result.parts)}
    if plan.cfg.eval and plan.listing.labelled:
        # A rerun that predicted nothing new would only repeat the same figures in another MLflow run;
        # an evaluation whose MLflow logging failed has no metrics.json yet and is done again.
        if result.predicted or not has_evaluation(plan):
            summary["evaluation"] = evaluate_job(plan)
    return summary


if __name__ == "__main__":
    sys.exit(main())
