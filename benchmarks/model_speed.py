"""CAST forward and training-step speed and peak memory, fused attention beside explicit softmax(QK^T)V.

    python benchmarks/model_speed.py                      # tiny and base, CPU fp32 (or GPU bf16 + compile)
    python benchmarks/model_speed.py --presets tiny --batch-size 8 --steps 5

Each measurement runs in its own process so peak memory is its own (CPU: peak RSS of that process;
GPU: torch.cuda.max_memory_allocated). A training step is forward + backward + AdamW over the
trainable parameters (the experts frozen, as in fine-tuning).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cast_model import CAST, CASTConfig, freeze_experts, param_groups  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(preset: str, fused: bool, batch_size: int, steps: int, device_name: str, compile_model: bool) -> dict:
    device = torch.device(device_name)
    cfg = CASTConfig.preset(preset, num_classes=174, fused_attention=fused)
    model = freeze_experts(CAST(cfg)).to(device)
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-4)
    run = torch.compile(model) if compile_model else model
    x = torch.randn(batch_size, 3, cfg.num_frames, cfg.img_size, cfg.img_size, device=device)
    y = torch.randint(0, cfg.num_classes, (batch_size,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def forward() -> None:
        with torch.no_grad(), autocast:
            run(x)

    def train_step() -> None:
        with autocast:
            loss = torch.nn.functional.cross_entropy(run(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    figures = {}
    for name, fn, mode in (("forward", forward, model.eval), ("train_step", train_step, model.train)):
        mode()
        fn()  # warm-up (and compilation)
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        elapsed = time.perf_counter() - start
        figures[f"{name}_s"] = round(elapsed / steps, 4)
        figures[f"{name}_clips_per_s"] = round(batch_size * steps / elapsed, 3)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"preset": preset, "attention": "fused (SDPA)" if fused else "explicit", "batch_size": batch_size,
            "device": device_name, "compiled": compile_model, **figures, "peak_mem_gib": round(peak, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batch-size", type=int, nargs="+", default=None,
                        help="per preset (default: tiny 8, base 1 on CPU / 8 on GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: tiny 5, base 2 CPU / 10 GPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-compile", action="store_true", help="on a GPU, run eagerly")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")

    if args._child:  # one measurement, in a fresh process
        preset, fused, batch, steps = args._child.split(",")
        print(json.dumps(measure(preset, fused == "1", int(batch), int(steps), args.device,
                                 compile_model=gpu and not args.no_compile)))
        return

    cpu = platform.processor() or platform.machine()
    print(f"# machine: {cpu}, {torch.get_num_threads()} torch threads, device {args.device}, torch {torch.__version__}")
    rows = []
    for i, preset in enumerate(args.presets):
        batch = (args.batch_size[min(i, len(args.batch_size) - 1)] if args.batch_size
                 else (8 if preset == "tiny" or gpu else 1))
        steps = args.steps or (5 if preset == "tiny" else (10 if gpu else 2))
        for fused in (True, False):
            cmd = [sys.executable, __file__, "--device", args.device, "--_child", f"{preset},{int(fused)},{batch},{steps}"]
            if args.no_compile:
                cmd.append("--no-compile")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
            print(out, flush=True)
    print()
    print(f"{'preset':6} {'attention':13} {'batch':>5} {'fwd clips/s':>12} {'train clips/s':>14} {'peak GiB':>9}")
    for r in rows:
        print(f"{r['preset']:6} {r['attention']:13} {r['batch_size']:>5} {r['forward_clips_per_s']:>12} "
              f"{r['train_step_clips_per_s']:>14} {r['peak_mem_gib']:>9}")
    for preset in args.presets:
        fused, explicit = (r for r in rows if r["preset"] == preset)
        print(f"{preset}: fused/explicit training step speed-up x{fused['train_step_clips_per_s'] / explicit['train_step_clips_per_s']:.2f}, "
              f"peak memory x{fused['peak_mem_gib'] / explicit['peak_mem_gib']:.2f}")


if __name__ == "__main__":
    main()
