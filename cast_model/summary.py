"""Size and cost of a CAST config: ``python -m cast_model.summary --preset base --num-classes 174``.

Prints one JSON line: total and trainable parameters, and multiply-adds per view (the paper's
"FLOPs" count multiply-adds, as fvcore does).
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import PRESETS, CASTConfig
from .model import CAST, count_params
from .optim import freeze_experts


def multiply_adds_per_view(config: CASTConfig) -> float:
    """Multiply-adds of one forward pass on a single clip, counted on the meta device (no memory,
    no compute). Attention is counted in its explicit form, which FlopCounterMode sees as matmuls."""
    with torch.device("meta"):
        model = CAST(config.replace(fused_attention=False, drop_path_rate=0.0)).eval()
        clip = torch.empty(1, 3, config.num_frames, config.img_size, config.img_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(clip)
    return counter.get_total_flops() / 2


def summarize(config: CASTConfig) -> dict[str, float | int]:
    with torch.device("meta"):
        model = freeze_experts(CAST(config))
    return {
        "total_params": count_params(model),
        "trainable_params": count_params(model, trainable_only=True),
        "gflops_per_view": round(multiply_adds_per_view(config) / 1e9, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", choices=sorted(PRESETS))
    parser.add_argument("--num-classes", type=int)
    parser.add_argument("--head", choices=["single", "verb_noun"])
    parser.add_argument("--num-frames", type=int)
    parser.add_argument("--img-size", type=int)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"num_classes": args.num_classes, "head": args.head,
                                   "num_frames": args.num_frames, "img_size": args.img_size}.items()
                 if v is not None}
    config = CASTConfig.preset(args.preset, **overrides)
    print(json.dumps({"preset": args.preset, **summarize(config)}))


if __name__ == "__main__":
    main()
