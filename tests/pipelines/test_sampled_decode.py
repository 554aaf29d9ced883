"""``decode_sampled``: the same pixels as decoding everything and indexing, for every backend and codec,
with segments, repeats and unsorted indices; the views of batch inference come from it."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.decode import VideoDecodeError, decode_sampled, decode_video
from pipelines.encode import EncodeConfig, encode_video
from workflows.inference.views import ViewSpec, sample_views, video_views


def clip(frames: int = 40, h: int = 48, w: int = 64) -> np.ndarray:
    """Moving gradients with a frame counter: every frame differs from its neighbours."""
    y, x = np.mgrid[0:h, 0:w]
    out = np.stack([np.stack([(x * 4 + t * 9) % 256, (y * 5 + t * 3) % 256, np.full_like(x, t * 6 % 256)], -1)
                    for t in range(frames)])
    return out.astype(np.uint8)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sampled")
    out = {}
    for codec, ext in (("vp9", "webm"), ("h264", "mp4"), ("mjpeg", "avi")):
        path = root / f"v.{ext}"
        path.write_bytes(encode_video(clip(), 10.0, EncodeConfig(codec=codec, gop=8)))
        out[codec] = str(path)
    return out


PICK = np.array([0, 5, 5, 17, 39, 2, 24])


@pytest.mark.parametrize("codec", ["vp9", "h264", "mjpeg"])
@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_sampled_frames_equal_the_full_decode_indexed(videos, codec, backend):
    full = decode_video(videos[codec], short_side=32, backend=backend)
    seen = []

    def pick(n: int, fps: float) -> np.ndarray:
        seen.append((n, fps))
        return PICK

    got = decode_sampled(videos[codec], pick, short_side=32, backend=backend)
    assert seen == [(full.frames.shape[0], full.fps)] and got.source_frames == 40
    assert got.backend == full.backend
    np.testing.assert_array_equal(got.frames, full.frames[PICK])


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_a_segment_is_counted_and_sampled_like_the_full_decode(videos, backend):
    full = decode_video(videos["vp9"], segment=(10, 29), segment_fps=10.0, backend=backend)
    got = decode_sampled(videos["vp9"], lambda n, fps: np.arange(n)[::-1], segment=(10, 29), segment_fps=10.0,
                         backend=backend)
    assert got.source_frames == full.frames.shape[0] == 20
    np.testing.assert_array_equal(got.frames, full.frames[::-1])


def test_views_equal_sampling_the_fully_decoded_video(videos):
    spec = ViewSpec(num_frames=8, img_size=32, clips=2, crops=3)
    for path in videos.values():
        ref = sample_views(decode_video(path, short_side=32, like_loader=True).frames, spec)
        np.testing.assert_array_equal(video_views(path, spec), ref)


def test_bad_input_is_a_decode_error(videos, tmp_path):
    cut = tmp_path / "cut.mp4"
    data = open(videos["h264"], "rb").read()
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoDecodeError):
        decode_sampled(str(cut), lambda n, fps: np.arange(n))
    with pytest.raises(VideoDecodeError) as e:
        decode_sampled(b"not a video at all" * 10, lambda n, fps: np.arange(n))
    assert e.value.reason == "undecodable"


@pytest.mark.parametrize("codec", ["vp9", "h264", "mjpeg"])
def test_a_cut_file_is_truncated_on_every_backend(codec):
    """DALI given explicit frame indices returns frames even past a cut: the demuxed frame count catches it."""
    from pipelines.synthetic import _broken

    cut = _broken("truncated", encode_video(clip(24), 12.0, EncodeConfig(codec=codec)))
    with pytest.raises(VideoDecodeError) as e:
        decode_sampled(cut, lambda n, fps: np.arange(n))
    assert e.value.reason == "truncated"
