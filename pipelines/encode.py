"""Re-encoding clips for the shards (PyAV).

Short GOPs on purpose: DALI seeks to the previous keyframe for every sampled frame, so sparse sampling
from a long GOP decodes most of the clip again (see the README's measurements).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from pipelines.schema import CODECS


@dataclass(frozen=True)
class EncodeConfig:
    codec: str = "mjpeg"  # a key of schema.CODECS
    gop: int = 8  # frames between keyframes
    crf: int = 32  # VP9/H.264 quality (lower = better, bigger)
    mjpeg_q: int = 5  # MJPEG quantiser (2 = best .. 31 = worst); 5 ~ the error of VP9 crf 32 here

    def __post_init__(self):
        if self.codec not in CODECS:
            raise ValueError(f"unknown shard codec {self.codec!r}; expected one of {sorted(CODECS)}")
        if self.gop < 1:
            raise ValueError(f"gop must be >= 1, got {self.gop}")


def encode_video(frames: np.ndarray, fps: float, cfg: EncodeConfig) -> bytes:
    """Encode ``frames`` (F, H, W, 3) uint8 RGB at ``fps`` into the bytes of one container file."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (F, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    encoder, container, _, _ = CODECS[cfg.codec]
    f, h, w, _ = frames.shape
    frames = frames[:, : h - h % 2, : w - w % 2]  # 4:2:0 needs even sizes
    buf = io.BytesIO()
    # Rates like 29.97 need a rational; containers store it, and DALI/PyAV read it back.
    rate = Fraction(round(fps * 1000), 1000)
    with av.open(buf, "w", format=container) as c:
        s = c.add_stream(encoder, rate=rate)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.gop_size = cfg.gop
        if cfg.codec == "vp9":
            s.pix_fmt = "yuv420p"
            # realtime + cpu-used 8: ~10x faster than the default "good" deadline at similar size here
            s.options = {"deadline": "realtime", "cpu-used": "8", "crf": str(cfg.crf), "b": "0",
                         "lag-in-frames": "0", "row-mt": "1"}
        elif cfg.codec == "mjpeg":
            s.pix_fmt = "yuvj420p"
            # a fixed quantiser (qmin = qmax); PyAV's qscale attribute does not reach the encoder
            s.options = {"qmin": str(cfg.mjpeg_q), "qmax": str(cfg.mjpeg_q)}
        else:
            s.pix_fmt = "yuv420p"
            s.options = {"preset": "veryfast", "crf": str(cfg.crf), "bf": "0"}
        for frame in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return buf.getvalue()
