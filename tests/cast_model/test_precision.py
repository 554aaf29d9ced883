"""cast_model.precision: how --precision resolves, the one autocast context, and how far bf16 autocast
on CPU moves the tiny model from fp32 (logits, top-1, gradients)."""

from __future__ import annotations

import pytest
import torch

from cast_model import CASTConfig, load_official_cast
from cast_model import precision
from cast_model.model import QuickGELU
from cast_model.precision import autocast, cpu_fast_bf16, describe, resolve_precision

from tests.support.cast_reference import random_official_state_dict

FAST = frozenset({"fpu", "avx512f", "avx512_bf16"})
SLOW = frozenset({"fpu", "avx2", "avx512f"})


def test_auto_is_bf16_on_bf16_fast_cpus_and_fp32_elsewhere(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda threads: 4.0)
    assert resolve_precision("auto", "cpu", flags=FAST) == torch.bfloat16
    assert resolve_precision("auto", "cpu", flags=frozenset({"amx_bf16"})) == torch.bfloat16
    assert resolve_precision("auto", "cpu", flags=SLOW) is None
    assert cpu_fast_bf16(SLOW) is None
    assert cpu_fast_bf16(FAST | {"amx_bf16"}) == "amx_bf16"
    # The flag without the speed: a CPU that has AVX-512 BF16 but runs bf16 matmuls no faster stays fp32.
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda threads: 0.8)
    assert resolve_precision("auto", "cpu", flags=FAST) is None


def test_bf16_probe_measures_a_ratio():
    ratio = precision.cpu_bf16_speedup(1)
    assert 0.01 < ratio < 100  # a real measurement of this CPU; which side wins depends on the CPU


def test_explicit_precisions_and_bad_input():
    assert resolve_precision("fp32", "cpu", flags=FAST) is None
    assert resolve_precision("bf16", "cpu", flags=SLOW) == torch.bfloat16  # asked for: runs, if slowly
    with pytest.raises(ValueError, match="'fp16' is for GPUs"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half", "cpu")
    with pytest.raises(ValueError, match="unsupported device type 'meta'"):
        resolve_precision("auto", "meta")


def test_auto_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == torch.float16
    assert resolve_precision("fp16", "cuda") == torch.float16


def test_autocast_context_and_log_line():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with autocast("cpu", None):
        assert layer(x).dtype == torch.float32
    with autocast(torch.device("cpu"), torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
    assert describe("fp32", "cpu", None).startswith("precision fp32 -> fp32 on cpu")
    assert describe("auto", "cpu", torch.bfloat16).startswith("precision auto -> bf16 autocast on cpu")


def test_quick_gelu_gradient_saving_only_its_input():
    x = torch.randn(64, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(QuickGELU(), (x,))


def _tiny_pair(seed: int) -> tuple[torch.nn.Module, CASTConfig]:
    cfg = CASTConfig.preset("tiny", num_classes=10)
    # Every branch non-zero (the release-format random state), so bf16 reaches every part of the model.
    return load_official_cast(random_official_state_dict(cfg, seed=seed, dtype=torch.float32), cfg), cfg


def test_bf16_agrees_with_fp32_on_the_tiny_model():
    """Bounds on this model (random weights, 32 random clips): logits within 3% (relative L2), top-1
    the same on at least 90% of the clips (measured with seeds 11-13: 0.5-0.9% and 100%)."""
    model, cfg = _tiny_pair(seed=11)
    x = torch.randn(32, 3, cfg.num_frames, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
        with autocast("cpu", torch.bfloat16):
            low = model(x).float()
    rel = ((low - ref).norm() / ref.norm()).item()
    agree = (low.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert rel < 0.03, rel
    assert agree >= 0.9, agree


def test_bf16_training_gradients_agree_with_fp32():
    """One training step's gradients of the trainable parts: cosine similarity >= 0.99 per tensor group."""
    grads = []
    for amp in (None, torch.bfloat16):
        model, cfg = _tiny_pair(seed=12)
        model.train()
        x = torch.randn(8, 3, cfg.num_frames, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(1))
        y = torch.arange(8) % cfg.num_classes
        torch.manual_seed(0)  # the same drop-path masks in both runs
        with autocast("cpu", amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0).item()
    assert cos > 0.99, cos


def test_bf16_predictor_stores_its_weights_once_and_gives_autocasts_numbers():
    """Inference in bf16 keeps every matmul/conv weight in bf16 (no cast per batch) and predicts
    exactly what autocast over the fp32 weights predicts."""
    import functools

    import numpy as np

    from workflows.inference.replica import ViewsPredictor, video_probs

    model, cfg = _tiny_pair(seed=13)
    reference, _ = _tiny_pair(seed=13)
    labels = {"label": {str(i): f"c{i}" for i in range(cfg.num_classes)}}
    views = np.random.default_rng(0).integers(0, 256, (3, 2, cfg.num_frames, cfg.img_size, cfg.img_size, 3), np.uint8)
    out = ViewsPredictor(model, labels, top_k=3, device=torch.device("cpu"), precision="bf16")(
        {"views": views, "reason": np.array(["", "", ""])})
    assert model.blocks[0].temporal.mlp.fc1.weight.dtype == torch.bfloat16 and model.head.weight.dtype == torch.bfloat16
    assert model.blocks[0].temporal.norm1.weight.dtype == torch.float32
    with torch.no_grad():
        probs = video_probs(reference.eval(), torch.from_numpy(views), functools.partial(autocast, "cpu", torch.bfloat16))
    top = probs["label"].float().topk(3)
    assert out["top_ids"].tolist() == top.indices.tolist()
    np.testing.assert_array_equal(out["top_probs"], top.values.numpy().astype(np.float32))
