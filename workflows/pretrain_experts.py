"""Pretrain the project's tiny experts once (cached under data/experts/<preset>/; `make demo` and the
ablation call the same function and reuse the files).

    python workflows/pretrain_experts.py                 # the micro experts
    python workflows/pretrain_experts.py --preset smoke  # seconds: the smallest, for checks
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from workflows.experts import ensure_experts
from workflows.experts.pretrain import PRETRAIN_PRESETS


def main(argv: list[str] | None = None) -> int:
    """The ``cast-pretrain-experts`` command."""
    p = argparse.ArgumentParser(prog="cast-pretrain-experts", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRETRAIN_PRESETS), default="micro")
    p.add_argument("--root", type=Path, default=None, help="cache folder (default: data/experts)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    files = ensure_experts(a.root, preset=a.preset,
                           log=lambda m: print(f"[experts {time.strftime('%H:%M:%S')}] {m}", flush=True))
    print(json.dumps({"spatial": str(files.spatial), "temporal": str(files.temporal), **files.lineage,
                      "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
