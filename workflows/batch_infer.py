"""Batch inference with a registered CAST model over shards or raw videos (see ``workflows.inference``).

On a cluster:   ray job submit --working-dir . -- python workflows/batch_infer.py \\
                    --model models:/cast-ssv2@champion --input DIR --out OUT
Locally:        python workflows/batch_infer.py ...   (starts a local Ray and does the same)

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

from cast_model.precision import PRECISIONS
from cast_model.vocab import SAMPLINGS
from pipelines.datasets import LAYOUTS
from workflows.cli.common import quiet_download_bars, user_error
from workflows.cluster.ray_connect import connect_ray
from workflows.inference.config import DEVICES, InferConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    D = InferConfig.defaults()  # each default is defined once, on InferConfig
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True,
                   help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN/model, any MLflow model URI, "
                        "or a local checkpoint folder")
    p.add_argument("--input", required=True, help="shard folder, video folder, file list, or native video folder")
    p.add_argument("--out", required=True, help="output folder or URI (predictions/, rejects.parquet)")
    p.add_argument("--dataset", choices=LAYOUTS, default=None, help="read --input in this native layout")
    p.add_argument("--annotations", default=None, help="with --dataset: ssv2 labels folder, else the CSV/list")
    p.add_argument("--split", default=None, help="native layout: split to read; shards: only this split")
    p.add_argument("--test-clips", type=int, default=None, metavar="N", help="temporal views (default: the checkpoint's)")
    p.add_argument("--test-crops", type=int, choices=[1, 3], default=None, help="spatial views")
    p.add_argument("--sampling", choices=SAMPLINGS, default=None, help="default: the checkpoint's")
    p.add_argument("--sampling-rate", type=int, default=None, help="dense sampling stride")
    p.add_argument("--batch-size", type=int, default=D.batch_size, help="videos per model forward")
    p.add_argument("--top-k", type=int, default=D.top_k, help="classes kept per video (per head)")
    p.add_argument("--num-replicas", type=int, default=D.num_replicas, help="a fixed number of model actors")
    p.add_argument("--min-replicas", type=int, default=D.min_replicas, help="model actor pool: at least this many")
    p.add_argument("--max-replicas", type=int, default=D.max_replicas,
                   help="model actor pool: at most this many (default: the GPUs the cluster has now, >= 1)")
    p.add_argument("--device", choices=DEVICES, default=D.device,
                   help="model device: auto = GPU when the cluster has one now; gpu = ask Ray for GPUs and "
                        "wait for them (an autoscaler adds GPU nodes)")
    p.add_argument("--gpus-per-replica", type=float, default=D.gpus_per_replica, help="GPUs each model actor asks for")
    p.add_argument("--decode-device", choices=["cpu", "gpu"], default=D.decode_device,
                   help="where the views are decoded (gpu: DALI's NVDEC decoder)")
    p.add_argument("--precision", choices=PRECISIONS, default=D.precision,
                   help="auto: bf16 autocast on GPUs and on CPUs where bf16 matmuls measure faster, else fp32")
    p.add_argument("--retry-rejects", action=argparse.BooleanOptionalAction, default=D.retry_rejects,
                   help="try videos in rejects.parquet again")
    p.add_argument("--eval", dest="evaluate", action=argparse.BooleanOptionalAction, default=D.evaluate,
                   help="evaluate when the input has labels (--no-eval: predict only)")
    p.add_argument("--experiment", default=D.experiment, help="MLflow experiment of evaluation runs")
    p.add_argument("--flush-rows", type=int, default=D.flush_rows, help="predictions per Parquet part")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray only: CPUs to use")
    p.add_argument("--progress-every", type=float, default=D.progress_every_s, help="seconds between progress lines")
    p.add_argument("--lease-wait", type=float, default=D.lease_wait_s,
                   help="seconds to wait for another job writing into --out before giving up (exit 2)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config with each value's source (default, flag) and exit")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    # Which values the command line gave (the rest are InferConfig's defaults), for --print-config.
    given = [opt for opt in argv if opt.startswith("--")]
    a.flags_given = {act.dest for act in p._actions
                     if any(g == o or g.startswith(o + "=") for g in given for o in act.option_strings)}
    return a


def config_from_args(a: argparse.Namespace) -> InferConfig:
    return InferConfig(model=a.model, input=a.input, out=a.out, dataset=a.dataset, annotations=a.annotations,
                       split=a.split, test_clips=a.test_clips, test_crops=a.test_crops, sampling=a.sampling,
                       sampling_rate=a.sampling_rate, batch_size=a.batch_size, top_k=a.top_k,
                       num_replicas=a.num_replicas, min_replicas=a.min_replicas,
                       max_replicas=a.max_replicas, gpus_per_replica=a.gpus_per_replica, device=a.device, decode_device=a.decode_device,
                       precision=a.precision, retry_rejects=a.retry_rejects, evaluate=a.evaluate,
                       experiment=a.experiment, flush_rows=a.flush_rows, progress_every_s=a.progress_every,
                       lease_wait_s=a.lease_wait)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    quiet_download_bars()
    from cast_model import CheckpointError
    from pipelines.lease import LeaseHeld, hold
    from workflows.inference.config import InferConfigError
    from workflows.inference.job import plan_job

    from workflows.tracking import store as tracking
    from workflows.cluster.shared_storage import ClusterPathError

    try:
        # Config, tracking server, model, input listing and labels are checked before Ray starts; so is
        # OUT's lease.
        cfg = config_from_args(a)
        if a.print_config:
            renamed = {"progress_every_s": "progress_every", "lease_wait_s": "lease_wait"}  # field -> flag dest
            for key, value in asdict(cfg).items():
                source = "flag" if renamed.get(key, key) in a.flags_given else "default"
                print(f"{key:<18}  {json.dumps(value):<40}  {source}")
            return 0
        tracking.preflight()
        with hold(cfg.out, "batch_infer", wait_s=cfg.lease_wait_s,
                  log=lambda m: print(m, file=sys.stderr, flush=True)):
            summary = _predict_and_evaluate(a, plan_job(cfg))
    except (InferConfigError, CheckpointError, LeaseHeld, tracking.TrackingUnavailable, ClusterPathError) as e:
        return user_error("batch_infer", e)
    print(json.dumps(summary, default=str))
    return 0


def _predict_and_evaluate(a: argparse.Namespace, plan) -> dict:
    from workflows.tracking import store as tracking
    # Imported before Ray: under `ray job submit`, a driver's ray.shutdown() lets Ray delete the job's
    # unpacked working_dir, and the evaluation after it could no longer import the project.
    from workflows.evaluation.report import evaluate_job, has_evaluation
    from workflows.inference.job import run_job
    from workflows.cluster.shared_storage import ClusterPathError, alive_nodes, cluster_path_problems

    if plan.todo:
        import ray

        try:
            connect_ray(a.num_cpus)
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
    if plan.cfg.evaluate and plan.listing.labelled:
        # A rerun that predicted nothing new would only repeat the same figures in another MLflow run;
        # an evaluation whose MLflow logging failed has no metrics.json yet and is done again.
        if result.predicted or not has_evaluation(plan):
            summary["evaluation"] = evaluate_job(plan)
    return summary


if __name__ == "__main__":
    sys.exit(main())
