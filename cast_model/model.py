"""CAST: a frozen CLIP image ViT (spatial expert) and a frozen VideoMAE video ViT (temporal expert)
exchanging information in every block through B-CAST, a bottleneck of cross-attentions.

Shapes used in comments: B clips, F input frames, T = F / tubelet time steps (both experts),
N patches per frame, D expert width, d = D / down_ratio B-CAST width, H heads, h = head width.
Spatial tokens travel as (B*T, 1+N, D) (a CLS token per frame), temporal tokens as (B, T*N, D).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import CASTConfig, Window

CLIP_LN_EPS = 1e-5
VIDEOMAE_LN_EPS = 1e-6


class _QuickGELUFn(torch.autograd.Function):
    """x * sigmoid(1.702 x) saving only x for backward (eager autograd would keep x and the sigmoid:
    two tensors of the MLP's 4D width per frozen CLIP layer); the sigmoid is recomputed instead."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * torch.sigmoid(1.702 * x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        sig = torch.sigmoid(1.702 * x)
        return grad * (sig * (1 + 1.702 * x * (1 - sig)))


class QuickGELU(nn.Module):
    """CLIP's sigmoid approximation of GELU: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad and not torch.jit.is_tracing():  # a trace keeps plain ops
            return _QuickGELUFn.apply(x)
        return x * torch.sigmoid(1.702 * x)


class Adapter(nn.Module):
    """Bottleneck MLP (fc1 -> GELU -> fc2). With ``skip`` it returns x + MLP(x), else MLP(x)."""

    def __init__(self, dim: int, ratio: float, skip: bool) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.skip = skip
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.act(self.fc1(x)))
        return x + y if self.skip else y


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fused: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(h)) v over (..., H, L, h) tensors; ``fused`` picks torch's SDPA kernels."""
    if fused:
        return F.scaled_dot_product_attention(q, k, v)
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return attn.softmax(dim=-1) @ v


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused [q; k; v] projection.

    ``qkv_bias="full"`` is CLIP's (one bias over q, k and v); ``"qv"`` is VideoMAE's (learned q and v
    biases, the key bias fixed at zero).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: str, fused: bool) -> None:
        super().__init__()
        if qkv_bias not in ("full", "qv"):
            raise ValueError(f"qkv_bias must be 'full' or 'qv', got {qkv_bias!r}")
        self.num_heads = num_heads
        self.fused = fused
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias == "full")
        if qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        if self.qkv.bias is not None:
            bias = self.qkv.bias
        else:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)  # (B, L, 3D)
        q, k, v = qkv.view(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        out = multi_head_attention(q, k, v, self.fused)  # (B, H, L, h)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class ExpertLayer(nn.Module):
    """One transformer layer of a frozen expert with CAST's two adapters.

    Attention gets a serial adapter (with its own skip); the FFN gets a parallel adapter without
    skip, scaled by 1/2. B-CAST runs between ``attend`` and ``feed_forward``.
    """

    def __init__(self, cfg: CASTConfig, act: Callable[[], nn.Module], eps: float, qkv_bias: str,
                 drop_path: float) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, cfg.num_heads, qkv_bias, cfg.fused_attention)
        self.attn_adapter = Adapter(dim, cfg.adapter_ratio, skip=True)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), act)
        self.mlp_adapter = Adapter(dim, cfg.adapter_ratio, skip=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn_adapter(self.attn(self.norm1(x)))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        xn = self.norm2(x)
        if isinstance(self.drop_path, nn.Identity) or not self.training:
            # x + mlp + adapter / 2 in two passes (the halving is exact, folded into the add).
            return torch.add(x + self.mlp(xn), self.mlp_adapter(xn), alpha=0.5)
        return x + self.mlp(xn) + self.drop_path(0.5 * self.mlp_adapter(xn))


def _pos_shape(window: Window, num_steps: int, num_patches: int) -> tuple[int, int]:
    """(rows of the position table, how its rows map onto the (T, N) grid)."""
    return {"time": (num_steps, 1), "space": (1, num_patches), "space_time": (num_steps, num_patches)}[window]


class CrossAttention(nn.Module):
    """Queries of one expert attend to the tokens of the other inside a window of the (T, N) grid.

    ``"time"``: the token at patch n attends to patch n of every time step (T2S in the paper);
    ``"space"``: the tokens of step t attend to the patches of step t (S2T in the paper);
    ``"space_time"``: every token attends to all T*N tokens. Each side adds its own learnable
    position embedding over the window's axis before projection.
    """

    def __init__(self, dim: int, num_heads: int, window: Window, num_steps: int, num_patches: int,
                 fused: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.fused = fused
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)  # rows [k; v]
        self.proj = nn.Linear(dim, dim)
        rows_t, rows_n = _pos_shape(window, num_steps, num_patches)
        self.pos_grid = (rows_t, rows_n)
        scale = (dim // num_heads) ** -0.5
        self.q_pos = nn.Parameter(scale * torch.randn(rows_t * rows_n, dim))
        self.kv_pos = nn.Parameter(scale * torch.randn(rows_t * rows_n, dim))
        # Set by cast_model.attention.capture_attention: takes the (G, H, L, L) probabilities. While it is
        # None attention stays on the fused kernel, which never forms them.
        self.on_attention: Callable[[torch.Tensor], None] | None = None

    def _group(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, N, d) -> (G, L, d): one attention sequence per window."""
        B, T, N, d = x.shape
        if self.window == "time":
            return x.transpose(1, 2).reshape(B * N, T, d)
        if self.window == "space":
            return x.reshape(B * T, N, d)
        return x.reshape(B, T * N, d)

    def _ungroup(self, x: torch.Tensor, B: int, T: int, N: int) -> torch.Tensor:
        d = x.shape[-1]
        if self.window == "time":
            return x.view(B, N, T, d).transpose(1, 2)
        return x.reshape(B, T, N, d)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        # x_q, x_kv: (B, T, N, d) -> (B, T, N, d)
        B, T, N, d = x_q.shape
        H = self.num_heads
        q_in = self._group(x_q + self.q_pos.view(*self.pos_grid, d))
        kv_in = self._group(x_kv + self.kv_pos.view(*self.pos_grid, d))
        G, L, _ = q_in.shape
        q = self.q(q_in).view(G, L, H, d // H).transpose(1, 2)  # (G, H, L, h)
        k, v = self.kv(kv_in).view(G, L, 2, H, d // H).permute(2, 0, 3, 1, 4)  # 2 x (G, H, L, h)
        if self.on_attention is None:
            out = multi_head_attention(q, k, v, self.fused)  # (G, H, L, h)
        else:
            probs = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)  # (G, H, L, L)
            self.on_attention(probs.detach())
            out = probs @ v
        out = out.transpose(1, 2).reshape(G, L, d)
        return self._ungroup(self.proj(out), B, T, N)


class BCAST(nn.Module):
    """Bidirectional cross-attention in a bottleneck: T2S updates the spatial tokens from the
    temporal ones, S2T the temporal tokens from the spatial ones; both read the same inputs."""

    def __init__(self, cfg: CASTConfig, drop_path: float) -> None:
        super().__init__()
        D, d, T, N = cfg.embed_dim, cfg.bcast_dim, cfg.num_steps, cfg.num_patches
        self.num_steps, self.num_patches = T, N
        self.s_down = nn.Linear(D, d)
        self.t_down = nn.Linear(D, d)
        self.s_norm = nn.LayerNorm(d, eps=VIDEOMAE_LN_EPS)
        self.t_norm = nn.LayerNorm(d, eps=VIDEOMAE_LN_EPS)
        self.act = nn.GELU()
        self.t2s = self.s2t = self.s_up = self.t_up = None
        if "t2s" in cfg.directions:
            self.t2s = CrossAttention(d, cfg.num_heads, cfg.t2s_window, T, N, cfg.fused_attention)
            self.s_up = nn.Linear(d, D)
        if "s2t" in cfg.directions:
            self.s2t = CrossAttention(d, cfg.num_heads, cfg.s2t_window, T, N, cfg.fused_attention)
            self.t_up = nn.Linear(d, D)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # s: (B*T, 1+N, D), t: (B, T*N, D)
        B, T, N = t.shape[0], self.num_steps, self.num_patches
        ns = self.s_norm(self.s_down(s))  # (B*T, 1+N, d)
        nt = self.t_norm(self.t_down(t))  # (B, T*N, d)
        d = ns.shape[-1]
        s_grid = ns[:, 1:].reshape(B, T, N, d)  # the CLS token takes part in neither window
        t_grid = nt.view(B, T, N, d)
        s_out, t_out = s, t
        if self.t2s is not None:
            y = self.t2s(s_grid, t_grid).reshape(B * T, N, d)
            y = torch.cat((ns[:, :1], y), dim=1)  # the CLS row passes through unchanged
            s_out = s + self.drop_path(self.s_up(self.act(y)))
        if self.s2t is not None:
            y = self.s2t(t_grid, s_grid).reshape(B, T * N, d)
            t_out = t + self.drop_path(self.t_up(self.act(y)))
        return s_out, t_out


class CASTBlock(nn.Module):
    """One layer of each expert the config holds (a single-expert model has only its own side, and its
    stream of the other side stays None), with B-CAST between attention and FFN where asked."""

    def __init__(self, cfg: CASTConfig, drop_path: float, with_bcast: bool) -> None:
        super().__init__()
        self.spatial = ExpertLayer(cfg, QuickGELU, CLIP_LN_EPS, "full", drop_path) if cfg.has_spatial else None
        self.temporal = ExpertLayer(cfg, nn.GELU, VIDEOMAE_LN_EPS, "qv", drop_path) if cfg.has_temporal else None
        self.bcast = BCAST(cfg, drop_path) if with_bcast else None

    def forward(self, s: torch.Tensor | None, t: torch.Tensor | None
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.spatial is not None:
            s = self.spatial.attend(s)
        if self.temporal is not None:
            t = self.temporal.attend(t)
        if self.bcast is not None:
            s, t = self.bcast(s, t)
        if self.spatial is not None:
            s = self.spatial.feed_forward(s)
        if self.temporal is not None:
            t = self.temporal.feed_forward(t)
        return s, t

    def adapters(self) -> list[Adapter]:
        return [a for side in (self.spatial, self.temporal) if side is not None
                for a in (side.attn_adapter, side.mlp_adapter)]


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed 1-D positions: sin on even channels, cos on odd; computed in float64 and
    stored as float32, as the released models were trained with it."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    chan = torch.arange(dim)
    angle = pos / torch.pow(10000.0, (2 * (chan // 2)).double() / dim)  # (P, dim)
    table = torch.where(chan % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


class SpatialStem(nn.Module):
    """CLIP's stem on one frame per tubelet: patches, a class token, learned positions, ln_pre."""

    def __init__(self, cfg: CASTConfig) -> None:
        super().__init__()
        D = cfg.embed_dim
        scale = D**-0.5
        self.tubelet_size = cfg.tubelet_size
        self.proj = nn.Conv2d(3, D, cfg.patch_size, cfg.patch_size, bias=False)
        self.cls_token = nn.Parameter(scale * torch.randn(D))
        self.pos_embed = nn.Parameter(scale * torch.randn(cfg.num_patches + 1, D))
        self.norm_pre = nn.LayerNorm(D, eps=CLIP_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, F, H, W) -> (B*T, 1+N, D); frames tubelet-1, 2*tubelet-1, ... (1, 3, 5, ...)
        frames = x[:, :, self.tubelet_size - 1 :: self.tubelet_size]
        B, C, T, Hi, Wi = frames.shape
        frames = frames.transpose(1, 2).reshape(B * T, C, Hi, Wi)
        tokens = self.proj(frames).flatten(2).transpose(1, 2)  # (B*T, N, D)
        cls = self.cls_token.to(tokens.dtype).expand(B * T, 1, -1)
        tokens = torch.cat((cls, tokens), dim=1) + self.pos_embed.to(tokens.dtype)
        return self.norm_pre(tokens)


class TemporalStem(nn.Module):
    """VideoMAE's stem: 3-D tubelet patches plus fixed sinusoid positions over the (t, n) index."""

    def __init__(self, cfg: CASTConfig) -> None:
        super().__init__()
        p, tub = cfg.patch_size, cfg.tubelet_size
        self.proj = nn.Conv3d(3, cfg.embed_dim, (tub, p, p), stride=(tub, p, p))
        self.register_buffer("pos_embed", sinusoid_table(cfg.num_steps * cfg.num_patches, cfg.embed_dim),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, F, H, W) -> (B, T*N, D)
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        return tokens + self.pos_embed.to(tokens.dtype)


def init_vit_weights(module: nn.Module) -> None:
    """ViT initialisation of every linear (truncated normal, std 0.02, zero bias) and LayerNorm (unit
    scale, zero shift) inside ``module``: CAST's and the project's pretrained experts'."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CAST(nn.Module):
    """The CAST network. ``forward(x)`` takes (B, 3, num_frames, img_size, img_size) float clips
    (ImageNet-normalised) and returns (B, num_classes) logits, or ``{"verb", "noun"}`` logits.

    ``config.experts`` builds one expert alone (its stem, layers with adapters, norm, head adapter and
    head, or both verb and noun heads; nothing of the other expert exists); ``config.fusion="concat"``
    gives the single head both adapted features side by side instead of their sum, and each of the verb
    and noun heads both experts' features instead of its own expert's (the late-fusion baseline).
    """

    def __init__(self, config: CASTConfig) -> None:
        super().__init__()
        self.config = cfg = config
        D = cfg.embed_dim
        self.grad_checkpointing = cfg.grad_checkpointing
        if cfg.has_spatial:
            self.spatial_stem = SpatialStem(cfg)
        if cfg.has_temporal:
            self.temporal_stem = TemporalStem(cfg)
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        bcast_layers = set(cfg.bcast_layers)
        self.blocks = nn.ModuleList(
            CASTBlock(cfg, rates[i], with_bcast=i in bcast_layers) for i in range(cfg.depth))
        if cfg.has_spatial:
            self.spatial_norm = nn.LayerNorm(D, eps=CLIP_LN_EPS)  # CLIP's ln_post
        if cfg.has_temporal:
            self.temporal_norm = nn.LayerNorm(D, eps=VIDEOMAE_LN_EPS)  # VideoMAE's fc_norm
        self.head_drop = nn.Dropout(cfg.head_drop_rate)
        if cfg.head == "single":
            if cfg.has_spatial:
                self.spatial_head_adapter = Adapter(D, cfg.adapter_ratio, skip=False)
            if cfg.has_temporal:
                self.temporal_head_adapter = Adapter(D, cfg.adapter_ratio, skip=False)
            self.head = nn.Linear(2 * D if cfg.fusion == "concat" else D, cfg.num_classes)
        else:
            width = 2 * D if cfg.fusion == "concat" else D
            self.head_noun = nn.Linear(width, cfg.num_nouns)  # what is handled (CAST: from the spatial side)
            self.head_verb = nn.Linear(width, cfg.num_verbs)  # what is done (CAST: from the temporal side)
        self._init_weights()

    # -- initialisation --------------------------------------------------------------------------
    def _init_weights(self) -> None:
        init_vit_weights(self)
        # Every new branch starts as the identity so training begins from the experts' features.
        for block in self.blocks:
            for adapter in block.adapters():
                nn.init.zeros_(adapter.fc2.weight)
                nn.init.zeros_(adapter.fc2.bias)
            if block.bcast is not None:
                for up in (block.bcast.s_up, block.bcast.t_up):
                    if up is not None:
                        nn.init.zeros_(up.weight)
                        nn.init.zeros_(up.bias)
        heads = [self.head] if self.config.head == "single" else [self.head_verb, self.head_noun]
        if self.config.head == "single":
            for adapter in self.head_adapters():
                nn.init.zeros_(adapter.fc2.weight)
        with torch.no_grad():
            for head in heads:
                head.weight.mul_(self.config.init_scale)
                head.bias.mul_(self.config.init_scale)

    # -- trainable parts -------------------------------------------------------------------------
    @staticmethod
    def is_trainable(name: str) -> bool:
        """The paper's fine-tuning policy: adapters, B-CAST (with its positions), the last norms and
        the heads train; both experts stay frozen."""
        return (".bcast." in name or "adapter" in name or name.startswith(("spatial_norm.", "temporal_norm.", "head")))

    def head_adapters(self) -> list[Adapter]:
        return [getattr(self, n) for n in ("spatial_head_adapter", "temporal_head_adapter") if hasattr(self, n)]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    # -- forward ---------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        expected = (3, cfg.num_frames, cfg.img_size, cfg.img_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"CAST expects input (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, 3, F, H, W) -> pooled spatial and temporal features, 2 x (B, D); None for an expert the
        model does not hold."""
        self._check_input(x)
        B = x.shape[0]
        s = self.spatial_stem(x) if self.config.has_spatial else None  # (B*T, 1+N, D)
        t = self.temporal_stem(x) if self.config.has_temporal else None  # (B, T*N, D)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                s, t = checkpoint(block, s, t, use_reentrant=False)
            else:
                s, t = block(s, t)
        if s is not None:
            cls = s[:, 0].reshape(B, -1, s.shape[-1]).mean(dim=1)  # mean of the per-frame CLS tokens
            s = self.spatial_norm(cls)
        if t is not None:
            t = self.temporal_norm(t.mean(dim=1))
        return s, t

    def forward_head(self, s: torch.Tensor | None, t: torch.Tensor | None
                     ) -> torch.Tensor | dict[str, torch.Tensor]:
        if self.config.head != "single":
            if self.config.fusion == "concat":  # late fusion: both heads read both experts
                s = t = torch.cat([s, t], dim=-1)  # (B, 2D)
            elif self.config.experts != "both":  # one expert: both heads read it
                s = t = s if t is None else t
            return {"verb": self.head_verb(self.head_drop(t)), "noun": self.head_noun(self.head_drop(s))}
        parts = [a(f) for a, f in zip(self.head_adapters(), [f for f in (s, t) if f is not None])]  # (B, D) each
        fused = torch.cat(parts, dim=-1) if self.config.fusion == "concat" else sum(parts[1:], parts[0])
        return self.head(self.head_drop(fused))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        return self.forward_head(*self.forward_features(x))


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["CAST", "CASTBlock", "BCAST", "CrossAttention", "ExpertLayer", "SelfAttention", "Adapter",
           "sinusoid_table", "count_params"]
