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

    @property
    def pix_fmt(self) -> str:
        """The encoder's pixel format: 4:2:0, full range for MJPEG (JPEG's own range, which ffmpeg's MJPEG
        encoder takes as ``yuvj420p``), limited range for VP9 and H.264."""
        return "yuvj420p" if self.codec == "mjpeg" else "yuv420p"


class StreamEncoder:
    """Encodes frames as they come (one at a time), so a clip never sits in memory decoded: ``add`` each
    frame, then ``finish`` for the bytes. A frame is (H, W, 3) uint8 RGB (cropped to even sizes, as 4:2:0
    needs; converted by the encoder) or (3H/2, W) uint8 4:2:0 planes already in ``pix_fmt`` at the
    stream's size (``pipelines.decode.yuv_route``: taken as they are, no conversion)."""

    def __init__(self, fps: float, height: int, width: int, cfg: EncodeConfig) -> None:
        encoder, container, _, _ = CODECS[cfg.codec]
        self.height, self.width = height - height % 2, width - width % 2
        if self.height < 2 or self.width < 2:
            raise ValueError(f"frames of {width}x{height} are too small to encode")
        self.buf = io.BytesIO()
        self.frames = 0
        # Rates like 29.97 need a rational; containers store it, and DALI/PyAV read it back.
        self.container = av.open(self.buf, "w", format=container)
        self.stream = s = self.container.add_stream(encoder, rate=Fraction(round(fps * 1000), 1000))
        s.width, s.height = self.width, self.height
        s.gop_size = cfg.gop
        s.pix_fmt = self.pix_fmt = cfg.pix_fmt
        if cfg.codec == "vp9":
            # realtime + cpu-used 8: ~10x faster than the default "good" deadline at similar size here
            s.options = {"deadline": "realtime", "cpu-used": "8", "crf": str(cfg.crf), "b": "0",
                         "lag-in-frames": "0", "row-mt": "1"}
        elif cfg.codec == "mjpeg":
            # a fixed quantiser (qmin = qmax); PyAV's qscale attribute does not reach the encoder
            s.options = {"qmin": str(cfg.mjpeg_q), "qmax": str(cfg.mjpeg_q)}
        else:
            s.options = {"preset": "veryfast", "crf": str(cfg.crf), "bf": "0"}

    def add(self, frame: np.ndarray) -> None:
        if frame.dtype == np.uint8 and frame.ndim == 2:
            if frame.shape != (self.height * 3 // 2, self.width):
                raise ValueError(f"4:2:0 planes of shape {frame.shape} in a {self.width}x{self.height} stream "
                                 f"(expected {(self.height * 3 // 2, self.width)})")
            picture = av.VideoFrame.from_ndarray(frame, format=self.pix_fmt)
        elif frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[-1] == 3:
            frame = np.ascontiguousarray(frame[: self.height, : self.width])
            if frame.shape[:2] != (self.height, self.width):
                raise ValueError(f"frame of {frame.shape[1]}x{frame.shape[0]} in a {self.width}x{self.height} stream")
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
        else:
            raise ValueError(f"expected (H, W, 3) uint8 RGB or (3H/2, W) uint8 4:2:0 frames, got {frame.shape} "
                             f"{frame.dtype}")
        for packet in self.stream.encode(picture):
            self.container.mux(packet)
        self.frames += 1

    def finish(self) -> bytes:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        return self.buf.getvalue()

    def close(self) -> None:
        """Give up (a decode failed): release the encoder without the bytes."""
        try:
            self.container.close()
        except (ValueError, OSError):  # av's errors: a stream that never got a frame cannot be closed cleanly
            pass


def encode_video(frames: np.ndarray, fps: float, cfg: EncodeConfig) -> bytes:
    """Encode ``frames`` (F, H, W, 3) uint8 RGB at ``fps`` into the bytes of one container file."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (F, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    enc = StreamEncoder(fps, frames.shape[1], frames.shape[2], cfg)
    for frame in frames:
        enc.add(frame)
    return enc.finish()
