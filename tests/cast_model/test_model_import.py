"""Expert and checkpoint import from files in the released formats, and the project's own format."""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from cast_model import (CAST, CASTConfig, CheckpointError, ConversionError, convert_official_cast, freeze_experts,
                        load_checkpoint, load_experts, load_official_cast, read_state_dict, save_checkpoint)
from cast_model.model import QuickGELU, sinusoid_table

from tests.support.cast_reference import random_official_state_dict
from tests.support.models import small


# -- CLIP in the OpenAI release layout (a TorchScript archive with the real key names) ---------------------
class _ResBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(d, 4 * d)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * d, d))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (L, B, D), sequence first as in CLIP
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, d: int, depth: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[_ResBlock(d, heads) for _ in range(depth)])


class _Visual(nn.Module):
    def __init__(self, cfg: CASTConfig) -> None:
        super().__init__()
        d, p = cfg.embed_dim, cfg.patch_size
        self.conv1 = nn.Conv2d(3, d, p, p, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(d) * 0.1)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.num_patches + 1, d) * 0.1)
        self.ln_pre = nn.LayerNorm(d)
        self.transformer = _Transformer(d, cfg.depth, cfg.num_heads)
        self.ln_post = nn.LayerNorm(d)
        self.proj = nn.Parameter(torch.randn(d, 16))


class TinyOpenAICLIP(nn.Module):
    """The OpenAI CLIP module layout (visual tower + text-side parameters); forward = the image
    tower up to ln_post of the class token."""

    def __init__(self, cfg: CASTConfig) -> None:
        super().__init__()
        self.visual = _Visual(cfg)
        self.token_embedding = nn.Embedding(10, 16)
        self.ln_final = nn.LayerNorm(16)
        self.text_projection = nn.Parameter(torch.randn(16, 16))
        self.logit_scale = nn.Parameter(torch.ones([]))
        with torch.no_grad():  # non-trivial norms so a mix-up of ln_1 / ln_2 would show
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.normal_(1.0, 0.2)
                    m.bias.normal_(0.0, 0.2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(image).flatten(2).transpose(1, 2)
        cls = v.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
        x = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding).permute(1, 0, 2)
        x = v.transformer.resblocks(x)
        return v.ln_post(x[0])


def _expert_only(cfg: CASTConfig) -> CAST:
    """A CAST whose branches are all identity at init: its features are the experts' own."""
    return CAST(cfg.replace(bcast_blocks=())).eval()


@pytest.fixture(scope="module")
def one_step() -> CASTConfig:
    return small(num_frames=2)  # a single time step: the spatial feature is CLIP's CLS for that frame


def test_openai_clip_torchscript_release(tmp_path, one_step):
    torch.manual_seed(0)
    clip = TinyOpenAICLIP(one_step).eval()
    x = torch.randn(2, 3, one_step.num_frames, one_step.img_size, one_step.img_size)
    frame = x[:, :, 1]
    archive = tmp_path / "ViT-B-16.pt"
    torch.jit.trace(clip, frame).save(str(archive))

    with pytest.raises(ConversionError, match="TorchScript"):
        read_state_dict(archive)
    model = load_experts(_expert_only(one_step), clip=archive, allow_torchscript=True)
    with torch.no_grad():
        spatial, _ = model.forward_features(x)
        torch.testing.assert_close(spatial, clip(frame), rtol=1e-5, atol=1e-5)


def test_openai_clip_state_dict_as_torch_file(tmp_path, one_step):
    clip = TinyOpenAICLIP(one_step)
    path = tmp_path / "clip_state.pt"
    torch.save(clip.state_dict(), path)
    model = load_experts(_expert_only(one_step), clip=path)
    assert torch.equal(model.blocks[1].spatial.attn.qkv.weight, clip.visual.transformer.resblocks[1].attn.in_proj_weight)
    assert torch.equal(model.spatial_norm.weight, clip.visual.ln_post.weight)


def test_timm_clip_safetensors(tmp_path, one_step):
    torch.manual_seed(1)
    cfg = one_step
    vit = VisionTransformer(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                            depth=cfg.depth, num_heads=cfg.num_heads, pre_norm=True, global_pool="token",
                            num_classes=16, act_layer="quick_gelu", norm_layer=partial(nn.LayerNorm, eps=1e-5)).eval()
    with torch.no_grad():
        for m in vit.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    model = load_experts(_expert_only(cfg), clip=path)
    x = torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        spatial, _ = model.forward_features(x)
        torch.testing.assert_close(spatial, vit.forward_features(x[:, :, 1])[:, 0], rtol=1e-5, atol=1e-5)


def test_clip_position_table_is_resized_for_another_image_size(tmp_path, one_step):
    clip = TinyOpenAICLIP(one_step)
    bigger = one_step.replace(img_size=one_step.img_size * 2)
    model = load_experts(_expert_only(bigger), clip=clip.state_dict())
    pos = model.spatial_stem.pos_embed
    assert pos.shape == (bigger.num_patches + 1, bigger.embed_dim)
    assert torch.equal(pos[0], clip.visual.positional_embedding[0])  # the CLS row is kept as is


# -- VideoMAE ---------------------------------------------------------------------------------------
def videomae_state(cfg: CASTConfig, pretrain: bool) -> dict[str, torch.Tensor]:
    """Random weights with VideoMAE's released key names (pre-training: encoder + decoder)."""
    D, P, hid = cfg.embed_dim, cfg.patch_size, int(cfg.embed_dim * cfg.mlp_ratio)
    g = torch.Generator().manual_seed(3)
    state = {"patch_embed.proj.weight": (D, 3, 2, P, P), "patch_embed.proj.bias": (D,)}
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        state.update({b + "norm1.weight": (D,), b + "norm1.bias": (D,), b + "attn.qkv.weight": (3 * D, D),
                      b + "attn.q_bias": (D,), b + "attn.v_bias": (D,), b + "attn.proj.weight": (D, D),
                      b + "attn.proj.bias": (D,), b + "norm2.weight": (D,), b + "norm2.bias": (D,),
                      b + "mlp.fc1.weight": (hid, D), b + "mlp.fc1.bias": (hid,), b + "mlp.fc2.weight": (D, hid),
                      b + "mlp.fc2.bias": (D,)})
    if pretrain:
        state = {"encoder." + k: v for k, v in state.items()}
        state.update({"encoder.norm.weight": (D,), "encoder.norm.bias": (D,), "mask_token": (1, 1, D),
                      "encoder_to_decoder.weight": (D, D), "decoder.blocks.0.attn.qkv.weight": (3 * D, D),
                      "decoder.norm.weight": (D,), "decoder.head.weight": (1536, D)})
    else:
        state.update({"fc_norm.weight": (D,), "fc_norm.bias": (D,), "head.weight": (400, D), "head.bias": (400,)})
    return {k: torch.randn(s, generator=g) for k, s in state.items()}


@pytest.mark.parametrize("pretrain, wrapper", [(True, "model"), (False, "module")])
def test_videomae_release(tmp_path, pretrain, wrapper):
    cfg = small()
    state = videomae_state(cfg, pretrain)
    path = tmp_path / "videomae.pth"
    torch.save({wrapper: state, "epoch": 799}, path)
    model = load_experts(_expert_only(cfg), videomae=path)
    prefix = "encoder." if pretrain else ""
    assert torch.equal(model.blocks[1].temporal.attn.v_bias, state[prefix + "blocks.1.attn.v_bias"])
    assert torch.equal(model.temporal_stem.proj.weight, state[prefix + "patch_embed.proj.weight"])
    if not pretrain:
        assert torch.equal(model.temporal_norm.weight, state["fc_norm.weight"])


def test_videomae_backbone_prefix_and_fixed_positions():
    cfg = small()
    state = {"backbone." + k: v for k, v in videomae_state(cfg, pretrain=False).items()}
    table = sinusoid_table(cfg.num_steps * cfg.num_patches, cfg.embed_dim)[None]
    load_experts(_expert_only(cfg), videomae={**state, "backbone.pos_embed": table})
    with pytest.raises(ConversionError, match="learned position"):
        load_experts(_expert_only(cfg), videomae={**state, "backbone.pos_embed": torch.randn_like(table)})


def test_expert_import_names_missing_and_unexpected_keys():
    cfg = small()
    state = videomae_state(cfg, pretrain=False)
    del state["blocks.1.attn.q_bias"]
    with pytest.raises(ConversionError, match=r"missing blocks\.1\.temporal\.attn\.q_bias"):
        load_experts(_expert_only(cfg), videomae=state)
    state = videomae_state(cfg, pretrain=False)
    state["blocks.0.attn.k_bias"] = torch.zeros(cfg.embed_dim)
    with pytest.raises(ConversionError, match=r"blocks\.0\.attn\.k_bias"):
        load_experts(_expert_only(cfg), videomae=state)


def test_expert_with_more_blocks_than_the_model_is_an_error():
    state = videomae_state(small(depth=3), pretrain=False)
    with pytest.raises(ConversionError, match=r"unexpected blocks\.2\."):
        load_experts(_expert_only(small(depth=2)), videomae=state)


# -- the paper's CAST release --------------------------------------------------------------------------
def test_official_checkpoint_under_model_key_file(tmp_path):
    cfg = small(num_classes=5)
    state = random_official_state_dict(cfg, dtype=torch.float32)
    path = tmp_path / "cast_ssv2.pth"
    torch.save({"model": state, "epoch": 3}, path)
    model = load_official_cast(path, cfg)
    assert torch.equal(model.blocks[0].bcast.s2t.proj.weight, state["blocks.0.s2t_cross.t2s_proj.weight"])
    assert torch.equal(model.blocks[1].bcast.t2s.kv.bias, state["blocks.1.t2s_cross.t2s_kv_bias"])
    assert not model.blocks[0].spatial.attn.qkv.weight.requires_grad and model.head.weight.requires_grad


def test_official_checkpoint_errors_name_the_keys():
    cfg = small(num_classes=5)
    state = random_official_state_dict(cfg, dtype=torch.float32)
    broken = {k: v for k, v in state.items() if k != "blocks.1.cross_t_up.bias"}
    with pytest.raises(ConversionError, match=r"missing blocks\.1\.bcast\.t_up\.bias"):
        load_official_cast(broken, cfg)
    with pytest.raises(ConversionError, match="unexpected keys blocks.0.extra_thing"):
        convert_official_cast({**state, "blocks.0.extra_thing": torch.zeros(1)})
    with pytest.raises(ConversionError, match=r"head\.weight \(5, 32\) vs \(9, 32\)"):
        load_official_cast(state, cfg.replace(num_classes=9))


def test_official_checkpoint_at_another_size_is_resized():
    cfg = small(num_classes=5)
    state = random_official_state_dict(cfg, dtype=torch.float32)
    target = cfg.replace(num_frames=16, img_size=48)
    model = load_official_cast(state, target)
    assert model.blocks[0].bcast.t2s.q_pos.shape == (target.num_steps, target.bcast_dim)
    assert model.blocks[0].bcast.s2t.kv_pos.shape == (target.num_patches, target.bcast_dim)
    out = model(torch.randn(1, 3, 16, 48, 48))
    assert out.shape == (1, 5) and torch.isfinite(out).all()


def test_not_a_checkpoint_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ConversionError, match="not a weights-only torch checkpoint"):
        read_state_dict(path)


# -- the project's own format ----------------------------------------------------------------------------
def test_checkpoint_round_trip_keeps_outputs_and_labels(tmp_path):
    cfg = small(num_classes=3)
    model = load_official_cast(random_official_state_dict(cfg, dtype=torch.float32), cfg)
    labels = {"label": {"0": "push", "1": "pull", "2": "lift"}}
    save_checkpoint(tmp_path / "ckpt", model, labels)
    loaded, loaded_labels = load_checkpoint(tmp_path / "ckpt")
    x = torch.randn(1, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded_labels == labels and loaded.config == cfg


def test_trainable_only_checkpoint_needs_its_base(tmp_path):
    cfg = small(num_classes=3)
    base_state = random_official_state_dict(cfg, dtype=torch.float32)
    model = load_official_cast(base_state, cfg)
    save_checkpoint(tmp_path / "ckpt", model, trainable_only=True)
    with pytest.raises(CheckpointError, match="base="):
        load_checkpoint(tmp_path / "ckpt")
    fresh = load_official_cast({**base_state, "head.weight": torch.zeros(3, cfg.embed_dim)}, cfg)
    loaded, _ = load_checkpoint(tmp_path / "ckpt", base=fresh)
    assert torch.equal(loaded.head.weight, model.head.weight)


def test_label_map_must_fit_the_heads(tmp_path):
    model = freeze_experts(CAST(small(num_classes=3)))
    with pytest.raises(CheckpointError, match="0..2"):
        save_checkpoint(tmp_path / "ckpt", model, {"label": {"0": "a", "1": "b"}})
    with pytest.raises(CheckpointError, match="heads"):
        save_checkpoint(tmp_path / "ckpt", model, {"verb": {"0": "a"}})


def test_files_that_are_not_what_they_claim(tmp_path):
    model = CAST(small(num_classes=3))
    path = save_checkpoint(tmp_path / "ckpt", model)
    (path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)
    (path / "cast.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="does not describe a cast-checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="cast.json is missing"):
        load_checkpoint(tmp_path / "elsewhere")
