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


def test_skew_comparison_counts_agreement_probabilities_and_pixels():
    import numpy as np

    from benchmarks.skew import PATHS, compare

    views = np.zeros((2, 4, 8, 8, 3), np.uint8)
    moved = views.copy()
    moved[0, 0, 0, 0, 0] = 200  # one pixel of one video differs on the raw path
    probs = {"a": np.array([0.7, 0.2, 0.1]), "b": np.array([0.2, 0.5, 0.3])}
    preds = {p: {"a": (probs["a"], views), "b": (probs["b"], views)} for p in PATHS}
    preds["raw/pyav"] = {"a": (np.array([0.4, 0.5, 0.1]), moved), "b": (probs["b"], views)}
    out = compare(preds, {"a": 0, "b": 1})
    assert out["videos"] == 2 and out["top1"] == {"shard/dali": 1.0, "shard/pyav": 1.0, "raw/pyav": 0.5}
    pair = out["pairs"]["shard/dali vs raw/pyav"]
    assert pair["top1_agreement"] == 0.5 and abs(pair["mean_abs_dprob_top"] - 0.15) < 1e-9
    assert pair["pixel_max_abs"] == 200 and out["pairs"]["shard/dali vs shard/pyav"]["pixel_max_abs"] == 0


def test_skew_fine_tunes_the_demo_model(tmp_path):
    """The benchmark trains what the demo trains: the micro recipe from the pretrained experts, frozen, at
    the demo's total batch (here one worker accumulating two batches of 8) and lr."""
    from types import SimpleNamespace

    from benchmarks.skew import train_config
    from workflows.training import demo

    experts = SimpleNamespace(spatial=tmp_path / "spatial.safetensors", temporal=tmp_path / "temporal.safetensors")
    a = SimpleNamespace(preset=demo.PRESET, epochs=15, seed=0)
    cfg = train_config(str(tmp_path / "shards"), experts, a, ["--loader-threads", "1"])
    assert (cfg.preset, cfg.freeze_experts, cfg.epochs, cfg.precision) == ("micro", True, 15, "fp32")
    assert (cfg.clip_weights, cfg.videomae_weights) == (str(experts.spatial), str(experts.temporal))
    assert (cfg.total_batch_size, cfg.batch_size, cfg.update_freq) == (16, 8, 2) and abs(cfg.lr - 2e-3) < 1e-12
    assert cfg.loader_threads == 1  # the flags after -- come last


def test_ek100_layout_keeps_recordings_contiguous_and_mixing_counts_pairs():
    import numpy as np

    from benchmarks.ek100_shuffle import layout, mixing

    recs = layout(10, 500, seed=0)
    assert abs(len(recs) - 500) <= 10 and (np.diff(recs) >= 0).all() and set(recs) == set(range(10))
    out = mixing([np.array([1, 1, 2, 3]), np.array([4, 4, 4, 4])])
    assert out == {"distinct_recordings_per_batch": 2.0, "same_recording_pairs": round((1 / 6 + 1) / 2, 3)}
