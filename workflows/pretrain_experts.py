"""Pretrain the project's tiny experts once (cached under data/experts/<preset>/; `make demo` and the
ablation call the same function and reuse the files).

    cast-pretrain-experts                  # the micro experts
    cast-pretrain-experts --preset smoke   # seconds: the smallest, for checks
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from workflows.cli.flags import CommandLine, Parsed
from workflows.experts import ensure_experts
from workflows.experts.pretrain import ExpertsConfig


def command_line() -> CommandLine:
    return CommandLine(ExpertsConfig, "cast-pretrain-experts", __file__, description=__doc__)


def main(argv: list[str] | None = None) -> int:
    """The ``cast-pretrain-experts`` command."""
    return command_line().run(argv, pretrain)


def pretrain(parsed: Parsed) -> int:
    """The job: the cached experts, pretrained first when missing; their files and lineage as JSON."""
    cfg: ExpertsConfig = parsed.config
    t0 = time.perf_counter()
    files = ensure_experts(Path(cfg.root) if cfg.root else None, preset=cfg.preset,
                           log=lambda m: print(f"[experts {time.strftime('%H:%M:%S')}] {m}", flush=True))
    print(json.dumps({"spatial": str(files.spatial), "temporal": str(files.temporal), **files.lineage,
                      "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
