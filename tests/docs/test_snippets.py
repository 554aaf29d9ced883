"""The docs' Python snippets that are marked as run (``<!-- snippet: NAME ... -->`` above the block) are
run here, as written, on tiny real data: only the line that names the data folder is pointed at it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.pipelines_data import make_dataset, shards_without_ray

from .markdown import DOCS

MARKED = re.compile(r"<!-- snippet: (?P<name>[\w-]+)[^>]*-->\s*```python\n(?P<code>.*?)^```", re.S | re.M)


def snippet(page: str, name: str) -> str:
    found = {m["name"]: m["code"] for m in MARKED.finditer((DOCS / page).read_text())}
    assert name in found, f"docs/{page} has no snippet {name!r}"
    return found[name]


def pointed_at(code: str, **values: str) -> str:
    """The snippet with each ``NAME = ...`` assignment of ``values`` replaced (it must be there)."""
    for name, value in values.items():
        code, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", code, flags=re.M)
        assert n == 1, f"the snippet does not assign {name} on a line of its own"
    return code


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_the_webdataset_snippet_reads_default_shards(tmp_path: Path):
    data = make_dataset("ssv2", tmp_path, videos_per_class=1)
    out = tmp_path / "shards"
    # The default codec (mjpeg, .avi members), as cast-preprocess writes without --codec.
    shards_without_ray("ssv2", data["videos"], data["annotations"], "train", out, per_shard=3, codec="mjpeg")
    scope: dict = {}
    exec(compile(pointed_at(snippet("shard-format.md", "webdataset"), out=str(out)), "shard-format.md", "exec"),
         scope)
    assert isinstance(scope["video"], bytes) and scope["video"][:4] == b"RIFF"  # an AVI member, read as written
    assert isinstance(scope["label"], int)
    rows = scope["ds"].take_all()
    assert len(rows) == 8 and {"__key__", "cls", "json", "avi"} <= set(rows[0])
