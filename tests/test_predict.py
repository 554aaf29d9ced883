"""``python -m workflows.predict``: top-5 per video from a registered model or a local checkpoint, as a table
or JSON; registry errors (unknown model, alias, version, unreachable server) are one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workflows.batch_infer import main as batch_infer_main
from workflows.predict import main as predict_main

from .test_serving import URI, data, registered, store  # noqa: F401 (module fixtures)


@pytest.fixture(scope="module")
def videos(data) -> list[str]:  # noqa: F811
    return [str(p) for p in sorted(Path(data["videos"]).rglob("*.webm"))[:2]]


def run_json(capsys, *argv: str) -> list[dict]:
    assert predict_main([*argv, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_registered_and_local_checkpoint_give_the_same_top5(registered, videos, capsys):  # noqa: F811
    via_registry = run_json(capsys, *videos, "--model", URI)
    local = run_json(capsys, *videos, "--model", str(registered["checkpoint"]))
    names = registered["labels"]["label"]
    assert [r["video"] for r in via_registry] == videos
    for a, b in zip(via_registry, local):
        assert a["top_ids"] == b["top_ids"] and a["top_probs"] == pytest.approx(b["top_probs"])
        assert len(a["top_ids"]) == 5 and a["top_probs"] == sorted(a["top_probs"], reverse=True)
        assert a["top_names"] == [names[str(i)] for i in a["top_ids"]]
        assert a["reason"] == "" and a["model_version"] == registered["version"]


def test_table_lists_names_and_a_broken_video_exits_1(registered, videos, tmp_path, capsys):  # noqa: F811
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 300)
    assert predict_main([videos[0], str(junk), "--model", URI, "--top-k", "3"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("cast-ssv2 v1: 2 clip(s) x 3 crop(s)")
    assert out[1] == videos[0] and len(out) == 1 + 1 + 3 + 2
    rank1 = out[2].split(maxsplit=3)
    assert rank1[0] == "1" and rank1[3] in registered["labels"]["label"].values()
    assert out[5] == str(junk) and out[6].startswith("  rejected: ")


@pytest.mark.parametrize("model, says", [
    ("models:/no-such-model@champion", "no-such-model"),
    (f"{URI[:-len('@champion')]}@no-such-alias", "no-such-alias"),
    (f"{URI[:-len('@champion')]}/99", "99"),
])
def test_unknown_model_alias_or_version_is_one_line_and_exit_2(registered, videos, tmp_path, capsys,  # noqa: F811
                                                               model, says):
    assert predict_main([videos[0], "--model", model]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"predict: --model {model}: ") and says in err
    assert batch_infer_main(["--model", model, "--input", videos[0], "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"batch_infer: --model {model}: ") and says in err


def test_an_unreachable_tracking_server_is_one_line_and_exit_2(videos, tmp_path):
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5299", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    import os

    proc = subprocess.run([sys.executable, "-m", "workflows.predict", videos[0], "--model", URI],
                          env=dict(os.environ, **env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"predict: --model {URI}: "), proc.stderr


def test_bad_flags_exit_2_before_loading_anything(videos, capsys):
    for argv in ([videos[0], "--model", URI, "--top-k", "0"], ["nope.mp4", "--model", URI],
                 [videos[0], "--model", URI, "--num-crops", "2"]):
        with pytest.raises(SystemExit) as e:
            predict_main(argv)
        assert e.value.code == 2
