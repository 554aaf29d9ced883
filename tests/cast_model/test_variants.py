"""The ablation's networks at tiny sizes: single experts, late fusion, no exchange, one direction;
which parameters train; checkpoints round-trip; B-CAST's attention maps captured on demand."""

from __future__ import annotations

import pytest
import torch

from cast_model import CAST, CASTConfig, ConfigError, freeze_experts, load_checkpoint, load_experts, save_checkpoint
from cast_model.attention import attention_profiles, capture_attention

SMALL = dict(embed_dim=32, depth=2, num_heads=4, num_frames=8, img_size=32, patch_size=8, num_classes=5)

VARIANTS = {
    "cast": dict(),
    "spatial": dict(experts="spatial", bcast_blocks=()),
    "temporal": dict(experts="temporal", bcast_blocks=()),
    "late_fusion": dict(bcast_blocks=(), fusion="concat"),
    "no_exchange": dict(bcast_blocks=()),
    "t2s_only": dict(directions=("t2s",)),
    "s2t_only": dict(directions=("s2t",)),
}


def small(**overrides) -> CASTConfig:
    return CASTConfig.preset("tiny", **{**SMALL, **overrides})


def clips(cfg: CASTConfig, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, cfg.num_frames, cfg.img_size, cfg.img_size)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_forward_and_only_its_trainable_parts_learn(name):
    cfg = small(**VARIANTS[name])
    model = freeze_experts(CAST(cfg)).train()
    out = model(clips(cfg))
    assert out.shape == (2, 5)
    out.sum().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable), name
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable), name
    # Frozen: every expert weight (stems, attention, MLPs, their norms); trainable: adapters, B-CAST, head.
    assert not [n for n in trainable if "_stem." in n or ".attn.qkv" in n or ".mlp.fc" in n], name
    assert "head.weight" in trainable


@pytest.mark.parametrize("side, other", [("spatial", "temporal"), ("temporal", "spatial")])
def test_single_expert_holds_nothing_of_the_other(side, other):
    model = CAST(small(**VARIANTS[side]))
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    assert not [n for n in names if other in n or ".bcast." in n]
    assert [n for n in names if n.startswith(f"{side}_stem.")]
    with pytest.raises(ValueError, match=f"no {other} expert"):
        load_experts(model, **{("clip" if other == "spatial" else "videomae"): {}})


def test_late_fusion_concatenates_and_differs_from_no_exchange():
    late, none = CAST(small(**VARIANTS["late_fusion"])), CAST(small(**VARIANTS["no_exchange"]))
    assert late.head.in_features == 2 * none.head.in_features
    s, t = torch.randn(3, 32), torch.randn(3, 32)
    with torch.no_grad():
        for m in (late, none):
            for a in m.head_adapters():
                a.fc2.weight.normal_()
        # concat: the head's first half reads only the spatial side
        late.head.weight[:, 32:] = 0
        moved = late.forward_head(s, t + 1.0)
        assert torch.allclose(moved, late.forward_head(s, t))
        assert not torch.allclose(none.forward_head(s, t + 1.0), none.forward_head(s, t))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_has_verb_and_noun_heads_and_each_reads_what_it_should(name):
    cfg = small(**VARIANTS[name], head="verb_noun", num_verbs=4, num_nouns=6)
    model = freeze_experts(CAST(cfg)).train()
    out = model(clips(cfg))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"verb": (2, 4), "noun": (2, 6)}
    (out["verb"].sum() + out["noun"].sum()).backward()
    assert model.head_verb.weight.grad is not None and model.head_noun.weight.grad is not None
    D = cfg.embed_dim
    s, t = torch.randn(3, D), torch.randn(3, D)
    with torch.no_grad():
        if cfg.experts != "both":  # one expert: both heads read its feature
            one = s if cfg.experts == "spatial" else t
            args = (one, None) if cfg.experts == "spatial" else (None, one)
            before = model.forward_head(*args)
            after = model.forward_head(*[a if a is None else a + 1.0 for a in args])
            assert all(not torch.allclose(before[h], after[h]) for h in ("verb", "noun"))
            return
        base = model.forward_head(s, t)
        moved_t = model.forward_head(s, t + 1.0)
        moved_s = model.forward_head(s + 1.0, t)
    if cfg.fusion == "concat":  # late fusion: each head reads both experts
        assert model.head_noun.in_features == model.head_verb.in_features == 2 * D
        assert not torch.allclose(base["noun"], moved_t["noun"]) and not torch.allclose(base["verb"], moved_s["verb"])
    else:  # CAST's EK100 heads: the noun from the spatial feature, the verb from the temporal one
        assert torch.equal(base["noun"], moved_t["noun"]) and torch.equal(base["verb"], moved_s["verb"])
        assert not torch.allclose(base["noun"], moved_s["noun"]) and not torch.allclose(base["verb"], moved_t["verb"])


def test_one_direction_builds_only_its_cross_attention():
    t2s = CAST(small(**VARIANTS["t2s_only"]))
    s2t = CAST(small(**VARIANTS["s2t_only"]))
    assert t2s.blocks[0].bcast.t2s is not None and t2s.blocks[0].bcast.s2t is None
    assert s2t.blocks[0].bcast.s2t is not None and s2t.blocks[0].bcast.t2s is None


@pytest.mark.parametrize("bad, message", [
    (dict(experts="spatial"), "bcast_blocks must be"),
    (dict(experts="spatial", bcast_blocks=(), fusion="concat"), "has one"),
    (dict(experts="visual"), "experts must be one of"),
    (dict(fusion="product"), "fusion must be one of"),
    (dict(directions=()), "directions is empty"),
])
def test_bad_variant_configs_name_the_problem(bad, message):
    with pytest.raises(ConfigError, match=message):
        small(**bad)


@pytest.mark.parametrize("name", ["spatial", "temporal", "late_fusion"])
def test_variant_checkpoints_round_trip(tmp_path, name):
    cfg = small(**VARIANTS[name])
    model = freeze_experts(CAST(cfg)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    x = clips(cfg)
    save_checkpoint(tmp_path / "full", model)
    loaded, _ = load_checkpoint(tmp_path / "full")
    assert loaded.config == cfg
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    save_checkpoint(tmp_path / "trainable", model, trainable_only=True)
    base = CAST(cfg)
    base.load_state_dict({k: v for k, v in model.state_dict().items() if not CAST.is_trainable(k)}, strict=False)
    loaded, _ = load_checkpoint(tmp_path / "trainable", base=freeze_experts(base))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_captured_attention_is_the_fused_paths_and_has_the_windows_shapes():
    cfg = small()
    model = CAST(cfg).eval()
    with torch.no_grad():
        for b in model.blocks:  # open the B-CAST branches (zero at init) so they change the output
            b.bcast.s_up.weight.normal_(std=0.1)
            b.bcast.t_up.weight.normal_(std=0.1)
        x = clips(cfg, 3)
        fused = model(x)
        with capture_attention(model) as maps:
            explicit = model(x)
        assert model.blocks[0].bcast.t2s.on_attention is None  # the fused path is back
    assert torch.allclose(fused, explicit, atol=1e-5)
    T, N = cfg.num_steps, cfg.num_patches
    assert [(m.block, m.direction) for m in maps] == [(0, "t2s"), (0, "s2t"), (1, "t2s"), (1, "s2t")]
    assert maps[0].probs.shape == (3 * N, cfg.num_heads, T, T)  # T2S: each patch along time
    assert maps[1].probs.shape == (3 * T, cfg.num_heads, N, N)  # S2T: each step across space
    for m in maps:
        prof = attention_profiles(m, cfg)
        assert prof["time"].shape == (3, T, T) and prof["space"].shape == (3, T, N)
        assert torch.allclose(prof["time"].sum(-1), torch.ones(3, T), atol=1e-5)
        assert torch.allclose(prof["space"].sum(-1), torch.ones(3, T), atol=1e-5)


def test_space_time_windows_reduce_to_both_profiles():
    cfg = small(t2s_window="space_time", s2t_window="space_time", depth=1)
    model = CAST(cfg).eval()
    with torch.no_grad(), capture_attention(model) as maps:
        model(clips(cfg))
    prof = attention_profiles(maps[0], cfg)
    assert prof["time"].shape == (2, cfg.num_steps, cfg.num_steps)
    assert prof["space"].shape == (2, cfg.num_steps, cfg.num_patches)
    assert torch.allclose(prof["space"].sum(-1), torch.ones(2, cfg.num_steps), atol=1e-5)
