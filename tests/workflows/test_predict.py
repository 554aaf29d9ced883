"""``cast-predict`` (``workflows/predict.py``): top-5 per video from a registered model or a local checkpoint, as a table
or JSON; registry errors (unknown model, alias, version, unreachable server) are one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workflows.batch_infer import main as batch_infer_main
from workflows.predict import main as predict_main

from tests.support.registered import URI, data, registered, store  # noqa: F401 (module fixtures)


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


def test_table_lists_names_and_a_broken_video_exits_2(registered, videos, tmp_path, capsys):  # noqa: F811
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 300)
    assert predict_main([videos[0], str(junk), "--model", URI, "--top-k", "3"]) == 2
    captured = capsys.readouterr()
    errors = [s for s in captured.err.splitlines() if s.startswith("cast-predict: ")]  # not notes
    assert "Traceback" not in captured.err and len(errors) == 1 and errors[0].startswith(f"cast-predict: {junk}: undecodable: "), captured.err
    assert "Downloading artifacts" not in captured.err  # MLflow's bar is off where stderr is no terminal
    out = captured.out.splitlines()
    assert out[0].startswith("cast-ssv2 v1: 2 clip(s) x 3 crop(s)")
    assert out[1] == videos[0] and len(out) == 1 + 1 + 3 + 2
    rank1 = out[2].split(maxsplit=3)
    assert rank1[0] == "1" and rank1[3] in registered["labels"]["label"].values()
    assert out[5] == str(junk) and out[6].startswith("  rejected: ")


def test_a_still_picture_is_no_video_exit_2_naming_it(registered, tmp_path, capsys):  # noqa: F811
    """The one minimum-frames rule of preprocessing and inference: a JPEG is one frame, not a video."""
    from PIL import Image

    still = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(still)
    assert predict_main([str(still), "--model", URI]) == 2
    errors = [s for s in capsys.readouterr().err.splitlines() if s.startswith("cast-predict: ")]
    assert len(errors) == 1 and errors[0].startswith(f"cast-predict: {still}: too_short: a still image"), errors


def test_the_registry_asked_is_the_projects_not_mlflows_process_wide_one(registered, videos, tmp_path):  # noqa: F811
    """MLflow's models:/ download asks the process-wide registry (``mlflow.get_registry_uri()``) whatever
    registry it is given; with no MLFLOW_TRACKING_URI that was a ``mlflow.db`` in the working directory,
    so ``predict`` after ``make demo`` found no model. Here a fresh process's MLflow registry points
    elsewhere: the project's store must still be the one asked, for an alias and for a version."""
    import os

    other = tmp_path / "elsewhere.db"
    env = dict(os.environ, MLFLOW_REGISTRY_URI=f"sqlite:///{other}")  # MLFLOW_TRACKING_URI: the test store
    for model in (URI, f"{URI[:-len('@champion')]}/{registered['version']}"):
        proc = subprocess.run([sys.executable, "-m", "workflows.predict", videos[0], "--model", model, "--json"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout)["model_version"] == registered["version"]
    assert not other.exists()


@pytest.mark.parametrize("model, says", [
    ("models:/no-such-model@champion", "no-such-model"),
    (f"{URI[:-len('@champion')]}@no-such-alias", "no-such-alias"),
    (f"{URI[:-len('@champion')]}/99", "99"),
])
def test_unknown_model_alias_or_version_is_one_line_and_exit_2(registered, videos, tmp_path, capsys,  # noqa: F811
                                                               model, says):
    assert predict_main([videos[0], "--model", model]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"cast-predict: error: --model {model}: ") and says in err
    assert batch_infer_main(["--model", model, "--input", videos[0], "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"cast-batch-infer: error: --model {model}: ") and says in err


def test_an_unreachable_tracking_server_is_one_line_and_exit_2(videos, tmp_path):
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5299", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    import os

    proc = subprocess.run([sys.executable, "-m", "workflows.predict", videos[0], "--model", URI],
                          env=dict(os.environ, **env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"predict.py: error: --model {URI}: "), proc.stderr


def test_bad_flags_exit_2_before_loading_anything(videos, capsys):
    with pytest.raises(SystemExit) as e:  # argparse: not one of the choices
        predict_main([videos[0], "--model", URI, "--test-crops", "2"])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("cast-predict: error: argument --test-crops: invalid choice")
    # the config's own check, before the model is resolved (no such model here: it is never looked up)
    assert predict_main([videos[0], "--model", "models:/no-such-model@x", "--top-k", "0"]) == 2
    assert capsys.readouterr().err == "cast-predict: error: --top-k must be >= 1, got 0\n"


def test_ek100_checkpoint_lists_verb_noun_and_action(tmp_path, capsys):
    from pipelines.datasets import read_dataset
    from workflows.inference.pyfunc import signature_for

    from tests.support.pipelines_data import make_dataset
    from tests.support.models import tiny_checkpoint

    d = make_dataset("ek100", tmp_path, videos_per_class=1)
    labels = read_dataset("ek100", d["videos"], d["val_annotations"], "").label_map
    ckpt = tiny_checkpoint(tmp_path / "ek", labels, head="verb_noun", num_verbs=len(labels["verb"]),
                           num_nouns=len(labels["noun"]))
    video = str(sorted(Path(d["videos"]).rglob("*.MP4"))[0])  # a whole video of several segments
    (row,) = run_json(capsys, video, "--model", str(ckpt), "--top-k", "3", "--test-clips", "1")
    assert row["verb_top_names"] == [labels["verb"][str(i)] for i in row["verb_top_ids"]]
    assert row["noun_top_names"] == [labels["noun"][str(i)] for i in row["noun_top_ids"]]
    # the best action is the best verb with the best noun; names are "<verb> <noun>"
    assert (row["action_top_verb_ids"][0], row["action_top_noun_ids"][0]) == (row["verb_top_ids"][0],
                                                                              row["noun_top_ids"][0])
    assert row["action_top_names"][0] == f"{row['verb_top_names'][0]} {row['noun_top_names'][0]}"
    assert row["action_top_probs"][0] == pytest.approx(row["verb_top_probs"][0] * row["noun_top_probs"][0], rel=1e-5)
    assert predict_main([video, "--model", str(ckpt), "--test-clips", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2:4] == ["  verb", table[3]] and "  noun" in table and "  action" in table
    outputs = [c.name for c in signature_for(None, ("verb", "noun")).outputs.inputs]
    assert outputs[1:4] == ["verb_top_ids", "verb_top_names", "verb_top_probs"] and "action_top_names" in outputs


def test_refused_credentials_are_one_line_and_exit_2(videos, capsys, monkeypatch):
    """A tracking server that answers 401, as MLflow's basic-auth app does for a wrong password."""
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"error_code": "UNAUTHENTICATED", "message": "wrong password"}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 5298), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5298")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        assert predict_main([videos[0], "--model", URI]) == 2
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"cast-predict: error: --model {URI}: ") and "MLFLOW_TRACKING_PASSWORD" in err
