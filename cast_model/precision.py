"""Which arithmetic a run uses: one resolution of ``--precision`` and one autocast context, shared by
training, batch inference and prediction. Pure torch.

``auto`` picks bf16 autocast where bf16 matrix multiplies are fast: every CUDA GPU that supports bf16,
and CPUs with AVX-512 BF16 or AMX on which a short probe (a 512x768x3072 matmul, once per process)
measures bf16 at least ``MIN_CPU_BF16_SPEEDUP`` times faster than fp32 in CPU seconds. The flag alone
is not enough: on a 2-core AMD EPYC VM bf16 ran 4.8x fp32, on a 2-core Intel Xeon VM (AVX-512 BF16,
no AMX) it ran slower than fp32. fp32 everywhere else.
"""

from __future__ import annotations

import functools
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# /proc/cpuinfo flags of CPUs with native bf16 dot products (AVX-512 BF16: Cooper Lake, Sapphire Rapids
# and later Xeons, AMD Zen 4 and later; AMX: Sapphire Rapids and later).
FAST_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
MIN_CPU_BF16_SPEEDUP = 1.2
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_NAMES = {v: k for k, v in _DTYPES.items()}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (Linux ``/proc/cpuinfo``); empty where it is not readable."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return frozenset()
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_fast_bf16(flags: frozenset[str] | None = None) -> str | None:
    """The flag that makes bf16 fast on this CPU (``"amx_bf16"`` before ``"avx512_bf16"``), else None."""
    flags = cpu_flags() if flags is None else flags
    return next((f for f in reversed(FAST_BF16_CPU_FLAGS) if f in flags), None)


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup(threads: int) -> float:
    """fp32 over bf16 CPU seconds of a 512x768x3072 matmul on ``threads`` threads (best of 5 each,
    interleaved so that load from other work falls on both alike). About 0.2 s, once per process."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 768, generator=gen), torch.randn(768, 3072, generator=gen)
    pairs = {torch.float32: (a, b), torch.bfloat16: (a.bfloat16(), b.bfloat16())}
    best = dict.fromkeys(pairs, float("inf"))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for rep in range(6):
            for dtype, (x, y) in pairs.items():
                start = time.process_time()
                torch.mm(x, y)
                if rep:  # the first is a warm-up (kernel selection)
                    best[dtype] = min(best[dtype], time.process_time() - start)
    finally:
        torch.set_num_threads(previous)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def resolve_precision(name: str, device: torch.device | str, flags: frozenset[str] | None = None) -> torch.dtype | None:
    """The autocast dtype for ``--precision name`` on ``device``; None means plain fp32.

    ``flags`` overrides the CPU flags (for tests). ``auto`` on a CPU runs the bf16 probe. fp16 on a CPU is refused: its CPU kernels are slow
    and it needs loss scaling, which only the GPU path sets up.
    """
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"precision: unsupported device type {device.type!r} (expected cpu or cuda)")
    if name == "fp32":
        return None
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        fast = cpu_fast_bf16(flags) and cpu_bf16_speedup(torch.get_num_threads()) >= MIN_CPU_BF16_SPEEDUP
        return torch.bfloat16 if fast else None
    if name == "fp16" and device.type == "cpu":
        raise ValueError("precision 'fp16' is for GPUs; on a CPU use 'bf16' (or 'auto')")
    return _DTYPES[name]


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast to ``dtype`` on ``device``'s type, or nothing (fp32) when dtype is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


# Modules whose weights autocast casts to the low-precision dtype on every call (torch's autocast lists
# for CPU and CUDA both hold linear and convolutions).
_AUTOCAST_CAST_MODULES = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d)


def store_frozen_weights(model: torch.nn.Module, dtype: torch.dtype | None) -> int:
    """Keep the frozen weights that autocast feeds to matmuls and convolutions in ``dtype`` itself.

    Under autocast a frozen fp32 weight is cast on every forward (autocast caches casts only of
    weights that require grad), and each cast copy is kept for backward: the frozen experts cost
    their fp32 copy plus a low-precision one per step. Stored once in ``dtype`` they cost half of
    the fp32 copy and no casts, and the output is bit for bit the same (the same round-to-nearest
    cast, done once). LayerNorms, position tables and every trainable parameter stay fp32. A no-op
    for ``dtype`` None (plain fp32). Returns how many parameters were converted.

    Only for code that runs the model under ``autocast(…, dtype)``: outside it, the matmuls would
    meet fp32 inputs.
    """
    if dtype is None or dtype == torch.float32:
        return 0
    converted = 0
    for module in model.modules():
        if not isinstance(module, _AUTOCAST_CAST_MODULES):
            continue
        for param in module.parameters(recurse=False):
            if not param.requires_grad and param.dtype != dtype:
                param.data = param.data.to(dtype)
                converted += param.numel()
    return converted


def describe(name: str, device: torch.device | str, dtype: torch.dtype | None) -> str:
    """One log line saying which path runs, e.g. ``precision auto -> bf16 autocast on cpu (avx512_bf16)``."""
    device = torch.device(device)
    path = "fp32" if dtype is None else f"{_NAMES[dtype]} autocast"
    why = ""
    if device.type == "cpu":
        flag = cpu_fast_bf16()
        speed = f", bf16 matmul x{cpu_bf16_speedup(torch.get_num_threads()):.2f} of fp32" if flag else ""
        why = f" ({flag or 'no AVX-512 BF16/AMX'}{speed})"
    elif device.type == "cuda":
        why = f" ({torch.cuda.get_device_name(device)})"
    return f"precision {name} -> {path} on {device.type}{why}"


__all__ = ["PRECISIONS", "cpu_flags", "cpu_fast_bf16", "cpu_bf16_speedup", "resolve_precision", "autocast", "describe",
           "store_frozen_weights"]
