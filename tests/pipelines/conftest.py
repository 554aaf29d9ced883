"""Fixtures of the pipelines tests: the fidelity suite's ffmpeg-made videos, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.real_videos import make_all


@pytest.fixture(scope="session")
def real_videos(tmp_path_factory) -> dict[str, Path]:
    """Every case of ``real_video_cases.CASES`` as a file (a few seconds, once per session)."""
    return make_all(tmp_path_factory.mktemp("real_videos"))
