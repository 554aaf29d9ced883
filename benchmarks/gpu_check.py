"""GPU check in one short call: ours beside the paper's code, bf16, batch sizes 1-32, torch.compile
on and off; clips/s, peak memory and MFU against the GPU's dense bf16 peak. One JSON and a table.

    python -m benchmarks.gpu_check --paper-code /path/to/bidir_modeling_crossattn.py --out gpu_check.json
    python -m benchmarks.gpu_check --device cpu --smoke            # seconds, on CPU: checks the script

Needs only torch, timm (which brings safetensors) and einops (for the paper's file): no Ray, DALI,
MLflow or PyAV, no network. Built to finish in under 8 minutes on one GPU: measurements past
``--budget-s`` are skipped and recorded as skipped. A training step is forward + backward + AdamW over
the trainable parameters, the experts frozen. MFU counts the multiply-adds torch's FlopCounterMode
sees in one forward (and forward + backward for a step; the frozen experts need no weight
gradients), x2 FLOPs each, per second, over the peak.

It imports ``benchmarks.paper_twin``: run it as a module from the repository root, as above, or from a
bare checkout (the GPU machine) as ``PYTHONPATH=. python benchmarks/gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.paper_twin import (allow_paper_bf16, batch, build_paper_model, load_paper_module,
                                   ours_from_paper, step_fns, timed)
from cast_model.config import CASTConfig
from cast_model.model import CAST
from cast_model.optim import freeze_experts
from cast_model.precision import store_frozen_weights

# Dense bf16 tensor-core peaks (TFLOPS, no sparsity), matched by substring of the device name, first match.
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("H800", 989.4), ("GH200", 989.4),
                    ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.1), ("L40", 181.0),
                    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.2), ("RTX 3090", 71.0))
# Smoke: a very small model the paper's code can also build (it hard-codes 14x14 patches).
SMOKE = dict(embed_dim=32, depth=1, num_heads=2, num_frames=2, img_size=56, patch_size=4)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def flops_per_clip(cfg: CASTConfig) -> tuple[float, float]:
    """(forward, training step) FLOPs of one clip, counted on the meta device."""
    with torch.device("meta"):
        model = freeze_experts(CAST(cfg.replace(fused_attention=False, drop_path_rate=0.0)))
        x = torch.empty(1, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    fwd, step = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with fwd, torch.no_grad():
        model(x)
    with step:
        model(x).sum().backward()
    return float(fwd.get_total_flops()), float(step.get_total_flops())


def memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def measure(model: torch.nn.Module, cfg: CASTConfig, batch_size: int, compiled: bool, args: argparse.Namespace,
            device: torch.device) -> dict:
    """Forward and training-step clips/s and peak memory of one model at one batch size."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    x, y = batch(cfg, batch_size, device)
    run = torch.compile(model) if compiled else model
    forward, train_step = step_fns(model, x, y, torch.bfloat16, run)
    out = {}
    for name, fn in (("forward", forward), ("train_step", train_step)):
        for _ in range(args.warmup):
            fn()
        wall, _ = timed(fn, args.steps, device)
        out[f"{name}_clips_per_s"] = round(batch_size / wall, 2)
    out["peak_mem_gib"] = memory_gib(device)
    return out


def models(cfg: CASTConfig, args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    """Ours, and the paper's with the same parameters when its file is given (kept on the CPU). Ours
    keeps its frozen weights in bf16, as training and inference under bf16 autocast do."""
    torch.manual_seed(0)
    nets = {}
    if args.paper_code:
        module = load_paper_module(args.paper_code)
        allow_paper_bf16(module)
        nets["paper"] = build_paper_model(module, cfg)
        ours = ours_from_paper(nets["paper"], cfg)
    else:
        ours = freeze_experts(CAST(cfg))
    store_frozen_weights(ours, torch.bfloat16)
    return nets | {"ours": ours}


def plan(args: argparse.Namespace, codes: list[str]) -> list[tuple[bool, int, str]]:
    """(compiled, batch size, code) in the order run: all eager first, then compiled, largest batch first."""
    eager = [(False, b, c) for b in args.batch_sizes for c in codes]
    compiled = [(True, b, c) for b in args.compile_batch_sizes for c in codes]
    return eager + compiled


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    device = torch.device(args.device)
    cfg = CASTConfig.preset("base", num_classes=174, drop_path_rate=0.3, **(SMOKE if args.smoke else {}))
    fwd_flops, step_flops = flops_per_clip(cfg)
    peak = peak_tflops(device, args.peak_tflops)
    nets = models(cfg, args)
    rows = []
    for compiled, batch_size, code in plan(args, list(nets)):
        row = {"code": code, "compiled": compiled, "batch_size": batch_size}
        if time.perf_counter() - start > args.budget_s:
            rows.append(row | {"skipped": f"past the {args.budget_s:.0f} s budget"})
            continue
        model = nets[code].to(device)
        try:
            row |= measure(model, cfg, batch_size, compiled, args, device)
        except (torch.OutOfMemoryError, RuntimeError) as err:  # recorded in the row, never hidden
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        nets[code] = model.cpu()
        torch._dynamo.reset()
        if peak and "forward_clips_per_s" in row:
            row["forward_mfu"] = round(fwd_flops * row["forward_clips_per_s"] / (peak * 1e12), 4)
            row["train_mfu"] = round(step_flops * row["train_step_clips_per_s"] / (peak * 1e12), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device_name(device),
            "torch": torch.__version__, "preset": "smoke" if args.smoke else "base", "precision": "bf16 autocast",
            "peak_bf16_tflops": peak, "forward_gflops_per_clip": fwd_flops / 1e9,
            "train_step_gflops_per_clip": step_flops / 1e9, "elapsed_s": round(time.perf_counter() - start, 1),
            "rows": rows}


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def table(result: dict) -> str:
    lines = [f"# {result['device']}, torch {result['torch']}, {result['preset']}, {result['precision']}, "
             f"peak {result['peak_bf16_tflops']} TFLOPS bf16, {result['elapsed_s']} s",
             f"{'code':6} {'compile':7} {'batch':>5} {'fwd clips/s':>11} {'step clips/s':>12} {'peak GiB':>8} "
             f"{'fwd MFU':>7} {'step MFU':>8} {'step vs paper':>13}"]
    paper = {(r["compiled"], r["batch_size"]): r for r in result["rows"] if r["code"] == "paper"}
    for r in result["rows"]:
        head = f"{r['code']:6} {str(r['compiled']):7} {r['batch_size']:>5} "
        if "forward_clips_per_s" not in r:
            lines.append(head + (r.get("skipped") or r.get("error", "")))
            continue
        ref = paper.get((r["compiled"], r["batch_size"]), {}).get("train_step_clips_per_s")
        vs = f"{r['train_step_clips_per_s'] / ref:.2f}x" if ref else "-"
        mem = "-" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.1f}"
        lines.append(head + f"{r['forward_clips_per_s']:>11} {r['train_step_clips_per_s']:>12} {mem:>8} "
                     f"{_pct(r.get('forward_mfu')):>7} {_pct(r.get('train_mfu')):>8} "
                     f"{vs:>13}")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper-code", help="path of the paper's models/bidir_modeling_crossattn.py")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--compile-batch-sizes", type=int, nargs="*", default=[32, 8],
                        help="batch sizes also run under torch.compile (each compiles anew)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of this device (default: known table)")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="start no measurement later than this (a compiled one may take 1-2 minutes more)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, batch 1-2, one step, no compile")
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: pass --device cpu (with --smoke to check the script)")
    if args.smoke:
        args.batch_sizes, args.compile_batch_sizes, args.steps, args.warmup = [1, 2], [], 1, 1
    result = run(args)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"# wrote {args.out}")


if __name__ == "__main__":
    main()
