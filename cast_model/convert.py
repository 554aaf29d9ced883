"""Checkpoint import: released weights -> this package's parameter names.

Each source format has one pure ``state_dict -> state_dict`` converter that is strict: a key it
does not know is an error that names it (only keys listed as ignored for a documented reason are
dropped). The loaders at the bottom read files, convert, resize position tables to the target
config, and load with every missing or unexpected key named.
"""

from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from .config import CASTConfig
from .model import CAST, sinusoid_table
from .optim import freeze_experts

StateDict = dict[str, torch.Tensor]


class ConversionError(ValueError):
    """A checkpoint that does not match the format or the model it is loaded into."""


def _fmt(keys: list[str], limit: int = 12) -> str:
    return ", ".join(keys[:limit]) + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _rename(state: Mapping[str, torch.Tensor], rules: list[tuple[str, str]], ignore: tuple[str, ...],
            source: str) -> StateDict:
    """Apply the first matching (regex, replacement) rule to every key; unknown keys are an error."""
    compiled = [(re.compile(p), r) for p, r in rules]
    ignored = [re.compile(p) for p in ignore]
    out: StateDict = {}
    unknown: list[str] = []
    for key, value in state.items():
        for pattern, repl in compiled:
            if pattern.fullmatch(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            if not any(p.fullmatch(key) for p in ignored):
                unknown.append(key)
    if unknown:
        raise ConversionError(f"{source}: unexpected keys {_fmt(sorted(unknown))}")
    return out


def unwrap_state_dict(checkpoint: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint saved bare, under ``"model"``/``"module"``, or by DDP (``module.``)."""
    for wrapper in ("model", "module", "state_dict"):
        if wrapper in checkpoint and isinstance(checkpoint[wrapper], Mapping):
            checkpoint = checkpoint[wrapper]  # type: ignore[assignment]
            break
    state = {k.removeprefix("module."): v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ConversionError("no tensors found in checkpoint (expected a state dict, bare or under 'model'/'module')")
    return state


# -- the paper's CAST release ------------------------------------------------------------------------
_B = r"blocks\.(\d+)\."
_OFFICIAL_RULES: list[tuple[str, str]] = [
    (r"clip_conv1\.weight", "spatial_stem.proj.weight"),
    (r"clip_class_embedding", "spatial_stem.cls_token"),
    (r"clip_positional_embedding", "spatial_stem.pos_embed"),
    (r"clip_ln_pre\.(weight|bias)", r"spatial_stem.norm_pre.\1"),
    (r"patch_embed\.proj\.(weight|bias)", r"temporal_stem.proj.\1"),
    (r"clip_ln_post\.(weight|bias)", r"spatial_norm.\1"),
    (r"vmae_fc_norm\.(weight|bias)", r"temporal_norm.\1"),
    (r"noun_last_Adapter\.D_fc([12])\.(weight|bias)", r"spatial_head_adapter.fc\1.\2"),
    (r"verb_last_Adapter\.D_fc([12])\.(weight|bias)", r"temporal_head_adapter.fc\1.\2"),
    (r"(head|head_verb|head_noun)\.(weight|bias)", r"\1.\2"),
    # spatial expert (CLIP) layers
    (_B + r"clip_ln_([12])\.(weight|bias)", r"blocks.\1.spatial.norm\2.\3"),
    (_B + r"clip_attn\.in_proj_(weight|bias)", r"blocks.\1.spatial.attn.qkv.\2"),
    (_B + r"clip_attn\.out_proj\.(weight|bias)", r"blocks.\1.spatial.attn.proj.\2"),
    (_B + r"clip_mlp\.c_fc\.(weight|bias)", r"blocks.\1.spatial.mlp.fc1.\2"),
    (_B + r"clip_mlp\.c_proj\.(weight|bias)", r"blocks.\1.spatial.mlp.fc2.\2"),
    (_B + r"S_Adapter\.D_fc([12])\.(weight|bias)", r"blocks.\1.spatial.attn_adapter.fc\2.\3"),
    (_B + r"S_MLP_Adapter\.D_fc([12])\.(weight|bias)", r"blocks.\1.spatial.mlp_adapter.fc\2.\3"),
    # temporal expert (VideoMAE) layers
    (_B + r"norm([12])\.(weight|bias)", r"blocks.\1.temporal.norm\2.\3"),
    (_B + r"attn\.qkv\.weight", r"blocks.\1.temporal.attn.qkv.weight"),
    (_B + r"attn\.(q_bias|v_bias)", r"blocks.\1.temporal.attn.\2"),
    (_B + r"attn\.proj\.(weight|bias)", r"blocks.\1.temporal.attn.proj.\2"),
    (_B + r"mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.temporal.mlp.\2.\3"),
    (_B + r"T_Adapter\.D_fc([12])\.(weight|bias)", r"blocks.\1.temporal.attn_adapter.fc\2.\3"),
    (_B + r"T_MLP_Adapter\.D_fc([12])\.(weight|bias)", r"blocks.\1.temporal.mlp_adapter.fc\2.\3"),
    # B-CAST
    (_B + r"cross_([st])_(down|up)\.(weight|bias)", r"blocks.\1.bcast.\2_\3.\4"),
    (_B + r"ln_([st])_cross\.(weight|bias)", r"blocks.\1.bcast.\2_norm.\3"),
    (_B + r"t2s_cross\.clip_time_pos", r"blocks.\1.bcast.t2s.q_pos"),
    (_B + r"t2s_cross\.vmae_time_pos", r"blocks.\1.bcast.t2s.kv_pos"),
    (_B + r"s2t_cross\.vmae_space_pos", r"blocks.\1.bcast.s2t.q_pos"),
    (_B + r"s2t_cross\.clip_space_pos", r"blocks.\1.bcast.s2t.kv_pos"),
    (_B + r"(t2s|s2t)_cross\.(?:t2s|s2t)_(q|kv)\.weight", r"blocks.\1.bcast.\2.\3.weight"),
    (_B + r"(t2s|s2t)_cross\.(?:t2s|s2t)_(q|kv)_bias", r"blocks.\1.bcast.\2.\3.bias"),
    # the paper's code names S2T's output projection t2s_proj too
    (_B + r"(t2s|s2t)_cross\.t2s_proj\.(weight|bias)", r"blocks.\1.bcast.\2.proj.\3"),
]


def convert_official_cast(state: Mapping[str, torch.Tensor]) -> StateDict:
    """The paper's release naming (KHU-VLL/CAST, bidir_modeling_crossattn) -> CAST's names."""
    return _rename(state, _OFFICIAL_RULES, ignore=(), source="CAST checkpoint")


# -- CLIP ViT-B/16 (OpenAI release / open_clip, and timm) --------------------------------------------
_CLIP_OPENAI_RULES: list[tuple[str, str]] = [
    (r"visual\.conv1\.weight", "spatial_stem.proj.weight"),
    (r"visual\.class_embedding", "spatial_stem.cls_token"),
    (r"visual\.positional_embedding", "spatial_stem.pos_embed"),
    (r"visual\.ln_pre\.(weight|bias)", r"spatial_stem.norm_pre.\1"),
    (r"visual\.ln_post\.(weight|bias)", r"spatial_norm.\1"),
    (r"visual\.transformer\.resblocks\.(\d+)\.ln_([12])\.(weight|bias)", r"blocks.\1.spatial.norm\2.\3"),
    (r"visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", r"blocks.\1.spatial.attn.qkv.\2"),
    (r"visual\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.(weight|bias)", r"blocks.\1.spatial.attn.proj.\2"),
    (r"visual\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"blocks.\1.spatial.mlp.fc1.\2"),
    (r"visual\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"blocks.\1.spatial.mlp.fc2.\2"),
]
# The text tower and the image projection (CLIP's joint embedding) play no part in CAST.
_CLIP_OPENAI_IGNORE = (r"visual\.proj", r"(?!visual\.).*")

_CLIP_TIMM_RULES: list[tuple[str, str]] = [
    (r"patch_embed\.proj\.weight", "spatial_stem.proj.weight"),
    (r"cls_token", "spatial_stem.cls_token"),
    (r"pos_embed", "spatial_stem.pos_embed"),
    (r"norm_pre\.(weight|bias)", r"spatial_stem.norm_pre.\1"),
    (r"norm\.(weight|bias)", r"spatial_norm.\1"),
    (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.spatial.norm\2.\3"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"blocks.\1.spatial.attn.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"blocks.\1.spatial.attn.proj.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.spatial.mlp.\2.\3"),
]
_CLIP_TIMM_IGNORE = (r"head\.(weight|bias)",)


def convert_clip(state: Mapping[str, torch.Tensor]) -> StateDict:
    """CLIP ViT image tower -> CAST's spatial expert. Accepts the OpenAI/open_clip naming
    (``visual.transformer.resblocks.N``) and timm's (``blocks.N``, ``cls_token``, ``norm_pre``)."""
    if any(k.startswith("visual.") for k in state):
        out = _rename(state, _CLIP_OPENAI_RULES, _CLIP_OPENAI_IGNORE, "CLIP (OpenAI/open_clip)")
    elif "norm_pre.weight" in state and "cls_token" in state:
        out = _rename(state, _CLIP_TIMM_RULES, _CLIP_TIMM_IGNORE, "CLIP (timm)")
        out["spatial_stem.cls_token"] = out["spatial_stem.cls_token"].reshape(-1)  # (1, 1, D) -> (D,)
        out["spatial_stem.pos_embed"] = out["spatial_stem.pos_embed"].flatten(0, 1) \
            if out["spatial_stem.pos_embed"].ndim == 3 else out["spatial_stem.pos_embed"]
    else:
        raise ConversionError("not a CLIP ViT state dict: expected 'visual.*' (OpenAI/open_clip) or "
                              "'cls_token' + 'norm_pre.*' (timm) keys")
    return out


# -- VideoMAE ViT-B/16 (pretrained or fine-tuned release) ------------------------------------------------
_VIDEOMAE_RULES: list[tuple[str, str]] = [
    (r"patch_embed\.proj\.(weight|bias)", r"temporal_stem.proj.\1"),
    (r"fc_norm\.(weight|bias)", r"temporal_norm.\1"),
    (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.temporal.norm\2.\3"),
    (r"blocks\.(\d+)\.attn\.qkv\.weight", r"blocks.\1.temporal.attn.qkv.weight"),
    (r"blocks\.(\d+)\.attn\.(q_bias|v_bias)", r"blocks.\1.temporal.attn.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"blocks.\1.temporal.attn.proj.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.temporal.mlp.\2.\3"),
]
# Pre-training leaves a decoder, a mask token and a final norm (replaced by fc_norm when fine-tuning);
# fine-tuning leaves a classifier for its own label set. The positions are a fixed table (checked below).
_VIDEOMAE_IGNORE = (r"decoder\..*", r"encoder_to_decoder\..*", r"mask_token", r"norm\.(weight|bias)",
                    r"head\.(weight|bias)", r"pos_embed")


def convert_videomae(state: Mapping[str, torch.Tensor]) -> StateDict:
    """VideoMAE ViT (keys maybe prefixed ``encoder.``/``backbone.``) -> CAST's temporal expert."""
    state = {re.sub(r"^(encoder|backbone)\.", "", k): v for k, v in state.items()}
    pos = state.get("pos_embed")
    if pos is not None:
        table = sinusoid_table(pos.shape[-2], pos.shape[-1]).to(pos.dtype)
        if not torch.allclose(pos.reshape(table.shape), table, atol=1e-4):
            raise ConversionError("VideoMAE checkpoint has learned position embeddings; CAST uses "
                                  "VideoMAE's fixed sinusoid table")
    return _rename(state, _VIDEOMAE_RULES, _VIDEOMAE_IGNORE, "VideoMAE")


# -- position tables at another size --------------------------------------------------------------------
def _resize_grid(table: torch.Tensor, grid: int) -> torch.Tensor:
    """(g*g, C) positions on a square grid -> (grid*grid, C), bicubic."""
    old = int(round(table.shape[0] ** 0.5))
    if old * old != table.shape[0]:
        raise ConversionError(f"cannot resize a position table of {table.shape[0]} rows: not a square grid")
    x = table.float().T.reshape(1, -1, old, old)
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False)
    return x.reshape(-1, grid * grid).T.to(table.dtype)


def _resize_steps(table: torch.Tensor, steps: int) -> torch.Tensor:
    """(t, C) positions over time -> (steps, C), linear."""
    x = F.interpolate(table.float().T[None], size=steps, mode="linear", align_corners=False)
    return x[0].T.to(table.dtype)


def adapt_positions(state: Mapping[str, torch.Tensor], config: CASTConfig) -> StateDict:
    """Resize CLIP's and B-CAST's position tables when frames or image size differ from the source."""
    out = dict(state)
    T, N, grid = config.num_steps, config.num_patches, config.grid_size
    pos = out.get("spatial_stem.pos_embed")
    if pos is not None and pos.shape[0] != N + 1:
        out["spatial_stem.pos_embed"] = torch.cat((pos[:1], _resize_grid(pos[1:], grid)))
    windows = {"t2s": config.t2s_window, "s2t": config.s2t_window}
    for key, value in state.items():
        m = re.fullmatch(r"blocks\.\d+\.bcast\.(t2s|s2t)\.(q|kv)_pos", key)
        if m is None:
            continue
        window = windows[m.group(1)]
        target = {"time": T, "space": N, "space_time": T * N}[window]
        if value.shape[0] == target:
            continue
        if window == "time":
            out[key] = _resize_steps(value, T)
        elif window == "space":
            out[key] = _resize_grid(value, grid)
        else:
            raise ConversionError(f"{key}: cannot resize a space-time position table")
    return out


# -- file reading and strict loading ----------------------------------------------------------------------
def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def read_state_dict(path: str | Path, allow_torchscript: bool = False) -> StateDict:
    """Tensors of a checkpoint file: safetensors, or a torch file read with ``weights_only=True``.

    TorchScript archives (the OpenAI CLIP release) run code when loaded: they are read with
    ``torch.jit.load`` only when ``allow_torchscript=True`` is passed for a file you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if _is_torchscript(path):
        if not allow_torchscript:
            # No CLI of this project loads TorchScript: the way out is in Python, for a file you trust.
            raise ConversionError(f"{path} is a TorchScript archive, which runs code when loaded; if you trust "
                                  "it, convert it once in Python with cast_model.convert.read_state_dict(path, "
                                  "allow_torchscript=True) and save the state dict with torch.save")
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    try:
        checkpoint = _torch_load(path)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, ... by file kind
        raise ConversionError(f"{path} is not a weights-only torch checkpoint or safetensors file: {err}") from err
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"{path} does not hold a state dict (got {type(checkpoint).__name__})")
    return unwrap_state_dict(checkpoint)


def _torch_load(path: Path, mmap: bool = False) -> object:
    """``torch.load(weights_only=True)``. Training scripts derived from VideoMAE's (the paper's among
    them) save their ``argparse.Namespace`` beside the weights: a plain attribute bag, allowed; anything
    else that is not tensors and containers is still refused."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _as_state(checkpoint: str | Path | Mapping[str, object], allow_torchscript: bool = False) -> StateDict:
    if isinstance(checkpoint, (str, Path)):
        return read_state_dict(checkpoint, allow_torchscript=allow_torchscript)
    return unwrap_state_dict(checkpoint)


def _load_into(model: CAST, state: StateDict, expected: set[str], source: str) -> None:
    own = model.state_dict()
    _check_fit(own, state, expected, source)
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)


def _check_fit(own: Mapping[str, torch.Tensor], state: StateDict, expected: set[str], source: str) -> None:
    """Names and shapes of ``state`` against the model's ``own`` (tensors on any device, meta too)."""
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConversionError(f"{source} does not fit this CAST config: missing {_fmt(missing) or 'none'}; "
                              f"unexpected {_fmt(unexpected) or 'none'}")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if wrong:
        raise ConversionError(f"{source}: shapes differ from the model's: {_fmt(wrong)}")


def load_official_cast(checkpoint: str | Path | Mapping[str, object], config: CASTConfig) -> CAST:
    """A CAST model (experts frozen) from a checkpoint in the paper's release naming."""
    state = adapt_positions(convert_official_cast(_as_state(checkpoint)), config)
    model = CAST(config)
    _load_into(model, state, set(model.state_dict()), "CAST checkpoint")
    return freeze_experts(model).eval()


def verify_official_cast(path: str | Path, config: CASTConfig) -> None:
    """Check that :func:`load_official_cast` would load ``path`` into ``config`` without loading the
    weights: the file is complete (a safetensors header and size, or a torch zip archive's index) and
    every name and shape fits the model built on the meta device. Raises :class:`ConversionError` or
    ``FileNotFoundError`` naming the file. Made for checks before a cluster starts: seconds, no memory."""
    state = adapt_positions(convert_official_cast(_meta_state(Path(path))), config)
    with torch.device("meta"):
        model = CAST(config)
    _check_fit(model.state_dict(), state, set(model.state_dict()), f"CAST checkpoint {path}")


def _meta_state(path: Path) -> StateDict:
    """The tensors of a checkpoint file as meta tensors (names, shapes, dtypes; no data read)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:  # checks the header against the file size
                slices = {k: f.get_slice(k) for k in f.keys()}
                return {k: torch.empty(s.get_shape(), dtype=_SAFETENSORS_DTYPES[s.get_dtype()], device="meta")
                        for k, s in slices.items()}
        except (SafetensorError, OSError, KeyError) as err:
            raise ConversionError(f"{path} is not a complete safetensors file: {err}") from err
    if _is_torchscript(path):
        raise ConversionError(f"{path} is a TorchScript archive, which runs code when loaded")
    if not zipfile.is_zipfile(path):
        # torch's legacy (pre-1.6) format cannot be memory-mapped: it is read whole, weights-only
        return {k: v.to("meta") for k, v in read_state_dict(path).items()}
    try:
        # mmap: the archive's index is read and checked; tensor data stays on disk
        checkpoint = _torch_load(path, mmap=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, ... by how the file is broken
        raise ConversionError(f"{path} is not a complete weights-only torch checkpoint: {err}") from err
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"{path} does not hold a state dict (got {type(checkpoint).__name__})")
    return {k: v.to("meta") for k, v in unwrap_state_dict(checkpoint).items()}


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def _expert_keys(model: CAST, side: str) -> set[str]:
    stem = f"{side}_stem."
    layer = re.compile(rf"blocks\.\d+\.{side}\.(norm[12]|attn\.(qkv|proj|q_bias|v_bias)|mlp\.)")
    return {k for k in model.state_dict() if k.startswith(stem) or layer.match(k)}


def load_experts(model: CAST, clip: str | Path | Mapping[str, object] | None = None,
                 videomae: str | Path | Mapping[str, object] | None = None,
                 allow_torchscript: bool = False) -> CAST:
    """Load the frozen experts' released weights into ``model`` (in place), each strictly."""
    sources: list[tuple[str, object, Callable[[Mapping[str, torch.Tensor]], StateDict]]] = []
    if clip is not None:
        sources.append(("spatial", clip, convert_clip))
    if videomae is not None:
        sources.append(("temporal", videomae, convert_videomae))
    if not sources:
        raise ValueError("load_experts needs clip= and/or videomae=")
    for side, checkpoint, convert in sources:
        if not getattr(model.config, f"has_{side}"):
            raise ValueError(f"this model holds no {side} expert (experts={model.config.experts!r}): "
                             f"do not pass {'clip' if side == 'spatial' else 'videomae'}= weights")
        state = adapt_positions(convert(_as_state(checkpoint, allow_torchscript)), model.config)  # type: ignore[arg-type]
        name = "CLIP" if side == "spatial" else "VideoMAE"
        _load_into(model, state, _expert_keys(model, side), name)
    return model


__all__ = ["ConversionError", "convert_official_cast", "convert_clip", "convert_videomae", "adapt_positions",
           "unwrap_state_dict", "read_state_dict", "load_official_cast", "verify_official_cast", "load_experts"]
