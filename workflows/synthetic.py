"""Write a small synthetic dataset in a native layout (real codecs): for tests, the demo and trying the jobs.

    cast-synthetic --dataset ssv2 --out data/synth_ssv2 --num-classes 8 --bad 3
    python workflows/synthetic.py ...   (the same, from a checkout)

The dataset itself is ``pipelines.synthetic``; this is its command line.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.synthetic import SynthConfig, write_dataset
from pipelines.synthetic_tasks import format_oracles
from workflows.cli.flags import CommandLine, Parsed


def command_line() -> CommandLine:
    command = CommandLine(SynthConfig, "cast-synthetic", __file__, description=__doc__)
    command.parser.add_argument("--out", required=True, default=argparse.SUPPRESS,
                                help="output folder (videos, annotations, synthetic.json)")
    return command


def main(argv: list[str] | None = None) -> int:
    return command_line().run(argv, synthesize)


def synthesize(parsed: Parsed) -> int:
    """The job: write the dataset into ``--out``, print its summary and what each kind of evidence reaches."""
    cfg: SynthConfig = parsed.config
    result = write_dataset(cfg, parsed.extra["out"])
    print(json.dumps({k: v for k, v in result.items() if k != "broken"} | {"broken": len(result["broken"])}))
    print(format_oracles(cfg.task, cfg.num_classes))  # what each kind of evidence can reach on this task
    return 0


if __name__ == "__main__":
    sys.exit(main())
