"""Fidelity against the reference decoder: every kind of real video in ``real_video_cases.CASES``, made
with Debian's ffmpeg, decoded by the pipeline and compared frame by frame with ffmpeg's own decode
(``real_videos.reference``: pinned scale flags, the stream's colour matrix and range, autorotate).

Each stored frame must be the source frame ffmpeg shows at that position (the frame number drawn in the
picture is read back) and within the case's mean absolute difference (``Case.bound``, 0-255 levels:
0.5 for 8-bit, i.e. identical in practice). Bad inputs get their reject reason on every path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.decode import VideoDecodeError, decode_sampled, decode_video, plan_decode
from tests.support.real_video_cases import CASES, FPS, N, docs_rows, docs_table, frame_number
from tests.support.real_videos import reference

DOCS = Path(__file__).resolve().parents[2] / "docs" / "real-video.md"
ACCEPTED = [c for c in CASES if c.outcome == "accepted"]
REJECTED = [c for c in CASES if c.outcome != "accepted"]
# DALI's CPU decoder (VP8/VP9/MJPEG) against ffmpeg on this colour-edge content (measured, docs/real-video.md):
# identical for VP9 and MJPEG, ~11 levels mean (max ~100) for VP8; its frame numbers must agree always.
DALI_BOUND = {"vp8": 12.0}


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_the_docs_table_lists_every_case_with_its_outcome():
    assert DOCS.is_file(), f"{DOCS} is missing"
    assert docs_rows(DOCS.read_text()) == [(c.name, c.container, c.codec, c.kind, c.outcome) for c in CASES], \
        "docs/real-video.md's table differs from tests/support/real_video_cases.py; expected:\n" + docs_table()


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_every_frame_is_ffmpegs_frame(real_videos, case):
    path = real_videos[case.name]
    ref = reference(path)
    got = decode_video(str(path))
    assert got.frames.shape == ref.shape, (got.frames.shape, ref.shape)
    if not case.name.startswith(("rotate", "mirror")):  # the number is drawn upright only
        numbers = [frame_number(f) for f in got.frames]
        assert numbers == [frame_number(f) for f in ref]
        if case.name != "vfr":  # ffmpeg's vfr muxing drops some source frames; the others are all there
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) and numbers[-1] == N - 1
    assert mad(got.frames, ref) <= case.bound, f"{case.name}: {mad(got.frames, ref):.2f} > {case.bound}"
    # batch inference's sampled decode takes the same frames
    pick = np.array([0, len(ref) - 1, len(ref) // 2, 1, 1])
    np.testing.assert_array_equal(decode_sampled(str(path), lambda n, fps: pick).frames, got.frames[pick])


@pytest.mark.parametrize("case", REJECTED, ids=lambda c: c.name)
def test_a_bad_input_gets_its_reason_on_every_path(real_videos, case):
    for decode in (lambda p: decode_video(p), lambda p: decode_sampled(p, lambda n, fps: np.arange(n))):
        with pytest.raises(VideoDecodeError) as e:
            decode(str(real_videos[case.name]))
        assert e.value.reason == case.outcome, str(e.value)


def test_rotation_is_applied_as_ffmpeg_displays_it(real_videos):
    """The same stream with each display matrix: frames turned (and mirrored) exactly, as ffmpeg shows
    them. ffmpeg's ``rotate=90`` tag (the matrix [0 -1; 1 0]) displays a quarter turn counter-clockwise."""
    upright = decode_video(str(real_videos["base_h264"])).frames
    turned = {
        "rotate_90": np.rot90(upright, k=1, axes=(1, 2)),
        "rotate_180": upright[:, ::-1, ::-1],
        "rotate_270": np.rot90(upright, k=-1, axes=(1, 2)),
        "mirror": upright[:, :, ::-1],
    }
    for name, want in turned.items():
        np.testing.assert_array_equal(decode_video(str(real_videos[name])).frames, want, err_msg=name)


def test_segments_count_from_the_first_frame_whatever_the_start_offset(real_videos):
    for name in ("h264", "start_offset"):
        seg = decode_video(str(real_videos[name]), segment=(6, 11), segment_fps=float(FPS))
        assert [frame_number(f) for f in seg.frames] == list(range(6, 12)), name


@pytest.mark.parametrize("name", ["vp8", "vp9", "mjpeg", "odd_size"])
def test_dali_gives_ffmpegs_frames_within_its_bound(real_videos, name):
    path = str(real_videos[name])
    ref = reference(real_videos[name])
    got = decode_video(path, backend="dali")
    assert got.backend == "dali-cpu"
    assert [frame_number(f) for f in got.frames] == [frame_number(f) for f in ref]
    assert mad(got.frames, ref) <= DALI_BOUND.get(name, 0.5), mad(got.frames, ref)
    pick = np.array([3, 0, 20])
    np.testing.assert_array_equal(decode_sampled(path, lambda n, fps: pick, backend="dali").frames,
                                  got.frames[pick])


def test_an_edit_list_never_reaches_dali_and_never_leaks_a_frame(real_videos):
    """DALI numbers frames by packet: a stream with hidden pre-roll is decoded by PyAV even when DALI is
    asked for, after another video went through DALI, and every frame is this video's."""
    decode_video(str(real_videos["vp9"]), backend="dali")
    path = str(real_videos["edit_list_vp9"])
    got = decode_video(path, backend="dali")
    ref = reference(real_videos["edit_list_vp9"])
    assert got.backend == "pyav"
    assert [frame_number(f) for f in got.frames] == [frame_number(f) for f in ref]
    sampled = decode_sampled(path, lambda n, fps: np.arange(n), backend="dali").frames
    assert [frame_number(f) for f in sampled] == [frame_number(f) for f in ref]


def test_a_recording_is_decoded_once_for_all_its_segments(real_videos, monkeypatch):
    """EK100: the segments of one video (here one that starts at 0.5 s) come out of one decode pass,
    each clip holding exactly its source frames, counted from the first frame."""
    import pipelines.clips as clips
    from pipelines.encode import EncodeConfig
    from pipelines.preprocess_job import _Work, process_group
    from pipelines.schema import VideoRow

    plans = []
    monkeypatch.setattr(clips, "plan_decode", lambda *a, **k: plans.append(a) or plan_decode(*a, **k))
    path = str(real_videos["start_offset"])
    segments = [(2, 7), (5, 9), (20, 40), (30, 31)]  # overlapping; one ends past the video; one starts past it
    records = [VideoRow(f"s{i}", path, {"verb": 0, "noun": 0}, seg, float(FPS)).to_record()
               for i, seg in enumerate(segments)]
    out = process_group(records, _Work(None, None, EncodeConfig(codec="mjpeg", mjpeg_q=2), "cpu", 2, ("verb", "noun")))
    assert len(plans) == 1
    assert [o["reason"] for o in out] == ["", "", "", "segment_out_of_range"]
    for o, (a, b) in zip(out[:3], segments):
        got = [frame_number(f) for f in decode_video(o["video"]).frames]
        assert got == list(range(a, min(b, N - 1) + 1)), (a, b, got)
    assert json.loads(out[2]["meta"])["clamped"] is True
