"""The pretrained experts as files in the released checkpoints' layouts, which cast_model.load_experts reads.

- spatial: OpenAI CLIP's image tower (``visual.conv1``, ``visual.class_embedding``,
  ``visual.positional_embedding``, ``visual.ln_pre``, ``visual.transformer.resblocks.N.*``,
  ``visual.ln_post``, ``visual.proj``). ``visual.proj`` holds the pretraining head (appearance logits),
  as CLIP's holds its projection into the joint space; CAST ignores both.
- temporal: a VideoMAE pretraining checkpoint (``encoder.patch_embed.proj``, ``encoder.blocks.N.*``,
  ``encoder.norm``; from masked reconstruction also ``encoder_to_decoder``, ``mask_token``,
  ``decoder.blocks.N.*``, ``decoder.norm``, ``decoder.head``); CAST keeps the encoder. A luma-only
  expert's ``patch_embed.proj.weight`` is still a plain (D, 3, t, p, p) conv weight: the constraint is in
  its values, so any VideoMAE reader takes it unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from workflows.tracking.lineage import file_sha256 as sha256

from .nets import SpatialExpert, VideoEncoder, VideoMAE

StateDict = dict[str, torch.Tensor]

# ExpertLayer name -> CLIP resblock name (the adapters are zero and not part of a released expert)
_CLIP_LAYER = {"norm1": "ln_1", "attn.qkv.weight": "attn.in_proj_weight", "attn.qkv.bias": "attn.in_proj_bias",
               "attn.proj": "attn.out_proj", "norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_VIDEOMAE_LAYER = ("norm1", "attn.qkv.weight", "attn.q_bias", "attn.v_bias", "attn.proj", "norm2", "mlp.fc1",
                   "mlp.fc2")


def _layer(state: StateDict, prefix: str, names) -> StateDict:
    """The non-adapter tensors of an ExpertLayer under ``prefix``, renamed by ``names`` (a dict) or kept."""
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix) or "adapter" in key:
            continue
        rest = key[len(prefix):]
        for src in names:
            if rest == src or rest.startswith(src + "."):
                dst = names[src] if isinstance(names, dict) else src
                out[dst + rest[len(src):]] = value
                break
        else:
            raise KeyError(f"no release name for {key}")
    return out


def clip_state_dict(net: SpatialExpert) -> StateDict:
    """The spatial expert in OpenAI CLIP's naming (image tower only)."""
    s = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    out = {"visual.conv1.weight": s["stem.proj.weight"], "visual.class_embedding": s["stem.cls_token"],
           "visual.positional_embedding": s["stem.pos_embed"], "visual.ln_pre.weight": s["stem.norm_pre.weight"],
           "visual.ln_pre.bias": s["stem.norm_pre.bias"], "visual.ln_post.weight": s["ln_post.weight"],
           "visual.ln_post.bias": s["ln_post.bias"], "visual.proj": s["head.weight"].T.contiguous()}
    for i in range(net.cfg.depth):
        for k, v in _layer(s, f"blocks.{i}.", _CLIP_LAYER).items():
            out[f"visual.transformer.resblocks.{i}.{k}"] = v
    return out


def videomae_state_dict(net: VideoEncoder) -> StateDict:
    """The temporal expert as a VideoMAE pretraining checkpoint: the encoder under ``encoder.``, and for
    a :class:`VideoMAE` its decoder too (a :class:`MotionField`'s read-out is no part of the release
    layout and stays behind)."""
    s = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    # The stem's weight as the conv computes it: a luma-only stem stores its grey kernel under a
    # parametrization (stem.proj.parametrizations.weight.original); the release layout wants the (D, 3, ...) weight
    patch_embed = net.stem.proj.weight.detach().clone().contiguous()
    out = {"encoder.patch_embed.proj.weight": patch_embed, "encoder.patch_embed.proj.bias": s["stem.proj.bias"],
           "encoder.norm.weight": s["norm.weight"], "encoder.norm.bias": s["norm.bias"]}
    for i in range(net.cfg.depth):
        out.update({f"encoder.blocks.{i}.{k}": v for k, v in _layer(s, f"blocks.{i}.", _VIDEOMAE_LAYER).items()})
    if isinstance(net, VideoMAE):
        out.update({"encoder_to_decoder.weight": s["encoder_to_decoder.weight"],
                    "mask_token": s["mask_token"].reshape(1, 1, -1),
                    "decoder.norm.weight": s["decoder_norm.weight"], "decoder.norm.bias": s["decoder_norm.bias"],
                    "decoder.head.weight": s["decoder_head.weight"], "decoder.head.bias": s["decoder_head.bias"]})
        for i in range(len(net.decoder_blocks)):
            out.update({f"decoder.blocks.{i}.{k}": v
                        for k, v in _layer(s, f"decoder_blocks.{i}.", _VIDEOMAE_LAYER).items()})
    return out


def write_safetensors(state: StateDict, path: Path, metadata: dict[str, str]) -> str:
    """Write ``state`` atomically (a temporary file renamed into place); returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return sha256(path)


__all__ = ["clip_state_dict", "videomae_state_dict", "write_safetensors", "sha256"]
