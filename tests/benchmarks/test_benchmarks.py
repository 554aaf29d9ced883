"""The speed benchmarks' own code: the GPU check end to end on CPU (smoke), and the paper-code twin
(run only where ``CAST_PAPER_CODE`` names the paper's bidir_modeling_crossattn.py, never in the repo)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.paper_twin import load_paper_module
from cast_model.config import CASTConfig

PAPER_CODE = os.environ.get("CAST_PAPER_CODE")


def test_gpu_check_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    gpu_check.main(["--device", "cpu", "--smoke", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["preset"] == "smoke" and result["precision"] == "bf16 autocast"
    assert result["forward_gflops_per_clip"] > 0 and result["train_step_gflops_per_clip"] > result["forward_gflops_per_clip"]
    rows = result["rows"]
    assert [(r["code"], r["compiled"], r["batch_size"]) for r in rows] == [("ours", False, 1), ("ours", False, 2)]
    assert all(r["forward_clips_per_s"] > 0 and r["train_step_clips_per_s"] > 0 for r in rows)
    assert "forward_mfu" not in rows[0]  # no peak known for a CPU
    table = gpu_check.table(result)
    assert "ours   False" in table


def test_step_closures_run_a_compiled_model():
    """The compiled variants (model_speed's ``compile`` mode, gpu_check's compiled rows) pass a compiled
    module as ``run``; it must be called, not tested for truth (an OptimizedModule raises on len())."""
    from benchmarks.paper_twin import batch, step_fns
    from cast_model import CAST, freeze_experts

    cfg = CASTConfig.preset("base", num_classes=4, **gpu_check.SMOKE)
    model = freeze_experts(CAST(cfg))
    calls = []
    compiled = torch.compile(model, backend=lambda gm, inputs: calls.append(1) or gm.forward)
    x, y = batch(cfg, 2, torch.device("cpu"))
    forward, train_step = step_fns(model, x, y, None, compiled)
    forward()
    train_step()
    assert calls  # the compiled module ran (dynamo handed its graphs to the backend)


def test_gpu_check_peaks_by_device_name():
    assert gpu_check.peak_tflops(torch.device("cpu"), 100.0) == 100.0
    assert gpu_check.peak_tflops(torch.device("cpu"), None) is None
    assert dict(gpu_check.PEAK_BF16_TFLOPS)["H200"] == 989.4


def test_missing_paper_code_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no file at"):
        load_paper_module(tmp_path / "absent.py")
    wrong = tmp_path / "other.py"
    wrong.write_text("x = 1\n")
    with pytest.raises(SystemExit, match="no STCrossTransformer"):
        load_paper_module(wrong)
    needs = tmp_path / "needs.py"
    needs.write_text("import not_a_real_package_xyz\n")
    with pytest.raises(SystemExit, match="needs the Python package 'not_a_real_package_xyz'"):
        load_paper_module(needs)


@pytest.mark.skipif(not PAPER_CODE, reason="CAST_PAPER_CODE (the paper's model file, kept outside the repo) not set")
def test_ours_from_paper_computes_what_the_paper_computes():
    from benchmarks.paper_twin import batch, build_paper_model, ours_from_paper

    cfg = CASTConfig.preset("base", num_classes=10, init_scale=1.0, **gpu_check.SMOKE)
    torch.manual_seed(0)
    paper = build_paper_model(load_paper_module(Path(PAPER_CODE)), cfg)
    with torch.no_grad():
        for p in paper.parameters():  # the zero-initialised branches too
            p.add_(0.02 * torch.randn_like(p))
    ours = ours_from_paper(paper, cfg)
    x, _ = batch(cfg, 2, torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), paper.eval()(x), rtol=1e-4, atol=1e-5)
    trainable = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert trainable(ours) == trainable(paper)
