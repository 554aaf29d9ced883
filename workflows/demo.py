"""`make demo`: the whole path on a fresh machine, CPU only, in minutes.

synthetic SSV2-layout videos -> shards (train + validation) -> the project's pretrained tiny experts
(made once, cached under data/experts) -> CAST at the micro geometry fine-tuned from them, experts
frozen, on 2 Ray workers -> validation top-1 against the demo's pass mark -> registered as ``cast-ssv2``
(aliases candidate / champion) -> how to open the MLflow UI. Idempotent: data already made is reused; an
interrupted training resumes from its checkpoint; a finished demo is reported, not retrained (``--fresh``
trains a new run and registers a new version, which becomes champion only if it beats the current one).
The steps are ``workflows.training.demo``.
"""

from __future__ import annotations

import sys

from workflows.cli.flags import CommandLine, Parsed
from workflows.training.demo import DemoConfig, run_demo


def command_line() -> CommandLine:
    return CommandLine(DemoConfig, "cast-demo", __file__, description=__doc__)


def main(argv: list[str] | None = None) -> int:
    return command_line().run(argv, demo)


def demo(parsed: Parsed) -> int:
    return run_demo(parsed.config)


if __name__ == "__main__":
    sys.exit(main())
