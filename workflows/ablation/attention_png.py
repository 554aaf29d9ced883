"""B-CAST's attention maps for a few test videos, as arrays and as one PNG on CAST's MLflow run.

Per video (a row): the frames the spatial expert sees, each overlaid with where the temporal queries of
that time step look in space (S2T of the last block that has it), and beside them, per block, a T x T
matrix of where the spatial queries of each step look along time (T2S; blocks differ: one may be sharp
while another stays uniform). ``attention/maps.npz`` holds every block's
profiles: ``t2s_time`` (V, blocks, T, T) and ``s2t_space`` (V, blocks, T, N).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from cast_model import CAST
from cast_model.attention import attention_profiles, capture_attention
from pipelines.synthetic_tasks import DIRECTIONS, object_name

ARTIFACT_DIR = "attention"
_MEAN = np.array([0.485, 0.456, 0.406])[:, None, None]
_STD = np.array([0.229, 0.224, 0.225])[:, None, None]


@torch.no_grad()
def attention_arrays(model: CAST, video: np.ndarray) -> dict[str, np.ndarray]:
    """(V, 3, F, S, S) clips -> {"t2s_time": (V, blocks, T, T), "s2t_space": (V, blocks, T, N)} from
    every B-CAST block that has each direction (an empty blocks axis where none has)."""
    model.eval()
    cfg = model.config
    with capture_attention(model) as maps:
        model(torch.from_numpy(np.array(video, np.float32)))
    V, T, N = len(video), cfg.num_steps, cfg.num_patches
    t2s = [attention_profiles(m, cfg)["time"] for m in maps if m.direction == "t2s"]
    s2t = [attention_profiles(m, cfg)["space"] for m in maps if m.direction == "s2t"]
    return {"t2s_time": torch.stack(t2s, 1).numpy() if t2s else np.zeros((V, 0, T, T), np.float32),
            "s2t_space": torch.stack(s2t, 1).numpy() if s2t else np.zeros((V, 0, T, N), np.float32)}


def spatial_frames(clip: np.ndarray, tubelet: int) -> np.ndarray:
    """(3, F, S, S) normalised clip -> (T, S, S, 3) RGB in [0, 1]: the frames the spatial expert sees."""
    frames = clip[:, tubelet - 1::tubelet].astype(np.float64)  # (3, T, S, S)
    rgb = frames * _STD[:, None] + _MEAN[:, None]
    return np.clip(rgb.transpose(1, 2, 3, 0), 0, 1)


def render(path: Path, video: np.ndarray, arrays: dict[str, np.ndarray], tubelet: int, titles: list[str]) -> Path:
    """The PNG: one row per video, T frames with the last S2T map over them, then each block's T2S matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    V, T = len(video), video.shape[2] // tubelet
    S, blocks = video.shape[-1], max(arrays["t2s_time"].shape[1], 1)
    fig, axes = plt.subplots(V, T + blocks, figsize=(1.6 * (T + blocks), 1.8 * V), squeeze=False)
    for v in range(V):
        frames = spatial_frames(video[v], tubelet)
        for t in range(T):
            ax = axes[v, t]
            ax.imshow(frames[t])
            if arrays["s2t_space"].shape[1]:
                space = arrays["s2t_space"][v, -1, t]  # (N,)
                g = int(round(np.sqrt(len(space))))
                ax.imshow(space.reshape(g, g), cmap="inferno", alpha=0.55, extent=(0, S, S, 0),
                          interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"t={t}" if v == 0 else "", fontsize=7)
        axes[v, 0].text(0, -0.25 * S, titles[v], fontsize=6, transform=axes[v, 0].transData)
        for b in range(blocks):
            ax = axes[v, T + b]
            if not arrays["t2s_time"].shape[1]:
                ax.set_axis_off()
                continue
            ax.imshow(arrays["t2s_time"][v, b], cmap="viridis", vmin=0, vmax=1)
            ax.set_xlabel("key step", fontsize=6)
            ax.set_ylabel("query step", fontsize=6)
            ax.set_xticks(range(T))
            ax.set_yticks(range(T))
            ax.tick_params(labelsize=5)
            if v == 0:
                ax.set_title(f"T2S block {b}: along time", fontsize=7)
    fig.suptitle("S2T: where temporal queries look in space (overlay); T2S: where spatial queries look in time",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_attention_maps(client, run_id: str, model: CAST, data, count: int, probs: dict[str, np.ndarray]) -> None:
    """The first ``count`` test videos' maps on ``run_id``: ``attention/maps.npz`` and ``attention/maps.png``."""
    video = data.test.video[:count]
    arrays = attention_arrays(model, video)
    names = data.class_names
    titles = [f"true: {names[int(y)]}\npred: noun {object_name(int(n))}, verb {DIRECTIONS[int(v)][0]}"[:150]
              for y, n, v in zip(data.test.label[:count], probs["noun"][:count].argmax(1),
                                 probs["verb"][:count].argmax(1))]
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "maps.npz", **arrays)
        render(Path(tmp) / "maps.png", video, arrays, model.config.tubelet_size, titles)
        client.log_artifacts(run_id, tmp, ARTIFACT_DIR)
