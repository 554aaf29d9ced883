"""The shards' YUV route (``pipelines.decode.yuv_route``): PyAV decodes of 8-bit 4:2:0 sources go from the
source's planes to the encoder's in one swscale pass, never through RGB. Checked against the RGB route on
the same file, through the job's own per-video work (``process_row``) and a decode of the shard:

* the same frames: count, source frame numbers and order, with and without ``max_fps`` dropping some;
* turned as displayed (each display matrix, the mirrored one too) and sized as the RGB route sizes;
* pixels: the two routes' shards differ by at most :data:`ROUTE_BOUND` levels on average, and the YUV
  route's shard is never further from the source than the RGB route's (the RGB route resamples the
  chroma twice: up for RGB, down again in the encoder).

Sources without the route keep the RGB one, byte for byte: odd sizes, 4:4:4 and 10-bit streams, DALI.
The content is the fidelity suite's (``real_video_cases.frames``): saturated stripes a few pixels wide,
colour edges everywhere, at 72x48, the worst case for 4:2:0 chroma; smooth footage differs far less.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import pipelines.clips as clips
from pipelines import decode
from pipelines.decode import decode_video, plan_decode, stream_frames
from pipelines.encode import EncodeConfig
from pipelines.preprocess_job import _Work, process_row
from pipelines.schema import VideoRow
from tests.support.real_video_cases import FPS, N, frame_number, frames
from tests.support.real_videos import encode

# Mean absolute difference (0-255 levels, every frame) allowed between the two routes' decoded shards, per
# shard codec. Measured on this content 2026-12-04: MJPEG q5 6.3-7.8, VP9 crf 32 6.9-11.0 (the most at
# BT.709 resized to 32 px); most of it is the RGB route's second chroma resampling, see the docstring.
ROUTE_BOUND = {"mjpeg": 8.5, "vp9": 11.5}
# The YUV route's shard may be this much further from the source than the RGB route's (measured: it is
# 0.0-4.2 levels closer in every case here).
SLACK = 0.25
# Display matrices: the coded upright frame -> as displayed (test_real_video checks these against ffmpeg).
TURNED = ("rotate_90", "rotate_180", "rotate_270", "mirror")
UNTURN = {"rotate_90": lambda f: np.rot90(f, k=-1), "rotate_180": lambda f: f[::-1, ::-1],
          "rotate_270": lambda f: np.rot90(f, k=1), "mirror": lambda f: f[:, ::-1]}
VP9 = ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-pix_fmt", "yuv420p")


@pytest.fixture(scope="module")
def videos(real_videos, tmp_path_factory) -> dict[str, Path]:
    """The fidelity suite's videos plus 4:2:0 sources it lacks (its VP9 files are RGB-coded ``gbrp``):
    VP9 4:2:0, H.264 full range, H.264 tagged BT.709 (the swscale pass converts the matrix), and an odd
    size (71x47, which VP9 4:2:0 allows and x264 does not)."""
    root = tmp_path_factory.mktemp("yuv_route")
    made = {
        "vp9_420": encode(frames(), root / "vp9_420.webm", VP9),
        "h264_full": encode(frames(), root / "h264_full.mp4",
                            ("-c:v", "libx264", "-vf", "scale=out_range=pc", "-pix_fmt", "yuvj420p")),
        "h264_bt709": encode(frames(), root / "h264_bt709.mp4",
                             ("-c:v", "libx264", "-vf", "scale=out_color_matrix=bt709:out_range=tv", "-pix_fmt",
                              "yuv420p", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709")),
        "odd_420": encode(frames(h=47, w=71), root / "odd_420.webm", VP9),
    }
    return dict(real_videos) | made


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def shard(path: Path, monkeypatch, *, yuv: bool, short_side: int | None, codec: str = "mjpeg",
          max_fps: float | None = None) -> tuple[np.ndarray, list[bool]]:
    """``path`` preprocessed as the job does, the YUV route allowed (where it applies) or not: the
    decoded frames of its shard and the route each decode took."""
    taken: list[bool] = []

    def route(plan: decode.VideoPlan) -> bool:
        taken.append(yuv and decode.yuv_route(plan))
        return taken[-1]

    with monkeypatch.context() as m:
        m.setattr(clips, "yuv_route", route)
        out = process_row(VideoRow("v", str(path), {"label": 0}).to_record(),
                          _Work(short_side, max_fps, EncodeConfig(codec=codec), "cpu", 2, ("label",)))
    assert out["reason"] == "", out["detail"]
    got = decode_video(out["video"]).frames
    assert json.loads(out["meta"])["num_frames"] == len(got)
    return got, taken


@pytest.mark.parametrize("name", ["h264", "vp9_420", "h264_full", "h264_bt709", *TURNED])
@pytest.mark.parametrize("short_side", [None, 32], ids=["native", "resized"])
@pytest.mark.parametrize("codec", ["mjpeg", "vp9"])
def test_the_yuv_route_stores_the_rgb_routes_frames(videos, monkeypatch, name, short_side, codec):
    yuv, taken = shard(videos[name], monkeypatch, yuv=True, short_side=short_side, codec=codec)
    rgb, _ = shard(videos[name], monkeypatch, yuv=False, short_side=short_side, codec=codec)
    assert taken == [True], "the YUV route was not taken"
    assert yuv.shape == rgb.shape, (yuv.shape, rgb.shape)
    if short_side is None:  # the frame number's blocks are legible at the native size only
        unturn = UNTURN.get(name, lambda f: f)
        numbers = [frame_number(unturn(f)) for f in yuv]
        assert numbers == [frame_number(unturn(f)) for f in rgb] == list(range(N)), numbers
    per_frame = [mad(a, b) for a, b in zip(yuv, rgb)]
    # no frame swapped, turned or shifted: neighbouring source frames differ by ~57 levels
    assert max(per_frame) <= ROUTE_BOUND[codec] + 2, per_frame
    assert mad(yuv, rgb) <= ROUTE_BOUND[codec], f"{name}: {mad(yuv, rgb):.2f} > {ROUTE_BOUND[codec]}"
    source = decode_video(str(videos[name]), short_side=short_side).frames  # as the RGB route encodes it
    assert mad(yuv, source) <= mad(rgb, source) + SLACK, (mad(yuv, source), mad(rgb, source))


@pytest.mark.parametrize("name", ["h264", "rotate_90"])
def test_frames_dropped_for_max_fps_are_the_same_on_both_routes(videos, monkeypatch, name):
    yuv, taken = shard(videos[name], monkeypatch, yuv=True, short_side=None, max_fps=FPS / 3)
    rgb, _ = shard(videos[name], monkeypatch, yuv=False, short_side=None, max_fps=FPS / 3)
    assert taken == [True]
    unturn = UNTURN.get(name, lambda f: f)
    numbers = [frame_number(unturn(f)) for f in yuv]
    assert numbers == [frame_number(unturn(f)) for f in rgb] == list(range(0, N, 3)), numbers


@pytest.mark.parametrize("name, short_side", [("odd_420", None), ("odd_size", None), ("mjpeg", None),
                                              ("vfr", 32), ("h264_10bit", 32)])
def test_sources_without_the_route_keep_the_rgb_route(videos, monkeypatch, name, short_side):
    """An odd size as stored (cropped to even RGB by the encoder), 4:4:4 (the MJPEG and VFR cases) and
    10-bit sources: the RGB route, so their shards are exactly what they were."""
    allowed, taken = shard(videos[name], monkeypatch, yuv=True, short_side=short_side)
    rgb, _ = shard(videos[name], monkeypatch, yuv=False, short_side=short_side)
    assert taken == [False]
    np.testing.assert_array_equal(allowed, rgb)


def test_an_odd_source_resized_to_an_even_size_takes_the_route(videos, monkeypatch):
    native, taken = shard(videos["odd_420"], monkeypatch, yuv=True, short_side=None)
    assert taken == [False] and native.shape[1:3] == (46, 70)  # the encoder's even crop of 47x71
    resized, taken = shard(videos["odd_420"], monkeypatch, yuv=True, short_side=32)
    assert taken == [True] and resized.shape[1:3] == (32, 48)


def test_the_route_is_pyavs_and_never_the_loaders(videos):
    path = str(videos["vp9_420"])
    assert decode.yuv_route(plan_decode(path))
    assert not decode.yuv_route(plan_decode(path, backend="dali"))  # DALI hands over RGB
    assert not decode.yuv_route(plan_decode(path, short_side=32, like_loader=True))
    with pytest.raises(ValueError, match="yuvj420p"):
        next(stream_frames(plan_decode(path, backend="dali"), pix_fmt="yuvj420p"))
    with pytest.raises(ValueError, match="nv12"):
        next(stream_frames(plan_decode(path), pix_fmt="nv12"))
