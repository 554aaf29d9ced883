"""Preprocess a dataset in its native layout into WebDataset shards (see ``pipelines.preprocess_job``).

On a cluster:   ray job submit --working-dir . -- python workflows/preprocess.py --dataset ssv2 \\
                    --videos DIR --annotations LABELS_DIR --split train --out OUT
Locally:        cast-preprocess ...   (or python workflows/preprocess.py: starts a local Ray, the same)

``--annotations`` is the labels folder for SSV2 and the CSV file for k400 / ek100 / csv lists. OUT may
be a local path or a URI pyarrow understands (file://, s3://, gs://, hdfs://).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import asdict

from pipelines.datasets import AnnotationError
from pipelines.lease import LeaseHeld, hold
from pipelines.preprocess_job import PreprocessConfig, prepare_listing, run_preprocess
from workflows.cli.common import user_error
from workflows.cli.flags import CommandLine, Parsed
from workflows.cluster.ray_connect import connect_ray, too_few_cpus
from workflows.cluster.shared_storage import ClusterPathError

COMMAND = "cast-preprocess"


def command_line() -> CommandLine:
    # The command decodes on a GPU when the cluster has one (``auto``); the library's default is the CPU.
    command = CommandLine(PreprocessConfig, COMMAND, __file__, description=__doc__,
                          layers=[(COMMAND, {"decode_device": "auto"})])
    command.parser.add_argument("--num-cpus", type=int, default=argparse.SUPPRESS,
                                help="local Ray only: CPUs to use (default: all)")
    return command


def config_of(parsed: Parsed) -> PreprocessConfig:
    """The config, with ``auto`` resolved to the CPU (the job moves to the GPU when the cluster has one)."""
    device = parsed.values["decode_device"]
    return PreprocessConfig(**dict(parsed.values, decode_device="cpu" if device == "auto" else device))


def main(argv: list[str] | None = None) -> int:
    return command_line().run(argv, preprocess, build=config_of)


def preprocess(parsed: Parsed) -> int:
    """The job: list the split, hold OUT's lease, connect to Ray, write the shards."""
    cfg: PreprocessConfig = parsed.config
    auto = parsed.values["decode_device"] == "auto"
    # Validate before Ray starts: a wrong config (refused by ``run``), a bad annotation or an output another
    # job is writing fails in a second, with one line and exit 2, not after cluster start-up.
    try:
        problem = too_few_cpus(parsed.extra.get("num_cpus"), 1, "each decode task holds 1 CPU")
        if problem:
            raise ValueError(problem)
        listing = prepare_listing(cfg)
    except (ValueError, AnnotationError) as e:  # AnnotationError is a ValueError; named for the reader
        return user_error(parsed.prog, e)
    import ray

    started = False
    created = not _exists(cfg.out)
    try:
        with hold(cfg.out, f"preprocess {cfg.split}", wait_s=cfg.lease_wait, log=_log):
            started = _connect_and_check(cfg, parsed.extra.get("num_cpus"))
            if auto and ray.cluster_resources().get("GPU", 0) > 0:
                cfg = dataclasses.replace(cfg, decode_device="gpu")
            result = run_preprocess(cfg, listing=listing)
    except (LeaseHeld, ClusterPathError) as e:
        if created and isinstance(e, ClusterPathError):  # the lease made --out: a refused path leaves none
            _remove_empty_output(cfg.out)
        return user_error(parsed.prog, e)
    finally:
        if started:
            ray.shutdown()
    print(json.dumps(asdict(result) | {"shards": len(result.shards)}))
    return 0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _exists(out: str) -> bool:
    from pipelines.shards import resolve_out

    fs, base = resolve_out(out)
    return fs.get_file_info(base).type.name != "NotFound"


def _remove_empty_output(out: str) -> None:
    """Remove ``out`` when folders are all it holds (the released lease's): nothing was written."""
    import pyarrow.fs as pafs

    from pipelines.shards import resolve_out

    fs, base = resolve_out(out)
    entries = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    if all(e.type == pafs.FileType.Directory for e in entries):
        fs.delete_dir(base)


def _connect_and_check(cfg: PreprocessConfig, num_cpus: int | None) -> bool:
    """Connect to Ray (True when this started it) and refuse paths that not every node sees."""
    from workflows.cluster.shared_storage import alive_nodes, cluster_path_problems

    try:
        started = connect_ray(num_cpus)
    except ValueError as e:  # RAY_ADDRESS names something a driver cannot join
        raise ClusterPathError(str(e)) from e
    # Decode tasks run on every node and read the videos; the output must be where all can find it.
    problems = cluster_path_problems({"--videos": cfg.videos, "--annotations": cfg.annotations, "--out": cfg.out},
                                     alive_nodes())
    if problems:
        raise ClusterPathError("; ".join(problems))
    return started


if __name__ == "__main__":
    sys.exit(main())
