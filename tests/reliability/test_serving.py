"""Serving and predict under hostile input (issue 11): the logged MLflow pyfunc and ``workflows.predict``
turn each bad video (a directory or fifo named like a video, a symlink loop, zero bytes, garbage, a cut
file, an absurd header, a missing path) into its reject reason, beside the good videos' predictions, in
input order; never a traceback, never a failed request for the whole batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.support.hostile import add_hostile_videos
from tests.support.registered import URI, data, registered, store  # noqa: F401 (module fixtures)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inbox(data, tmp_path_factory) -> dict:  # noqa: F811
    """Two good videos and, beside them, every hostile entry of the inference fault suite plus a path
    that does not exist."""
    folder = tmp_path_factory.mktemp("hostile_inbox")
    good = []
    for p in sorted(Path(data["videos"]).rglob("*.webm"))[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
        good.append(str(folder / p.name))
    bad = add_hostile_videos(folder, Path(good[0]).read_bytes()) | {str(folder / "gone.mp4"): "missing"}
    return {"good": good, "bad": bad}


@pytest.fixture(scope="module")
def pyfunc(registered):  # noqa: F811
    return mlflow.pyfunc.load_model(URI)


def check_rows(rows: list[dict], names: list[str], expected: dict[str, str], good: dict[str, list[int]]) -> None:
    """One row per input in input order: a good video's top-5 (as when asked alone), a bad one's reason
    and no prediction."""
    assert [r["video"] for r in rows] == names
    for r, name in zip(rows, names):
        if name in good:
            assert r["reason"] == "" and list(r["top_ids"]) == good[name], r
        else:
            assert (r["reason"], len(r["top_ids"]), len(r["top_probs"])) == (expected[name], 0, 0), r
            assert r["detail"]


def test_the_pyfunc_answers_a_mixed_batch_of_paths_row_by_row(pyfunc, inbox):
    alone = pyfunc.predict(pd.DataFrame({"path": inbox["good"]})).to_dict("records")
    good = {r["video"]: list(r["top_ids"]) for r in alone}
    assert all(len(ids) == 5 for ids in good.values())
    # good ones first, last and between the bad ones; a file:// URI of a fifo is refused unopened too
    fifo = next(p for p in inbox["bad"] if p.endswith("fifo.webm"))
    names = [inbox["good"][0], *inbox["bad"], inbox["good"][1], f"file://{fifo}"]
    expected = inbox["bad"] | {f"file://{fifo}": "not_a_file"}
    rows = pyfunc.predict(pd.DataFrame({"path": names})).to_dict("records")
    check_rows(rows, names, expected, good)


def test_the_pyfunc_answers_a_mixed_batch_of_bytes_row_by_row(pyfunc, inbox):
    readable = {p: r for p, r in inbox["bad"].items() if Path(p).is_file() and not Path(p).is_symlink()}
    assert sorted(readable.values()) == ["bad_metadata", "empty", "truncated", "undecodable"]
    order = [inbox["good"][0], *readable, inbox["good"][1]]
    frame = pd.DataFrame({"video": [Path(p).read_bytes() for p in order]})
    rows = pyfunc.predict(frame).to_dict("records")
    names = [f"video-{i}" for i in range(len(order))]
    alone = pyfunc.predict(pd.DataFrame({"path": inbox["good"]})).to_dict("records")
    good = {names[0]: list(alone[0]["top_ids"]), names[-1]: list(alone[1]["top_ids"])}
    check_rows(rows, names, {n: readable[p] for n, p in zip(names, order) if p in readable}, good)


def run_predict(*argv: str) -> tuple[int, list[str], str]:
    """``python -m workflows.predict ARGV`` as a user runs it (tracebacks included, if there were any; the
    timeout catches a fifo that would be opened: it blocks) -> exit code, error lines, stdout. Besides the
    errors, stderr holds only ``[predict] ...`` notes (the precision chosen)."""
    proc = subprocess.run([sys.executable, "-m", "workflows.predict", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    errors = [s for s in lines if not s.startswith("[predict] ")]
    assert "Traceback" not in proc.stderr and all(s.startswith("predict: ") for s in errors), proc.stderr
    return proc.returncode, errors, proc.stdout


def test_predict_names_each_bad_file_and_its_reason_on_one_line_and_exits_2(registered, inbox):  # noqa: F811
    videos = [inbox["good"][0], *inbox["bad"]]
    code, errors, out = run_predict(*videos, "--model", str(registered["checkpoint"]), "--json", "--test-clips", "1")
    assert code == 2 and len(errors) == len(inbox["bad"]), errors
    for line, (path, reason) in zip(errors, inbox["bad"].items()):
        assert line.startswith(f"predict: {path}: {reason}: "), line
    rows = [json.loads(s) for s in out.splitlines()]
    assert [r["video"] for r in rows] == videos
    assert rows[0]["reason"] == "" and len(rows[0]["top_ids"]) == 5
    assert [r["reason"] for r in rows[1:]] == list(inbox["bad"].values())


def test_predict_of_one_fifo_is_one_line_and_exit_2(registered, inbox):  # noqa: F811
    fifo = next(p for p in inbox["bad"] if p.endswith("fifo.webm"))
    code, errors, _ = run_predict(fifo, "--model", str(registered["checkpoint"]))
    assert code == 2 and errors == [f"predict: {fifo}: not_a_file: {fifo} is not a regular file"]
