"""The two experts as stand-alone networks for pretraining, built from CAST's own layers.

Both reuse :class:`cast_model.model.ExpertLayer` (CLIP's QuickGELU, eps and q/k/v biases on the spatial
side, VideoMAE's on the temporal side) and CAST's stems, so the pretrained weights compute inside CAST
exactly what they computed here. An ExpertLayer carries CAST's adapters: they are zeroed and frozen
here, which makes each layer a plain pre-norm transformer layer.

The temporal expert can be colour-blind (``pixels="luma"``, the pretraining default): its patch embedding
is parametrized by :class:`LumaOnly`, so it sees each pixel's Rec.601 luma and nothing of its hue, the way
primate motion vision is largely colour-blind. On the binding task, whose objects differ in hue alone,
that leaves the binding of *which* object moves *how* to the exchange between the experts.

Shapes: B clips or frames, F frames, T = F / tubelet steps, N patches per frame, D width, P pixels per
tubelet patch (tubelet * patch^2 * 3).
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn
from torch.nn.utils import parametrize

from cast_model.config import CASTConfig
from cast_model.model import (CLIP_LN_EPS, VIDEOMAE_LN_EPS, ExpertLayer, QuickGELU, SpatialStem, TemporalStem,
                              init_vit_weights, sinusoid_table)
from pipelines.loader import STD
from pipelines.synthetic_tasks import APPEARANCES, LUMA_WEIGHTS

NUM_APPEARANCES = len(APPEARANCES)
TEMPORAL_INPUTS = ("luma", "rgb")  # what the temporal expert's patch embedding sees of each pixel


class LumaOnly(nn.Module):
    """A parametrization of a patch embedding's weight (D, 3, *kernel) as one grey kernel (D, 1, *kernel)
    times fixed per-channel weights: every output sees a pixel's Rec.601 luma only, never its hue.

    The input is normalised per channel ((v - mean) / std, the loader's ImageNet normalisation), so the
    channel weights are the luma weights times each channel's std: then the weight applied to the raw value v
    of channel c is proportional to its luma weight alone, and two colours of equal luma give the same
    response (the means add one constant). The channel vector has unit norm so that an optimizer's step on
    the grey kernel moves the effective weight as far as a step on a free kernel would. The parametrized
    weight is a plain (D, 3, *kernel) tensor: exported as such, it is an ordinary VideoMAE
    ``patch_embed.proj.weight`` to any reader."""

    def __init__(self) -> None:
        super().__init__()
        channels = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64) * torch.tensor(STD, dtype=torch.float64)
        self.register_buffer("channels", (channels / channels.norm()).float(), persistent=False)

    def _view(self, ndim: int) -> torch.Tensor:
        return self.channels.view(1, 3, *([1] * (ndim - 2)))

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        """(D, 1, *kernel) -> (D, 3, *kernel)."""
        return grey * self._view(grey.ndim).to(grey.dtype)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        """(D, 3, *kernel) -> the grey kernel whose expansion is nearest (least squares): what a weight
        assigned to the parametrized conv (its initialisation, a loaded checkpoint) becomes."""
        return (weight * self._view(weight.ndim).to(weight.dtype)).sum(1, keepdim=True)  # unit norm: no division


def _check_pixels(pixels: str) -> None:
    if pixels not in TEMPORAL_INPUTS:
        raise ValueError(f"the temporal expert's input must be one of {TEMPORAL_INPUTS}, got {pixels!r}")


def _init(module: nn.Module) -> None:
    """CAST's initialisation (truncated normal linears, unit norms), adapters zeroed and frozen."""
    init_vit_weights(module)
    for name, p in module.named_parameters():
        if "adapter" in name:
            nn.init.zeros_(p)
            p.requires_grad_(False)


class SpatialExpert(nn.Module):
    """A CLIP-style image ViT trained on single frames: which appearances a frame shows (multi-label, from
    the class token after ln_post) and which appearance covers each patch (from the patch tokens)."""

    def __init__(self, cfg: CASTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = SpatialStem(cfg)
        self.blocks = nn.ModuleList(ExpertLayer(cfg, QuickGELU, CLIP_LN_EPS, "full", 0.0) for _ in range(cfg.depth))
        self.ln_post = nn.LayerNorm(cfg.embed_dim, eps=CLIP_LN_EPS)
        self.head = nn.Linear(cfg.embed_dim, NUM_APPEARANCES)  # exported as CLIP's visual.proj
        self.patch_norm = nn.LayerNorm(cfg.embed_dim, eps=CLIP_LN_EPS)
        self.patch_head = nn.Linear(cfg.embed_dim, NUM_APPEARANCES + 1)  # + background
        _init(self)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1+N, D)."""
        # CAST's stem takes clips and keeps the last frame of each tubelet: a one-tubelet clip of the image
        clip = images.unsqueeze(2).expand(-1, -1, self.cfg.tubelet_size, -1, -1)
        x = self.stem(clip)
        for layer in self.blocks:
            x = layer.feed_forward(layer.attend(x))
        return x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D): the class token after ln_post, what CAST's spatial side pools."""
        return self.ln_post(self.tokens(images)[:, 0])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> appearance logits (B, A) and per-patch logits (B, N, A+1)."""
        x = self.tokens(images)
        return self.head(self.ln_post(x[:, 0])), self.patch_head(self.patch_norm(x[:, 1:]))


class VideoEncoder(nn.Module):
    """VideoMAE's encoder: tubelet stem with fixed positions, plain pre-norm layers, a final norm. What
    CAST's temporal expert keeps of either pretraining network below. ``pixels="luma"`` constrains the stem
    to luma (:class:`LumaOnly`); "rgb" leaves it free."""

    def __init__(self, cfg: CASTConfig, pixels: str) -> None:
        super().__init__()
        _check_pixels(pixels)
        self.cfg = cfg
        self.stem = TemporalStem(cfg)
        if pixels == "luma":
            parametrize.register_parametrization(self.stem.proj, "weight", LumaOnly())
        self.blocks = nn.ModuleList(ExpertLayer(cfg, nn.GELU, VIDEOMAE_LN_EPS, "qv", 0.0) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=VIDEOMAE_LN_EPS)

    def encode(self, clips: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, F, H, W) and visible token indices (B, V) (None: all) -> (B, V, D) before the final norm."""
        x = self.stem(clips)  # (B, T*N, D), positions added
        if visible is not None:
            x = torch.gather(x, 1, visible[..., None].expand(-1, -1, x.shape[-1]))
        for layer in self.blocks:
            x = layer.feed_forward(layer.attend(x))
        return x

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) -> (B, D): mean of every token, normalised (a probe's input)."""
        return self.norm(self.encode(clips)).mean(dim=1)


class MotionField(VideoEncoder):
    """The encoder with a linear read-out of each token's motion: (B, T*N, 2), the (dy, dx) velocity of
    what covers the token's tube, in pixels per time step (zero on the static background). Trained on
    rendered clips whose motion is known by construction (as optical-flow networks are pretrained on
    synthetic scenes); exported as a VideoMAE checkpoint of the encoder alone."""

    def __init__(self, cfg: CASTConfig, pixels: str) -> None:
        super().__init__(cfg, pixels)
        self.motion_head = nn.Linear(cfg.embed_dim, 2)
        _init(self)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.motion_head(self.norm(self.encode(clips)))


class VideoMAE(VideoEncoder):
    """VideoMAE: the encoder over the visible tubes of a masked clip and a narrow decoder that
    reconstructs the masked tubes' pixels (Tong et al. 2022, at this project's size)."""

    def __init__(self, cfg: CASTConfig, pixels: str, decoder_dim: int, decoder_depth: int, decoder_heads: int,
                 motion_target: bool = False) -> None:
        super().__init__(cfg, pixels)
        dec = cfg.replace(embed_dim=decoder_dim, num_heads=decoder_heads, depth=decoder_depth)
        self.encoder_to_decoder = nn.Linear(cfg.embed_dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(decoder_dim))
        self.decoder_blocks = nn.ModuleList(ExpertLayer(dec, nn.GELU, VIDEOMAE_LN_EPS, "qv", 0.0)
                                            for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=VIDEOMAE_LN_EPS)
        pixels = cfg.tubelet_size * cfg.patch_size**2 * 3
        # with the motion target, each tube's frame difference (one frame's worth of pixels) too
        self.decoder_head = nn.Linear(decoder_dim, pixels + (pixels // cfg.tubelet_size if motion_target else 0))
        self.register_buffer("decoder_pos", sinusoid_table(cfg.num_steps * cfg.num_patches, decoder_dim),
                             persistent=False)
        _init(self)
        trunc_normal_(self.mask_token, std=0.02)

    def forward(self, clips: torch.Tensor, visible: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Predicted pixels of the masked tokens, (B, M, P)."""
        x = self.encoder_to_decoder(self.norm(self.encode(clips, visible)))  # (B, V, d)
        B, M = masked.shape
        pos = self.decoder_pos.to(x.dtype)
        x = x + pos[visible]
        y = self.mask_token.to(x.dtype).expand(B, M, -1) + pos[masked]
        z = torch.cat((x, y), dim=1)
        for layer in self.decoder_blocks:
            z = layer.feed_forward(layer.attend(z))
        return self.decoder_head(self.decoder_norm(z[:, -M:]))


def tube_mask(batch: int, cfg: CASTConfig, ratio: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """VideoMAE's tube masking: the same patches hidden at every time step. -> visible (B, T*keep) and
    masked (B, T*(N-keep)) token indices, sorted."""
    N, T = cfg.num_patches, cfg.num_steps
    keep = max(1, round(N * (1 - ratio)))
    order = torch.rand(batch, N, generator=generator).argsort(dim=1)  # (B, N) a random patch order
    steps = torch.arange(T)[None, :, None] * N  # (1, T, 1)
    visible = (order[:, None, :keep] + steps).flatten(1).sort(dim=1).values
    masked = (order[:, None, keep:] + steps).flatten(1).sort(dim=1).values
    return visible, masked


def half_time_mask(batch: int, cfg: CASTConfig, ratio: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Tube masking in one half of the clip's time steps and *every* token of the other half (the first
    or the last, at random per clip): the hidden half can only be filled in by carrying each object along
    its motion, past or future. -> visible and masked token indices as :func:`tube_mask`."""
    N, T = cfg.num_patches, cfg.num_steps
    half = T // 2
    keep = max(1, round(N * (1 - ratio)))
    order = torch.rand(batch, N, generator=generator).argsort(dim=1)  # (B, N)
    later = torch.rand(batch, generator=generator) < 0.5  # (B,) hide the later half (else the earlier)
    shown = torch.where(later[:, None], torch.arange(half)[None], torch.arange(half, T)[None])  # (B, half) steps
    visible = (order[:, None, :keep] + shown[:, :, None] * N).flatten(1).sort(dim=1).values  # (B, half*keep)
    is_visible = torch.zeros(batch, T * N, dtype=torch.bool)
    is_visible[torch.arange(batch)[:, None], visible] = True
    masked = torch.arange(T * N).expand(batch, -1)[~is_visible].view(batch, -1)  # (B, T*N - half*keep), sorted
    return visible, masked


def tubelet_pixels(clips: torch.Tensor, cfg: CASTConfig) -> torch.Tensor:
    """(B, 3, F, H, W) -> (B, T*N, P): each token's pixels in the temporal stem's token order."""
    B = clips.shape[0]
    t, p, g = cfg.tubelet_size, cfg.patch_size, cfg.grid_size
    x = clips.reshape(B, 3, cfg.num_steps, t, g, p, g, p)
    return x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(B, cfg.num_steps * g * g, t * p * p * 3)


__all__ = ["LumaOnly", "TEMPORAL_INPUTS", "SpatialExpert", "VideoEncoder", "MotionField", "VideoMAE", "tube_mask", "half_time_mask", "tubelet_pixels", "NUM_APPEARANCES"]
