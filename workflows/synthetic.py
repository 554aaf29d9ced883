"""Write a small synthetic dataset in a native layout (real codecs): for tests, the demo and trying the jobs.

    cast-synthetic --dataset ssv2 --out data/synth_ssv2 --num-classes 8 --bad 3
    python workflows/synthetic.py ...   (the same)

The dataset itself is ``pipelines.synthetic``; this is its command line.
"""

from __future__ import annotations

import argparse
import json
import sys

from cast_model.vocab import DATASETS
from pipelines.synthetic import MAX_CLASSES, SynthConfig, write_dataset
from pipelines.synthetic_tasks import TASKS, format_oracles, max_classes
from workflows.cli.common import user_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    D = SynthConfig  # the defaults live in the config
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", required=True, choices=DATASETS, help="the native layout to write")
    p.add_argument("--out", required=True, help="output folder (videos, annotations, synthetic.json)")
    p.add_argument("--num-classes", type=int, default=D.num_classes, help=f"classes, 2..{MAX_CLASSES} (motion), 2..{max_classes('binding')} (binding)")
    p.add_argument("--videos-per-class", type=int, default=D.videos_per_class,
                   help="training videos per class; validation gets a quarter (at least 1)")
    p.add_argument("--size", type=int, default=D.size, help="frame height in pixels (even, >= 32); width is 4/3 of it")
    p.add_argument("--frames", type=int, default=D.frames, help="frames per video (>= 4)")
    p.add_argument("--fps", type=float, default=D.fps, help="frame rate written into the files")
    p.add_argument("--seed", type=int, default=D.seed, help="random seed (same seed, same files)")
    p.add_argument("--bad", type=int, default=D.bad,
                   help="broken files (truncated, empty, garbage bytes) and as many missing entries")
    p.add_argument("--task", choices=TASKS, default=D.task,
                   help="motion: one object, appearance x direction; binding: two objects, the horizontal one's "
                        "appearance x direction")
    p.add_argument("--heldout-per-class", type=int, default=D.heldout_per_class,
                   help="labelled held-out videos per class, rendered from another seed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        cfg = SynthConfig(a.dataset, a.num_classes, a.videos_per_class, a.size, a.frames, a.fps, a.seed, a.bad,
                          a.task, a.heldout_per_class)
    except ValueError as e:
        return user_error("cast-synthetic", e)
    result = write_dataset(cfg, a.out)
    print(json.dumps({k: v for k, v in result.items() if k != "broken"} | {"broken": len(result["broken"])}))
    print(format_oracles(cfg.task, cfg.num_classes))  # what each kind of evidence can reach on this task
    return 0


if __name__ == "__main__":
    sys.exit(main())
