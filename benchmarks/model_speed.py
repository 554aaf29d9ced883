"""CAST forward and training-step speed and peak memory: ours beside the paper's code, in one run.

    python -m benchmarks.model_speed --paper-code /work/paper_cast/bidir_modeling_crossattn.py
    python -m benchmarks.model_speed --preset tiny --batch-size 8 --steps 5      # ours only

Every measurement runs in its own process (peak memory is that process's own: peak RSS on CPU,
``torch.cuda.max_memory_allocated`` on a GPU), and the variants run interleaved, round after round, so
load from other work on the machine falls on all of them alike. Every process gets the same input
(a seeded batch), the same parameters (the paper's model is built once, randomly initialised, and
copied into ours through ``cast_model.convert``: nothing is downloaded) and the same torch threads. A
training step is forward + backward + AdamW over the trainable parameters, the experts frozen. The
figures kept are the best of the rounds; CPU seconds (``time.process_time`` of the child, all its
threads) move far less than wall time when the machine is shared.

The machine's limit: a 2048x768x3072 matmul (the shape of the experts' MLP matmuls) in fp32 and bf16
on the same threads, against which the forward's achieved multiply-adds per second are set. The
paper's code is CC-BY-NC: keep its file outside this repository and pass its path.

It imports ``benchmarks.paper_twin``: run it as a module from the repository root, as above, or from a
bare checkout as ``PYTHONPATH=. python benchmarks/model_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.paper_twin import (allow_paper_bf16, batch, build_paper_model, load_paper_module,
                                   step_fns, timed)
from cast_model import CAST, CASTConfig, freeze_experts
from cast_model.convert import convert_official_cast
from cast_model.precision import resolve_precision, store_frozen_weights
from cast_model.summary import multiply_adds_per_view

MATMUL = (2048, 768, 3072)  # (tokens, in, out) of an expert's MLP matmul at batch 1
MODES = ("eager", "ckpt", "compile")  # ours only: activation checkpointing per block, torch.compile


def model_config(preset: str) -> CASTConfig:
    """SSV2's head and fine-tuning drop path (the issue's setting)."""
    return CASTConfig.preset(preset, num_classes=174, drop_path_rate=0.3)


# -- one measurement, in a child process ---------------------------------------------------------------
def load_weights(model: torch.nn.Module, path: str, ours: bool) -> None:
    """Copy the saved paper-named parameters into ``model`` one tensor at a time (no second full copy
    of the weights, which would raise this process's peak RSS)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        names = list(f.keys())
        rename = {k: k for k in names}
        if ours:
            placeholders = {k: torch.empty(0) for k in names}
            by_id = {id(v): k for k, v in placeholders.items()}
            rename = {by_id[id(v)]: new for new, v in convert_official_cast(placeholders).items()}
        own = dict(model.named_parameters())
        if set(rename.values()) != set(own):
            raise RuntimeError(f"weights do not fit: {sorted(set(own) ^ set(rename.values()))[:5]}")
        with torch.no_grad():
            for name in names:
                own[rename[name]].copy_(f.get_tensor(name))


def build(spec: dict, cfg: CASTConfig, amp: torch.dtype | None) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(model, callable) for a variant: the paper's or ours (eager, checkpointed or compiled). Ours
    keeps its frozen weights in the autocast dtype, as training and inference do."""
    if spec["code"] == "paper":
        module = load_paper_module(spec["paper_code"])
        allow_paper_bf16(module)
        model = build_paper_model(module, cfg)
    else:
        model = freeze_experts(CAST(cfg.replace(grad_checkpointing=spec["mode"] == "ckpt")))
    if spec.get("weights"):
        load_weights(model, spec["weights"], ours=spec["code"] == "ours")
    model = model.to(spec["device"])
    if spec["code"] == "ours":
        store_frozen_weights(model, amp)
    return model, (torch.compile(model) if spec["mode"] == "compile" else model)


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def measure(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    cfg = model_config(spec["preset"])
    amp = resolve_precision(spec["precision"], device)
    model, run = build(spec, cfg, amp)
    x, y = batch(cfg, spec["batch_size"], device)
    forward, train_step = step_fns(model, x, y, amp, run)
    out = {k: spec[k] for k in ("code", "precision", "mode", "batch_size", "device")}
    for name, fn in (("forward", forward), ("train_step", train_step)):
        fn()  # warm-up (and compilation)
        wall, cpu = timed(fn, spec["steps"], device)
        out |= {f"{name}_s": round(wall, 3), f"{name}_cpu_s": round(cpu, 3),
                f"{name}_peak_gib": round(peak_gib(device), 3)}
    return out


def matmul_limit(dtype: torch.dtype, device: torch.device, seconds: float = 1.5) -> tuple[float, float]:
    """(GMAC per second, GMAC per CPU second) of a 2048x768 @ 768x3072 matmul on this process's
    threads. The second moves far less when other work shares the machine."""
    m, k, n = MATMUL
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        a @ b
        calls += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    gmac = m * k * n * calls / 1e9
    return gmac / (time.perf_counter() - start), gmac / (time.process_time() - cpu)


def child(spec: dict) -> dict:
    if spec.get("limit"):
        torch.set_num_threads(spec["threads"])
        device = torch.device(spec["device"])
        out = {}
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            out[f"{name}_gmacs"], out[f"{name}_gmacs_per_cpu_s"] = matmul_limit(dtype, device)
        return out
    return measure(spec)


# -- the parent: rounds of interleaved children, then the comparison ------------------------------------
def run_child(spec: dict) -> dict:
    # As a module from the repository root (the folder above benchmarks/), as the parent was started.
    cmd = [sys.executable, "-m", "benchmarks.model_speed", "--_child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise SystemExit(f"measurement {spec.get('code')}/{spec.get('precision')}/{spec.get('mode')} failed:\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def save_paper_weights(paper_code: str, cfg: CASTConfig, folder: str) -> str:
    """Build the paper's model once (seeded random init) and save its parameters for every child."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build_paper_model(load_paper_module(paper_code), cfg)
    path = str(Path(folder) / "paper_params.safetensors")
    save_file({k: v.detach().contiguous() for k, v in model.named_parameters()}, path)
    return path


def variants(args: argparse.Namespace) -> list[dict]:
    base = {"preset": args.preset, "batch_size": args.batch_size, "steps": args.steps, "threads": args.threads,
            "device": args.device, "paper_code": args.paper_code}
    out = []
    for precision in args.precisions:
        if args.paper_code:
            out.append(base | {"code": "paper", "precision": precision, "mode": "eager"})
        for mode in ["eager", *args.ours_modes]:
            out.append(base | {"code": "ours", "precision": precision, "mode": mode})
    return out


def best_of(rows: list[dict]) -> dict:
    """Per variant, the lowest of each figure over the rounds."""
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r["code"], r["precision"], r["mode"])
        if key not in best:
            best[key] = dict(r)
        else:
            best[key] |= {k: min(v, best[key][k]) for k, v in r.items() if k.endswith(("_s", "_gib"))}
    return best


def report(best: dict[tuple, dict], limit: dict, gmac_per_view: float, batch_size: int) -> None:
    """The table: per variant, best wall and CPU seconds, peak memory, the forward's multiply-adds per
    CPU second as a fraction of the matmul's (its precision's), and ratios to the paper's fp32."""
    ref = best.get(("paper", "fp32", "eager"))
    print(f"\n{'code':6} {'precision':9} {'mode':6} {'fwd s':>7} {'fwd cpu-s':>9} {'step s':>7} {'step cpu-s':>10} "
          f"{'peak GiB':>8} {'GMAC/cpu-s':>10} {'of limit':>8}" + ("   / paper fp32: fwd, step (cpu-s), peak; wall" if ref else ""))
    for (code, precision, mode), r in best.items():
        achieved = gmac_per_view * batch_size / r["forward_cpu_s"]
        dtype = "fp32" if precision == "fp32" else "bf16"
        line = (f"{code:6} {precision:9} {mode:6} {r['forward_s']:7.2f} {r['forward_cpu_s']:9.2f} "
                f"{r['train_step_s']:7.2f} {r['train_step_cpu_s']:10.2f} {r['train_step_peak_gib']:8.2f} "
                f"{achieved:10.1f} {achieved / limit[f'{dtype}_gmacs_per_cpu_s']:8.0%}")
        if ref:
            line += (f"   {r['forward_cpu_s'] / ref['forward_cpu_s']:.2f}x {r['train_step_cpu_s'] / ref['train_step_cpu_s']:.2f}x "
                     f"{r['train_step_peak_gib'] / ref['train_step_peak_gib']:.2f}x; "
                     f"{r['forward_s'] / ref['forward_s']:.2f}x {r['train_step_s'] / ref['train_step_s']:.2f}x")
        print(line)


def print_limit(limit: dict, gmac: float) -> None:
    print(f"# limit: {MATMUL[0]}x{MATMUL[1]}x{MATMUL[2]} matmul, fp32 {limit['fp32_gmacs']:.0f} GMAC/s "
          f"({limit['fp32_gmacs_per_cpu_s']:.0f} per CPU-s), bf16 {limit['bf16_gmacs']:.0f} GMAC/s "
          f"({limit['bf16_gmacs_per_cpu_s']:.0f} per CPU-s); the model: {gmac:.1f} GMAC per view", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper-code", help="path of the paper's models/bidir_modeling_crossattn.py (kept outside the repo)")
    parser.add_argument("--preset", default="base", choices=["base", "tiny"], help="tiny: ours only")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of them is kept")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "auto"])
    parser.add_argument("--ours-modes", nargs="*", default=[], choices=MODES[1:],
                        help="more variants of ours: ckpt (activation checkpointing per block), compile (torch.compile)")
    parser.add_argument("--json", help="also write the rows and the summary to this file")
    parser.add_argument("--rows", help="only report: the JSON lines of an earlier run's output (one cut short, say); "
                                       "the limit is measured anew")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(child(json.loads(args._child))))
        return
    if args.paper_code and args.preset != "base":
        parser.error("the paper's code builds 14x14 patches of 16 px only: use --preset base with --paper-code")
    load = os.getloadavg()
    print(f"# {platform.processor() or platform.machine()}, {args.threads} torch threads, device {args.device}, "
          f"torch {torch.__version__}, load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    cfg = model_config(args.preset)
    gmac = multiply_adds_per_view(cfg) / 1e9
    limit = run_child({"limit": True, "threads": args.threads, "device": args.device})
    print_limit(limit, gmac)
    rows = []
    if args.rows:
        rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines() if line.startswith("{")]
        args.rounds = 0
    with tempfile.TemporaryDirectory() as tmp:
        weights = save_paper_weights(args.paper_code, cfg, tmp) if args.paper_code and args.rounds else None
        for round_ in range(args.rounds):
            for spec in variants(args):
                row = run_child(spec | {"weights": weights})
                rows.append(row | {"round": round_})
                print(json.dumps(row), flush=True)
    best = best_of(rows)
    report(best, limit, gmac, args.batch_size)
    load = os.getloadavg()
    print(f"# load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"limit": limit, "gmac_per_view": gmac, "rows": rows,
                                               "best": [v for v in best.values()]}, indent=1))


if __name__ == "__main__":
    main()
