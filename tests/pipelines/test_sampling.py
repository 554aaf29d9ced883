"""Pure parts of the pipelines: frame sampling, crop boxes, keys, the tar/index writer."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from pipelines.sampling import resample_indices
from pipelines.sampling import (crop_boxes, dense_indices, eval_indices, short_side_size, train_indices,
                                uniform_indices)
from pipelines.schema import sample_key
from pipelines.shards import Member, read_index, write_tar


def test_uniform_train_takes_one_frame_per_segment():
    rng = np.random.default_rng(0)
    for n in (16, 17, 50, 301):
        for _ in range(20):
            idx = uniform_indices(n, 16, rng.uniform(size=16))
            seg = n / 16
            assert idx.dtype == np.int32 and idx.shape == (16,)
            assert np.all(idx >= np.floor(np.arange(16) * seg)) and np.all(idx < np.ceil((np.arange(16) + 1) * seg))
            assert np.all(np.diff(idx) >= 0)


def test_uniform_eval_is_the_middle_and_short_videos_repeat():
    assert uniform_indices(32, 4, np.full(4, 0.5)).tolist() == [4, 12, 20, 28]
    short = uniform_indices(5, 8, np.full(8, 0.5))
    assert short.min() >= 0 and short.max() == 4 and np.all(np.diff(short) >= 0)


def test_dense_stride_start_and_clamp():
    assert dense_indices(100, 4, 4, 0.0).tolist() == [0, 4, 8, 12]
    assert dense_indices(100, 4, 4, 1.0).tolist() == [87, 91, 95, 99]
    assert dense_indices(10, 4, 4, 0.7).tolist() == [0, 4, 8, 9]  # too short: last frame repeats
    rng = np.random.default_rng(1)
    for _ in range(50):
        idx = train_indices(64, 16, "dense", 4, rng.uniform(size=16))
        assert np.all(np.diff(idx) == 4) and idx[-1] <= 63


def test_eval_views_are_clip_major_and_distinct():
    idx = eval_indices(64, 8, 2, "uniform", 4)
    assert idx.shape == (16,)
    a, b = idx[:8], idx[8:]
    assert np.all(a < b)  # clip 0 at the first quarter of each segment, clip 1 at the third
    d = eval_indices(200, 16, 3, "dense", 4).reshape(3, 16)
    assert d[0, 0] == 0 and d[-1, -1] == 199 and np.all(np.diff(d, axis=1) == 4)
    with pytest.raises(ValueError, match="sampling"):
        eval_indices(10, 4, 1, "random", 1)


def test_crop_boxes_left_centre_right_and_top_centre_bottom():
    assert crop_boxes(224, 300, 224) == [(0, 0, 224, 224), (0, 38, 224, 224), (0, 76, 224, 224)]
    assert crop_boxes(300, 224, 224) == [(0, 0, 224, 224), (38, 0, 224, 224), (76, 0, 224, 224)]
    assert short_side_size(240, 427, 320) == (320, 568)
    assert short_side_size(427, 240, 64) == (114, 64)


def test_loader_sizes_and_crops_round_as_dali():
    """Inference views take the sizes and crop anchors DALI's resize_shorter and crop_pos give the
    evaluation loader (measured on DALI 2.4): the long side rounded half up, odd allowed; anchors half up."""
    assert short_side_size(36, 48, 32, even=False) == (32, 43)  # 42.67; an even size would be 42
    assert short_side_size(64, 85, 32, even=False) == (32, 43)  # 42.5 rounds up
    assert short_side_size(240, 427, 224, even=False) == (224, 399)
    assert short_side_size(87, 66, 32, even=False) == (42, 32)
    assert short_side_size(240, 427, 224) == (224, 398)  # shards: even
    assert crop_boxes(32, 43, 32)[1] == (0, 6, 32, 32)  # 5.5 -> 6
    assert crop_boxes(32, 45, 32)[1] == (0, 7, 32, 32)  # 6.5 -> 7 (Python's round: 6)
    assert crop_boxes(224, 399, 224) == [(0, 0, 224, 224), (0, 88, 224, 224), (0, 175, 224, 224)]


def test_resample_indices_caps_fps():
    assert resample_indices(10, 25.0, 30.0).tolist() == list(range(10))
    idx = resample_indices(120, 60.0, 30.0)
    assert idx.tolist() == list(range(0, 120, 2))


def test_sample_keys_have_no_dots_and_do_not_collide():
    assert sample_key("-abc_DEF_000001_000011") == "-abc_DEF_000001_000011"
    keys = {sample_key(s) for s in ("a.b", "a/b", "a_b", "a b")}
    assert len(keys) == 4 and not any("." in k or "/" in k for k in keys)


def test_tar_and_index_round_trip():
    samples = [[Member(f"k{i}.webm", bytes([i]) * (100 + 700 * i)), Member(f"k{i}.nf", b"\x01\0\0\0")]
               for i in range(3)]
    buf = io.BytesIO()
    index = read_index(write_tar(buf, samples))
    raw = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
    assert names == [m.name for s in samples for m in s]  # members of a sample stay adjacent
    for s, entry in zip(samples, index):
        for m in s:
            off, size = entry[m.name.split(".", 1)[1]]
            assert raw[off:off + size] == m.data
