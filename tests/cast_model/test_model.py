"""The CAST network: sizes, numerics against an independent reference, variants, freezing, groups."""

from __future__ import annotations

import pytest
import torch

from cast_model import CAST, CASTConfig, ConfigError, count_params, freeze_experts, load_official_cast, param_groups
from cast_model.summary import multiply_adds_per_view, summarize
from cast_model.precision import store_frozen_weights

from tests.support.cast_reference import random_official_state_dict, reference_forward
from tests.support.models import small

def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# -- the paper's figures -------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, total, trainable", [
    (dict(num_classes=174), 217_228_590, 45_205_038),
    (dict(num_classes=400), 217_402_384, 45_378_832),
    (dict(head="verb_noun", num_verbs=97, num_nouns=300), 216_808_333, 44_784_781),
])
def test_base_parameter_counts_match_the_paper(overrides, total, trainable):
    with torch.device("meta"):
        model = freeze_experts(CAST(CASTConfig.preset("base", **overrides)))
    assert count_params(model) == total
    assert count_params(model, trainable_only=True) == trainable


@pytest.mark.slow
def test_base_multiply_adds_match_the_paper():
    gmac = multiply_adds_per_view(CASTConfig.preset("base", num_classes=174)) / 1e9
    assert abs(gmac - 390.5) / 390.5 < 0.005


def test_summary_reports_tiny_preset():
    figures = summarize(CASTConfig.preset("tiny"))
    assert figures["trainable_params"] < figures["total_params"]
    assert figures["gflops_per_view"] > 0


# -- numerics: equal to the paper's computation -----------------------------------------------------
@pytest.mark.parametrize("head", ["single", "verb_noun"])
def test_matches_reference_in_float64(head):
    cfg = small(head=head, num_classes=7, num_verbs=5, num_nouns=6)
    state = random_official_state_dict(cfg, seed=1, dtype=torch.float32)
    model = load_official_cast(state, cfg).double()
    state = {k: v.double() for k, v in state.items()}
    x = torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size, dtype=torch.float64)
    with torch.no_grad():
        ours, ref = model(x), reference_forward(state, x, cfg)
    if head == "single":
        assert relative_error(ours, ref) < 1e-10
    else:
        for name in ("verb", "noun"):
            assert relative_error(ours[name], ref[name]) < 1e-10


def test_fused_and_explicit_attention_agree():
    cfg = small()
    state = random_official_state_dict(cfg, seed=2)
    fused = load_official_cast(state, cfg).double()
    explicit = load_official_cast(state, cfg.replace(fused_attention=False)).double()
    x = torch.randn(1, 3, cfg.num_frames, cfg.img_size, cfg.img_size, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(fused(x), explicit(x)) < 1e-12


def test_time_window_really_mixes_time_only():
    """T2S along time: the spatial tokens of patch n depend on temporal tokens at patch n only."""
    cfg = small(depth=1)
    model = load_official_cast(random_official_state_dict(cfg, seed=3, dtype=torch.float32), cfg)
    block = model.blocks[0]
    B, T, N, D = 1, cfg.num_steps, cfg.num_patches, cfg.embed_dim
    s = torch.randn(B * T, 1 + N, D)
    t = torch.randn(B, T * N, D, requires_grad=True)
    out_s, _ = block.bcast(s, t)
    # gradient of spatial patch 0 of frame 0 w.r.t. the temporal tokens: nonzero only at patch 0
    out_s[0, 1].sum().backward()
    grad = t.grad.view(T, N, D).abs().sum(-1)
    assert (grad[:, 0] > 0).all() and (grad[:, 1:] == 0).all()


def test_space_window_keeps_steps_apart_and_cls_out():
    cfg = small(depth=1)
    model = load_official_cast(random_official_state_dict(cfg, seed=4, dtype=torch.float32), cfg)
    T, N, D = cfg.num_steps, cfg.num_patches, cfg.embed_dim
    s = torch.randn(T, 1 + N, D, requires_grad=True)
    t = torch.randn(1, T * N, D)
    _, out_t = model.blocks[0].bcast(s, t)
    out_t.view(T, N, D)[1].sum().backward()  # all temporal tokens of step 1
    grad = s.grad.abs().sum(-1)  # (T, 1+N)
    assert (grad[1, 1:] > 0).all()
    assert (grad[:, 0] == 0).all(), "the spatial CLS token must not be a key of S2T"
    assert (grad[0] == 0).all() and (grad[2:] == 0).all()


# -- variants ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    dict(bcast_blocks=(1,)),
    dict(bcast_blocks=()),
    dict(directions=("t2s",)),
    dict(directions=("s2t",)),
    dict(t2s_window="space_time", s2t_window="space_time"),
    dict(t2s_window="space", s2t_window="time"),
    dict(down_ratio=4, embed_dim=64),
    dict(num_frames=4, img_size=48, depth=3),
    dict(drop_path_rate=0.2, head_drop_rate=0.1),
])
def test_variants_build_and_train(overrides):
    cfg = small(num_classes=3, **overrides)
    model = freeze_experts(CAST(cfg)).train()
    x = torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    out = model(x)
    assert out.shape == (2, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_no_exchange_has_no_bcast_parameters():
    model = CAST(small(bcast_blocks=()))
    assert not [n for n, _ in model.named_parameters() if ".bcast." in n]


def test_verb_noun_heads_sit_on_their_sides():
    cfg = small(head="verb_noun", num_verbs=4, num_nouns=9)
    model = CAST(cfg).eval()
    out = model(torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size))
    assert out["verb"].shape == (2, 4) and out["noun"].shape == (2, 9)
    s, t = torch.randn(1, cfg.embed_dim), torch.randn(1, cfg.embed_dim)
    moved = model.forward_head(s, t + 1.0)
    base = model.forward_head(s, t)
    assert torch.equal(moved["noun"], base["noun"]) and not torch.equal(moved["verb"], base["verb"])


@pytest.mark.parametrize("bad, message", [
    (dict(img_size=30), "img_size"),
    (dict(num_frames=7), "num_frames"),
    (dict(embed_dim=30), "num_heads"),
    (dict(bcast_blocks=(5,)), "bcast_blocks"),
    (dict(t2s_window="diagonal"), "t2s_window"),
    (dict(head="multi"), "head"),
    (dict(directions=("t2s", "sideways")), "directions"),
])
def test_bad_configs_fail_with_the_field_named(bad, message):
    with pytest.raises(ConfigError, match=message):
        small(**bad)


def test_unknown_preset_and_field():
    with pytest.raises(ConfigError, match="unknown preset"):
        CASTConfig.preset("huge")
    with pytest.raises(ConfigError, match="unknown CASTConfig fields"):
        CASTConfig.preset("tiny", num_class=3)


def test_config_round_trips_through_dict():
    cfg = small(bcast_blocks=(0,), directions=("s2t",))
    assert CASTConfig.from_dict(cfg.to_dict()) == cfg


def test_wrong_input_shape_is_a_clear_error():
    cfg = small()
    with pytest.raises(ValueError, match="expects input"):
        CAST(cfg)(torch.randn(1, 3, cfg.num_frames + 2, cfg.img_size, cfg.img_size))


# -- freezing and parameter groups -------------------------------------------------------------------
def test_freezing_follows_the_papers_policy():
    model = freeze_experts(CAST(small()))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "blocks.0.bcast.t2s.q_pos" in trainable and "blocks.1.temporal.mlp_adapter.fc1.weight" in trainable
    assert {"spatial_norm.weight", "temporal_norm.bias", "head.weight"} <= trainable
    assert "blocks.0.spatial.attn.qkv.weight" in frozen and "temporal_stem.proj.weight" in frozen
    assert "spatial_stem.pos_embed" in frozen and "blocks.1.temporal.attn.q_bias" in frozen


def test_param_groups_decay_and_layer_scales():
    cfg = small()
    model = freeze_experts(CAST(cfg))
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert set(by_name) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert by_name["blocks.0.bcast.s_down.weight"]["weight_decay"] == 0.05
    for no_decay in ("blocks.0.bcast.s_down.bias", "blocks.0.bcast.s_norm.weight", "blocks.0.bcast.t2s.q_pos",
                     "blocks.1.bcast.s2t.kv_pos", "spatial_norm.weight"):
        assert by_name[no_decay]["weight_decay"] == 0.0, no_decay
    assert by_name["head.weight"]["lr_scale"] == 1.0
    assert by_name["blocks.1.bcast.s_up.weight"]["lr_scale"] == 0.5
    assert by_name["blocks.0.bcast.s_up.weight"]["lr_scale"] == 0.25


# -- execution modes ---------------------------------------------------------------------------------
def test_grad_checkpointing_gives_the_same_gradients():
    cfg = small(num_classes=3)
    state = random_official_state_dict(cfg, seed=5, dtype=torch.float32)
    x = torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    grads = []
    for ckpt in (False, True):
        model = load_official_cast(state, cfg.replace(grad_checkpointing=ckpt)).train()
        model(x).square().sum().backward()
        grads.append(model.blocks[0].bcast.t2s.q.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_bf16_autocast_on_cpu_stays_close():
    cfg = small(num_classes=3)
    model = load_official_cast(random_official_state_dict(cfg, seed=6, dtype=torch.float32), cfg)
    x = torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.bfloat16
    assert relative_error(low.float(), ref) < 0.1


def test_frozen_weights_stored_in_bf16_change_no_bit_under_autocast():
    """Autocast casts frozen weights on every call; storing them in bf16 once must give the same
    logits and the same gradients bit for bit, with the trainable parameters and norms left fp32."""
    cfg = small(num_classes=3)
    state = random_official_state_dict(cfg, seed=7, dtype=torch.float32)
    x = torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    outs, grads, models = [], [], []
    for stored in (False, True):
        model = freeze_experts(load_official_cast(state, cfg)).train()
        frozen_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
        converted = store_frozen_weights(model, torch.bfloat16) if stored else 0
        torch.manual_seed(0)  # the same drop-path draws
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().square().sum().backward()
        outs.append(out)
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
        models.append((model, frozen_bytes, converted))
    assert torch.equal(outs[0], outs[1])
    assert grads[0].keys() == grads[1].keys() and all(torch.equal(grads[0][k], grads[1][k]) for k in grads[0])
    model, before, converted = models[1]
    after = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    assert converted > 0 and after == before - 2 * converted  # 4 -> 2 bytes for each converted weight
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert model.blocks[0].spatial.norm1.weight.dtype == torch.float32  # norms run in fp32 under autocast
    assert model.blocks[0].spatial.mlp.fc1.weight.dtype == torch.bfloat16
    assert store_frozen_weights(model, None) == 0  # fp32 runs keep every weight as it is


@pytest.mark.slow
def test_compiles_without_graph_breaks():
    cfg = small(num_classes=3)
    model = freeze_experts(CAST(cfg)).eval()
    x = torch.randn(1, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.gpu
def test_cuda_bf16_compiled_matches_fp32():
    cfg = small(num_classes=3)
    model = load_official_cast(random_official_state_dict(cfg, seed=7, dtype=torch.float32), cfg).cuda()
    x = torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size, device="cuda")
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = torch.compile(model)(x)
    assert relative_error(low.float(), ref) < 0.1
