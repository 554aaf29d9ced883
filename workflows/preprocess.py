"""Preprocess a dataset in its native layout into WebDataset shards (see ``pipelines.preprocess_job``).

On a cluster:   ray job submit --working-dir . -- python workflows/preprocess.py --dataset ssv2 \\
                    --videos DIR --annotations LABELS_DIR --split train --out OUT
Locally:        python workflows/preprocess.py ...   (starts a local Ray and does the same)

``--annotations`` is the labels folder for SSV2 and the CSV file for k400 / ek100 / csv lists. OUT may
be a local path or a URI pyarrow understands (file://, s3://, gs://, hdfs://).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from pipelines.datasets import LAYOUTS, AnnotationError
from pipelines.lease import LeaseHeld, hold
from pipelines.preprocess_job import PreprocessConfig, prepare_listing, run_preprocess
from pipelines.schema import CODECS
from workflows.cli.common import user_error
from workflows.cluster.ray_connect import connect_ray
from workflows.cluster.shared_storage import ClusterPathError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    D = PreprocessConfig  # the defaults live in the config (shard encoding: pipelines.encode.EncodeConfig)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", required=True, choices=LAYOUTS)
    p.add_argument("--videos", required=True, help="folder of the videos (the split's folder for k400)")
    p.add_argument("--annotations", required=True, help="ssv2: labels folder; others: the CSV/list file")
    p.add_argument("--split", required=True, help="train / validation / test ... (names the shards)")
    p.add_argument("--out", required=True, help="output folder or URI")
    p.add_argument("--short-side", type=int, default=None, help="default: 256 (never upscaled)")
    p.add_argument("--max-fps", type=float, default=None, help="default: 30 for ek100, else keep all frames")
    p.add_argument("--codec", choices=sorted(CODECS), default=D.codec,
                   help="shard codec: mjpeg (fastest to decode) or vp9 (smallest) train on CPU or GPU; "
                        "h264 only on GPU (DALI mixed)")
    p.add_argument("--gop", type=int, default=D.gop, help="frames between keyframes in the shards")
    p.add_argument("--crf", type=int, default=D.crf, help="vp9 / h264 quality (lower: better, bigger)")
    p.add_argument("--mjpeg-q", type=int, default=D.mjpeg_q, help="mjpeg quantiser (2: best .. 31: smallest)")
    p.add_argument("--shard-bytes", type=float, default=D.shard_bytes, help="target shard size in bytes")
    p.add_argument("--max-samples-per-shard", type=int, default=D.max_samples_per_shard, help="0: no limit")
    p.add_argument("--decode-device", choices=["auto", "cpu", "gpu"], default="auto", help="decoding device")
    p.add_argument("--seed", type=int, default=D.seed, help="sample order across shards")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray only: CPUs to use")
    p.add_argument("--progress-every", type=float, default=D.progress_every_s, help="seconds between progress lines")
    p.add_argument("--retry-rejects", default="missing",
                   help="comma-separated reject reasons to try again on a rerun, 'all' or 'none' (missing: "
                        "once the video exists); inputs whose file or annotation changed are always retried")
    p.add_argument("--lease-wait", type=float, default=0.0,
                   help="seconds to wait for another job writing into --out before giving up (exit 2)")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace, device: str) -> PreprocessConfig:
    return PreprocessConfig(dataset=a.dataset, videos=a.videos, annotations=a.annotations, split=a.split,
                            out=a.out, short_side=a.short_side, max_fps=a.max_fps, codec=a.codec, gop=a.gop,
                            crf=a.crf, mjpeg_q=a.mjpeg_q, shard_bytes=int(a.shard_bytes),
                            max_samples_per_shard=a.max_samples_per_shard, device=device, seed=a.seed,
                            progress_every_s=a.progress_every,
                            retry_rejects=tuple(r for r in a.retry_rejects.split(",") if r and r != "none"),
                            lease_wait_s=a.lease_wait)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    # Validate before Ray starts: a wrong config, a bad annotation or an output another job is writing
    # fails in a second, with one line and exit 2, not after cluster start-up.
    try:
        cfg = config_from_args(a, "cpu" if a.decode_device == "auto" else a.decode_device)
        listing = prepare_listing(cfg)
    except (ValueError, AnnotationError) as e:  # AnnotationError is a ValueError; named for the reader
        return user_error("preprocess", e)
    import ray

    started = False
    created = not _exists(cfg.out)
    try:
        with hold(cfg.out, f"preprocess {cfg.split}", wait_s=cfg.lease_wait_s, log=_log):
            started = _connect_and_check(a)
            if a.decode_device == "auto" and ray.cluster_resources().get("GPU", 0) > 0:
                cfg = config_from_args(a, "gpu")
            result = run_preprocess(cfg, listing=listing)
    except (LeaseHeld, ClusterPathError) as e:
        if created and isinstance(e, ClusterPathError):  # the lease made --out: a refused path leaves none
            _remove_empty_output(cfg.out)
        return user_error("preprocess", e)
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


def _connect_and_check(a: argparse.Namespace) -> bool:
    """Connect to Ray (True when this started it) and refuse paths that not every node sees."""
    from workflows.cluster.shared_storage import alive_nodes, cluster_path_problems

    try:
        started = connect_ray(a.num_cpus)
    except ValueError as e:  # RAY_ADDRESS names something a driver cannot join
        raise ClusterPathError(str(e)) from e
    # Decode tasks run on every node and read the videos; the output must be where all can find it.
    problems = cluster_path_problems({"--videos": a.videos, "--annotations": a.annotations, "--out": a.out},
                                     alive_nodes())
    if problems:
        raise ClusterPathError("; ".join(problems))
    return started


if __name__ == "__main__":
    sys.exit(main())
