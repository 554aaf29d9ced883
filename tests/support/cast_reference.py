"""An independent, functional statement of what the paper's CAST code computes, over a state dict in
the paper's release naming. Written from the paper's description and CAST-REFERENCE.md with explicit
einsums (no code shared with ``cast_model``), so agreement tests both the numerics and the key mapping.

Also builds random state dicts with the release's exact key names and shapes for any config.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from cast_model import CASTConfig

Tensor = torch.Tensor


def official_shapes(cfg: CASTConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the paper's checkpoint for ``cfg`` with its shape."""
    D, d, P = cfg.embed_dim, cfg.bcast_dim, cfg.patch_size
    T, N, hid = cfg.num_steps, cfg.num_patches, int(cfg.embed_dim * cfg.mlp_ratio)
    a = int(D * cfg.adapter_ratio)
    shapes: dict[str, tuple[int, ...]] = {
        "clip_conv1.weight": (D, 3, P, P),
        "clip_class_embedding": (D,),
        "clip_positional_embedding": (N + 1, D),
        "clip_ln_pre.weight": (D,), "clip_ln_pre.bias": (D,),
        "patch_embed.proj.weight": (D, 3, cfg.tubelet_size, P, P), "patch_embed.proj.bias": (D,),
        "clip_ln_post.weight": (D,), "clip_ln_post.bias": (D,),
        "vmae_fc_norm.weight": (D,), "vmae_fc_norm.bias": (D,),
    }

    def adapter(prefix: str) -> None:
        shapes.update({f"{prefix}.D_fc1.weight": (a, D), f"{prefix}.D_fc1.bias": (a,),
                       f"{prefix}.D_fc2.weight": (D, a), f"{prefix}.D_fc2.bias": (D,)})

    def linear(prefix: str, n_out: int, n_in: int) -> None:
        shapes.update({f"{prefix}.weight": (n_out, n_in), f"{prefix}.bias": (n_out,)})

    for i in range(cfg.depth):
        b = f"blocks.{i}."
        for ln in ("clip_ln_1", "clip_ln_2", "norm1", "norm2", "ln_s_cross", "ln_t_cross"):
            width = d if "cross" in ln else D
            shapes.update({b + ln + ".weight": (width,), b + ln + ".bias": (width,)})
        shapes.update({b + "clip_attn.in_proj_weight": (3 * D, D), b + "clip_attn.in_proj_bias": (3 * D,)})
        linear(b + "clip_attn.out_proj", D, D)
        linear(b + "clip_mlp.c_fc", hid, D)
        linear(b + "clip_mlp.c_proj", D, hid)
        shapes.update({b + "attn.qkv.weight": (3 * D, D), b + "attn.q_bias": (D,), b + "attn.v_bias": (D,)})
        linear(b + "attn.proj", D, D)
        linear(b + "mlp.fc1", hid, D)
        linear(b + "mlp.fc2", D, hid)
        for name in ("S_Adapter", "T_Adapter", "S_MLP_Adapter", "T_MLP_Adapter"):
            adapter(b + name)
        linear(b + "cross_s_down", d, D)
        linear(b + "cross_t_down", d, D)
        linear(b + "cross_s_up", D, d)
        linear(b + "cross_t_up", D, d)
        for direction, pos_rows, pos_names in (("t2s", T, ("clip_time_pos", "vmae_time_pos")),
                                               ("s2t", N, ("clip_space_pos", "vmae_space_pos"))):
            c = f"{b}{direction}_cross."
            for pos in pos_names:
                shapes[c + pos] = (pos_rows, d)
            shapes.update({c + f"{direction}_q.weight": (d, d), c + f"{direction}_q_bias": (d,),
                           c + f"{direction}_kv.weight": (2 * d, d), c + f"{direction}_kv_bias": (2 * d,)})
            linear(c + "t2s_proj", d, d)
    if cfg.head == "single":
        adapter("noun_last_Adapter")
        adapter("verb_last_Adapter")
        linear("head", cfg.num_classes, D)
    else:
        linear("head_verb", cfg.num_verbs, D)
        linear("head_noun", cfg.num_nouns, D)
    return shapes


def random_official_state_dict(cfg: CASTConfig, seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """Random weights in the release naming; every branch non-zero so every path is exercised."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(cfg).items():
        if key.endswith(("ln_pre.weight", "ln_1.weight", "ln_2.weight", "norm1.weight", "norm2.weight",
                         "cross.weight", "ln_post.weight", "fc_norm.weight")):
            value = 1.0 + 0.1 * torch.randn(shape, generator=gen, dtype=dtype)
        else:
            fan_in = shape[-1] if len(shape) > 1 else 1
            scale = 0.5 if len(shape) == 1 else 1.0 / math.sqrt(fan_in)
            value = scale * torch.randn(shape, generator=gen, dtype=dtype)
        state[key] = value
    return state


# -- the reference computation -------------------------------------------------------------------
def _ln(x: Tensor, sd: dict[str, Tensor], name: str, eps: float) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps)


def _lin(x: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


def _adapter(x: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    return _lin(F.gelu(_lin(x, sd, name + ".D_fc1")), sd, name + ".D_fc2")


def _heads(x: Tensor, h: int) -> Tensor:
    return x.reshape(*x.shape[:-1], h, x.shape[-1] // h)


def _self_attention(x: Tensor, w: Tensor, b: Tensor, wo: Tensor, bo: Tensor, h: int) -> Tensor:
    # x: (S, L, D); [q; k; v] rows, heads contiguous inside each
    q, k, v = (_heads(part, h) for part in (x @ w.T + b).chunk(3, dim=-1))  # (S, L, H, c)
    scores = torch.einsum("slhc,smhc->shlm", q, k) / math.sqrt(q.shape[-1])
    out = torch.einsum("shlm,smhc->slhc", scores.softmax(-1), v).flatten(-2)
    return out @ wo.T + bo


def _sinusoid(n: int, dim: int) -> Tensor:
    j = np.arange(dim)
    angles = np.arange(n)[:, None] / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
    table = np.where(j % 2 == 0, np.sin(angles), np.cos(angles))
    return torch.from_numpy(table).float()  # the release computes it in float64 and keeps float32


def reference_forward(sd: dict[str, Tensor], x: Tensor, cfg: CASTConfig) -> Tensor | dict[str, Tensor]:
    H, P = cfg.num_heads, cfg.patch_size
    B = x.shape[0]
    # spatial expert stem: frames 1, 3, 5, ... one per tubelet
    frames = x[:, :, 1::2]
    T = frames.shape[2]
    img = frames.permute(0, 2, 1, 3, 4).reshape(B * T, 3, *frames.shape[-2:])
    s = F.conv2d(img, sd["clip_conv1.weight"], stride=P).flatten(2).transpose(1, 2)
    D = s.shape[-1]
    s = torch.cat([sd["clip_class_embedding"].expand(B * T, 1, D), s], dim=1) + sd["clip_positional_embedding"]
    s = _ln(s, sd, "clip_ln_pre", 1e-5)  # (B*T, 1+N, D)
    N = s.shape[1] - 1
    # temporal expert stem
    t = F.conv3d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=(2, P, P))
    t = t.flatten(2).transpose(1, 2)
    t = t + _sinusoid(t.shape[1], D).to(t.dtype)  # (B, T*N, D)

    for i in range(cfg.depth):
        b = f"blocks.{i}."
        a = _ln(s, sd, b + "clip_ln_1", 1e-5)
        a = _self_attention(a, sd[b + "clip_attn.in_proj_weight"], sd[b + "clip_attn.in_proj_bias"],
                            sd[b + "clip_attn.out_proj.weight"], sd[b + "clip_attn.out_proj.bias"], H)
        s = s + a + _adapter(a, sd, b + "S_Adapter")
        a = _ln(t, sd, b + "norm1", 1e-6)
        qkv_b = torch.cat([sd[b + "attn.q_bias"], torch.zeros_like(sd[b + "attn.q_bias"]), sd[b + "attn.v_bias"]])
        a = _self_attention(a, sd[b + "attn.qkv.weight"], qkv_b, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"], H)
        t = t + a + _adapter(a, sd, b + "T_Adapter")

        ns = _ln(_lin(s, sd, b + "cross_s_down"), sd, b + "ln_s_cross", 1e-6)  # (B*T, 1+N, d)
        nt = _ln(_lin(t, sd, b + "cross_t_down"), sd, b + "ln_t_cross", 1e-6)  # (B, T*N, d)
        d = ns.shape[-1]
        sp = ns[:, 1:].reshape(B, T, N, d)
        tp = nt.reshape(B, T, N, d)

        c = b + "t2s_cross."  # spatial query at (t, n) looks at temporal keys (t', n) for all t'
        q = _heads(_lin_split(sp + sd[c + "clip_time_pos"][None, :, None], sd, c + "t2s_q"), H)
        kv = _lin_split(tp + sd[c + "vmae_time_pos"][None, :, None], sd, c + "t2s_kv")
        k, v = (_heads(z, H) for z in kv.chunk(2, dim=-1))
        w = torch.einsum("btnhc,bunhc->bnhtu", q, k) / math.sqrt(q.shape[-1])
        o = torch.einsum("bnhtu,bunhc->btnhc", w.softmax(-1), v).flatten(-2)
        o = _lin(o, sd, c + "t2s_proj").reshape(B * T, N, d)
        t2s = torch.cat([ns[:, :1], o], dim=1)

        c = b + "s2t_cross."  # temporal query at (t, n) looks at the spatial patches (t, m) of its step
        q = _heads(_lin_split(tp + sd[c + "vmae_space_pos"], sd, c + "s2t_q"), H)
        kv = _lin_split(sp + sd[c + "clip_space_pos"], sd, c + "s2t_kv")
        k, v = (_heads(z, H) for z in kv.chunk(2, dim=-1))
        w = torch.einsum("btnhc,btmhc->bthnm", q, k) / math.sqrt(q.shape[-1])
        o = torch.einsum("bthnm,btmhc->btnhc", w.softmax(-1), v).flatten(-2)
        s2t = _lin(o, sd, c + "t2s_proj").reshape(B, T * N, d)

        s = s + _lin(F.gelu(t2s), sd, b + "cross_s_up")
        t = t + _lin(F.gelu(s2t), sd, b + "cross_t_up")

        sn = _ln(s, sd, b + "clip_ln_2", 1e-5)
        h = _lin(sn, sd, b + "clip_mlp.c_fc")
        s = s + _lin(h * torch.sigmoid(1.702 * h), sd, b + "clip_mlp.c_proj") + 0.5 * _adapter(sn, sd, b + "S_MLP_Adapter")
        tn = _ln(t, sd, b + "norm2", 1e-6)
        t = t + _lin(F.gelu(_lin(tn, sd, b + "mlp.fc1")), sd, b + "mlp.fc2") + 0.5 * _adapter(tn, sd, b + "T_MLP_Adapter")

    s_feat = _ln(s[:, 0].reshape(B, T, D).mean(1), sd, "clip_ln_post", 1e-5)
    t_feat = _ln(t.mean(1), sd, "vmae_fc_norm", 1e-6)
    if cfg.head == "single":
        return _lin(_adapter(s_feat, sd, "noun_last_Adapter") + _adapter(t_feat, sd, "verb_last_Adapter"), sd, "head")
    return {"verb": _lin(t_feat, sd, "head_verb"), "noun": _lin(s_feat, sd, "head_noun")}


def _lin_split(x: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    """B-CAST projections keep weight and bias as separate release keys (``X.weight`` and ``X_bias``)."""
    return x @ sd[name + ".weight"].T + sd[name + "_bias"]
