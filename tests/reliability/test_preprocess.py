"""Preprocessing under hostile input, changed input and concurrency (issue 11).

Every per-input failure is a reject with its reason; a bad annotation or flag is exit 2 naming file,
row and field before Ray starts; a rerun converges on the current input; the same input gives the
same bytes; one writer per output; kill -9 loses and duplicates nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from pipelines.datasets import AnnotationError, read_dataset
from pipelines.lease import LEASE_DIR, LeaseHeld, OutputLease
from pipelines.manifest import read_manifest, read_rejects
from pipelines.preprocess_job import PreprocessConfig, run_preprocess
from pipelines.schema import MAX_KEY_LEN
from tests.support.hostile import huge_duration, ray_address, stopped
from tests.support.pipelines_data import make_dataset
from workflows.preprocess import main as preprocess_main

REPO = Path(__file__).resolve().parents[2]


LONG_ID = "L" * 120  # an SSV2 id whose key would not fit a ustar member name


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    """A synthetic SSV2 train split plus, beside its good videos, one of each hostile input."""
    d = make_dataset("ssv2", tmp_path_factory.mktemp("hostile"))
    videos, ann = Path(d["videos"]), Path(d["annotations"])
    entries = json.loads((ann / "train.json").read_text())
    template = entries[0]["template"]
    good = next(videos.glob("*.webm")).read_bytes()
    (videos / "dirvid.webm").mkdir()
    os.mkfifo(videos / "fifovid.webm")
    os.symlink("loopvid.webm", videos / "loopvid.webm")
    (videos / "hugedur.webm").write_bytes(huge_duration(good))
    (videos / f"{LONG_ID}.webm").write_bytes(good)
    (videos / "dot.ted.webm").write_bytes(good)
    bad = {"dirvid": "not_a_file", "fifovid": "not_a_file", "loopvid": "unreadable", "hugedur": "bad_metadata",
           "late": "missing"}
    extra = [{"id": i, "template": template, "label": "x", "placeholders": []}
             for i in [*bad, LONG_ID, "dot.ted"]]
    (ann / "train.json").write_text(json.dumps(entries + extra))
    return d | {"bad": bad, "good_ids": {str(e["id"]) for e in entries} | {LONG_ID, "dot.ted"}}


def config(d: dict, out, **kw) -> PreprocessConfig:
    return PreprocessConfig(dataset="ssv2", videos=d["videos"], annotations=d["annotations"], split="train",
                            out=str(out), short_side=40, max_samples_per_shard=5, **kw)


def tar_ids(out: Path) -> list[str]:
    """Source ids of every sample in every tar of ``out`` (duplicates kept)."""
    ids = []
    for t in sorted(out.glob("train-*.tar")):
        with tarfile.open(t) as tar:
            for m in tar.getmembers():
                assert len(m.name.encode()) <= 99 and m.mtime == 0 and m.uid == 0
                if m.name.endswith(".json"):
                    ids.append(json.loads(tar.extractfile(m).read())["source_id"])
    return ids


def check_complete(out: Path, expected_good: set[str], expected_bad: dict[str, str]) -> None:
    """0 lost, 0 duplicated: tars, manifest and rejects hold exactly the expected inputs, each once."""
    ids = tar_ids(out)
    assert len(ids) == len(set(ids)) and set(ids) == expected_good
    m = read_manifest(str(out), "train").to_pandas()
    assert sorted(m["source_id"]) == sorted(ids) and m["key"].is_unique
    r = read_rejects(str(out), "train").to_pandas()
    assert dict(zip(r["source_id"], r["reason"])) == expected_bad and r["source_id"].is_unique


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("train-*.*"))}


# -- no Ray needed: annotations and flags fail first, naming file, row and field -----------------------
def _k400_with(tmp_path: Path, **row) -> str:
    path = tmp_path / "train.csv"
    base = {"label": "jumping", "youtube_id": "abc", "time_start": "0", "time_end": "10", "split": "train"}
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(base))
        w.writeheader()
        w.writerow(base | {"youtube_id": "ok"})
        w.writerow(base | row)
    return str(path)


@pytest.mark.parametrize("row, field", [({"time_start": "abc"}, "time_start"), ({"time_end": "nan"}, "time_end"),
                                        ({"time_end": "inf"}, "time_end"), ({"label": ""}, "label"),
                                        ({"time_end": "0"}, "time_end"), ({"youtube_id": "../x"}, "youtube_id")])
def test_k400_annotation_errors_name_file_row_and_field(tmp_path, row, field):
    path = _k400_with(tmp_path, **row)
    with pytest.raises(AnnotationError) as err:
        read_dataset("k400", str(tmp_path), path, "train")
    assert str(err.value).startswith(f"{path}: line 3, field '{field}'")


def test_ssv2_and_ek100_annotation_errors(tmp_path, hostile):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "labels.json").write_text(json.dumps({"a": "0", "b": "0"}))
    with pytest.raises(AnnotationError, match="templates 'a' and 'b' share class id 0"):
        read_dataset("ssv2", str(tmp_path), str(labels), "train")
    (labels / "labels.json").write_text(json.dumps({"a": "0", "b": "1"}))
    for entries, match in ((5, "expected a list of entries"),
                           ([{"id": 1, "template": "a"}, {"id": 2}], "entry 1, field 'template': missing"),
                           ([{"id": 1, "template": "c"}], "entry 0, field 'template': 'c'")):
        (labels / "train.json").write_text(json.dumps(entries))
        with pytest.raises(AnnotationError, match=match):
            read_dataset("ssv2", str(tmp_path), str(labels), "train")
    ek = tmp_path / "EPIC_100_train.csv"
    cols = ["narration_id", "participant_id", "video_id", "start_frame", "stop_frame", "verb", "verb_class",
            "noun", "noun_class"]
    for bad, field in (({"start_frame": "-50"}, "start_frame"), ({"start_frame": "x"}, "start_frame"),
                       ({"stop_frame": "5"}, "stop_frame"), ({"verb_class": "-1"}, "verb_class")):
        row = {"narration_id": "P01_01_0", "participant_id": "P01", "video_id": "P01_01", "start_frame": "10",
               "stop_frame": "40", "verb": "take", "verb_class": "0", "noun": "cup", "noun_class": "1"} | bad
        with open(ek, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerow(row)
        with pytest.raises(AnnotationError, match=f"line 2, field '{field}'"):
            read_dataset("ek100", str(tmp_path), str(ek), "train")


@pytest.mark.parametrize("flags, message", [(["--max-fps", "-5"], "max_fps must be > 0"),
                                            (["--mjpeg-q", "0"], "mjpeg_q must be in 2..31"),
                                            (["--codec", "vp9", "--crf", "99"], "crf for vp9 must be in 0..63"),
                                            (["--retry-rejects", "nope"], "unknown reasons")])
def test_bad_flags_and_annotations_exit_2_before_ray(hostile, tmp_path, capsys, flags, message):
    import ray

    args = ["--dataset", "ssv2", "--videos", hostile["videos"], "--annotations", hostile["annotations"],
            "--split", "train", "--out", str(tmp_path / "out")]
    assert preprocess_main(args + flags) == 2
    assert message in capsys.readouterr().err and not ray.is_initialized()
    assert preprocess_main(args[:-4] + ["--split", "nosuch", "--out", str(tmp_path / "o2")]) == 2
    assert "nosuch.json" in capsys.readouterr().err and not ray.is_initialized()


# -- with Ray -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def first_run(hostile, tmp_path_factory, local_ray):
    out = tmp_path_factory.mktemp("out")
    result = run_preprocess(config(hostile, out))
    return out, result


@pytest.mark.ray
def test_every_hostile_input_is_a_reject_and_every_good_one_a_sample(hostile, first_run):
    out, result = first_run
    check_complete(out, hostile["good_ids"], hostile["bad"])
    keys = read_manifest(str(out)).to_pandas().set_index("source_id")["key"]
    assert len(keys[LONG_ID]) <= MAX_KEY_LEN and "." not in keys["dot.ted"]
    assert result.rejected == len(hostile["bad"])
    assert not list((out / LEASE_DIR).iterdir())  # the lease is released


@pytest.mark.ray
def test_same_input_gives_byte_identical_shards(hostile, first_run, tmp_path):
    out, _ = first_run
    run_preprocess(config(hostile, tmp_path))
    assert digests(tmp_path) == digests(out) and digests(out)


@pytest.mark.ray
def test_rerun_converges_on_changed_input(hostile, first_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    ann = Path(hostile["annotations"])
    original = (ann / "train.json").read_text()
    entries = json.loads(original)
    names = json.loads((ann / "labels.json").read_text())
    gone = str(entries[0]["id"])
    relabelled = entries[1]
    other = next(t for t in names if t != relabelled["template"].replace("[", "").replace("]", ""))
    late = Path(hostile["videos"]) / "late.webm"
    try:
        # entries[0] removed, entries[1] relabelled, "late" (missing so far) arrives
        (ann / "train.json").write_text(json.dumps([dict(relabelled, template=other)] + entries[2:]))
        late.write_bytes(next(Path(hostile["videos"]).glob("[0-9]*.webm")).read_bytes())
        result = run_preprocess(config(hostile, out))
        expected_good = (hostile["good_ids"] - {gone}) | {"late"}
        check_complete(out, expected_good, {k: v for k, v in hostile["bad"].items() if k != "late"})
        m = read_manifest(str(out), "train").to_pandas().set_index("source_id")
        assert m.loc[str(relabelled["id"]), "label"] == int(names[other])
        assert (result.removed, result.changed) == (1, 2) and result.rewritten
        again = run_preprocess(config(hostile, out))  # converged: nothing left to do
        assert (again.written, again.rejected, again.removed, again.changed) == (0, 0, 0, 0)
    finally:
        (ann / "train.json").write_text(original)
        late.unlink(missing_ok=True)


@pytest.mark.ray
def test_retry_rejects_after_a_wrong_flag(hostile, first_run, tmp_path):
    """Rejects of a reason given to --retry-rejects are tried again; others stay rejected, untouched."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    result = run_preprocess(config(hostile, out, retry_rejects=("bad_metadata",)))
    assert result.retried == 1 and result.reject_reasons == {"bad_metadata": 1}
    check_complete(out, hostile["good_ids"], hostile["bad"])


def test_retry_rejects_defaults_to_missing_and_none_turns_it_off(hostile, tmp_path):
    from workflows.preprocess import command_line, config_of

    args = ["--dataset", "ssv2", "--videos", hostile["videos"], "--annotations", hostile["annotations"],
            "--split", "train", "--out", str(tmp_path)]
    assert config_of(command_line().parse(args)).retry == {"missing"} == config(hostile, tmp_path).retry
    assert config_of(command_line().parse(args + ["--retry-rejects", "none"])).retry == frozenset()
    both = config_of(command_line().parse(args + ["--retry-rejects", "missing,truncated"]))
    assert both.retry == {"missing", "truncated"}


@pytest.mark.ray
def test_a_missing_video_that_arrives_is_retried_by_default_even_without_fingerprints(hostile, first_run,
                                                                                     tmp_path):
    """Outputs written before fingerprints existed cannot tell that a file arrived: the default retry of
    ``missing`` still picks it up once the file exists; ``--retry-rejects none`` leaves it rejected."""
    import shutil

    import pyarrow.parquet as pq

    from pipelines.reconcile import FINGERPRINT_COLUMN

    late = Path(hostile["videos"]) / "late.webm"
    try:
        late.write_bytes(next(Path(hostile["videos"]).glob("[0-9]*.webm")).read_bytes())
        for retry, expected in (((), {}), (("missing",), {"late"})):
            out = tmp_path / f"retry-{len(retry)}"
            shutil.copytree(first_run[0], out)
            for frag in out.glob("_parts/*.parquet"):  # as written before fingerprints existed
                t = pq.read_table(frag)
                if FINGERPRINT_COLUMN in t.column_names:
                    pq.write_table(t.drop_columns([FINGERPRINT_COLUMN]), frag)
            result = run_preprocess(config(hostile, out, retry_rejects=retry))
            assert result.retried == len(expected) and result.written == len(expected)
            bad = {k: v for k, v in hostile["bad"].items() if k not in expected}
            check_complete(out, hostile["good_ids"] | set(expected), bad)
    finally:
        late.unlink(missing_ok=True)


def test_a_live_lease_refuses_a_second_writer_and_a_dead_one_is_recovered(tmp_path):
    holder = OutputLease(str(tmp_path), "job A").acquire()
    try:
        with pytest.raises(LeaseHeld, match=r"in use by job A \(host .*pid"):
            OutputLease(str(tmp_path), "job B").acquire()
    finally:
        holder.release()
    # a holder killed with -9 leaves its lease file: the next job recovers it and says so
    code = ("import time; from pipelines.lease import OutputLease; "
            "OutputLease(%r, 'victim').acquire(); print('held', flush=True); time.sleep(60)" % str(tmp_path))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    with pytest.raises(LeaseHeld, match="victim"):
        OutputLease(str(tmp_path), "job C").acquire()
    p.send_signal(signal.SIGKILL)
    p.wait()
    said = []
    OutputLease(str(tmp_path), "job C", log=said.append).acquire().release()
    assert "recovered the lease of a dead job, victim" in said[0] and "is gone" in said[0]


def _cli(d: dict, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "workflows" / "preprocess.py"), "--dataset", "ssv2", "--videos", d["videos"],
            "--annotations", d["annotations"], "--split", "train", "--out", str(out), "--short-side", "40",
            "--max-samples-per-shard", "2", "--progress-every", "0", *extra]


def rerun_recovers_and_completes(hostile: dict, out: Path, env: dict) -> None:
    """The CLI again into ``out`` after a kill -9: it recovers the dead job's lease and completes the
    output, 0 lost, 0 duplicated."""
    rerun = subprocess.run(_cli(hostile, out), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "recovered the lease of a dead job" in rerun.stderr
    check_complete(out, hostile["good_ids"], hostile["bad"])


@pytest.mark.ray
@pytest.mark.slow
def test_kill_9_and_a_concurrent_second_job_lose_and_duplicate_nothing(hostile, tmp_path, local_ray):
    """Job 1 is killed with -9 (its whole process group) after its first commit;
    job 2, started while job 1 runs, exits 2 naming the holder; job 3 recovers the lease and finishes."""
    # The job joins this module's Ray (no start-up of its own); kill -9 of its process group kills the
    # driver, and Ray ends the tasks and actors of a dead driver.
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ADDRESS=ray_address())
    job1 = subprocess.Popen(_cli(hostile, tmp_path), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list((tmp_path / "_parts").glob("train-0*.parquet")) and time.time() < deadline:
            time.sleep(0.02)
        # Frozen mid-job: on a fast machine job 1 would otherwise finish while job 2 is still importing.
        # A stopped process is alive, so its lease stays live (its heartbeat is far inside the TTL).
        os.killpg(job1.pid, signal.SIGSTOP)
        committed = list((tmp_path / "_parts").glob("train-0*.parquet"))
        assert committed, "job 1 committed nothing in 120 s"
        assert job1.poll() is None and not (tmp_path / "manifest.parquet").exists(), "job 1 finished before the freeze"
        job2 = subprocess.run(_cli(hostile, tmp_path), env=env, capture_output=True, text=True, timeout=120)
        assert job2.returncode == 2 and "is in use by preprocess train" in job2.stderr
    finally:
        os.killpg(job1.pid, signal.SIGKILL)
        job1.wait()
    rerun_recovers_and_completes(hostile, tmp_path, env)  # job 3


# A driver that runs the job as the CLI does and stops itself (SIGSTOP) when its last shard is committed:
# the manifest follows within milliseconds, a window that watching files from outside cannot hit.
_STOP_AFTER_LAST_COMMIT = """
import os, signal
import ray
from pipelines.preprocess_job import PreprocessConfig, run_preprocess
ray.init(address={address!r}, log_to_driver=False)
commits = []
def on_commit(shard):
    commits.append(shard)
    if len(commits) == {shards}:
        os.kill(os.getpid(), signal.SIGSTOP)
run_preprocess(PreprocessConfig(**{config!r}), on_commit=on_commit)
"""


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("point", ["lease_taken", "all_shards_committed"])
def test_kill_9_before_the_first_commit_or_before_the_manifest_loses_and_duplicates_nothing(hostile, tmp_path,
                                                                                          local_ray, point):
    """kill -9 of the job's process group (1) once it holds the lease, before Ray Data has committed
    anything, (2) after its last shard is committed, before manifest.parquet; the rerun recovers the
    lease and completes the output."""
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ADDRESS=ray_address())
    markers = lambda: list((tmp_path / "_parts").glob("train-0*.parquet"))  # noqa: E731
    shards = -(-len(hostile["good_ids"]) // 2)
    if point == "lease_taken":
        cmd = _cli(hostile, tmp_path)
    else:
        cfg = {"dataset": "ssv2", "videos": hostile["videos"], "annotations": hostile["annotations"],
               "split": "train", "out": str(tmp_path), "short_side": 40, "max_samples_per_shard": 2,
               "progress_every": 0}
        cmd = [sys.executable, "-c", _STOP_AFTER_LAST_COMMIT.format(address=ray_address(),
                                                                    shards=shards, config=cfg)]
    job = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        if point == "lease_taken":
            while not list((tmp_path / LEASE_DIR).glob("*.json")) and time.time() < deadline and job.poll() is None:
                time.sleep(0.01)
            os.killpg(job.pid, signal.SIGSTOP)  # Ray Data needs seconds more before its first commit
            assert job.poll() is None and list((tmp_path / LEASE_DIR).glob("*.json")), "no lease in 180 s"
            assert not markers(), "a shard was committed before the freeze"
        else:
            while not stopped(job.pid) and time.time() < deadline and job.poll() is None:
                time.sleep(0.05)
            assert job.poll() is None and stopped(job.pid), "the job did not reach its last commit"
            assert len(markers()) == shards and not (tmp_path / "manifest.parquet").exists()
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    rerun_recovers_and_completes(hostile, tmp_path, env)


@pytest.fixture
def s3_uri(monkeypatch):
    """An S3 API (moto) for the object-store side of the lease: only PUT, DELETE and LIST are used."""
    from moto.server import ThreadedMotoServer
    import pyarrow.fs as pafs

    for key, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    uri = f"s3://out/job?endpoint_override=http://{host}:{port}&scheme=http&region=us-east-1&allow_bucket_creation=true"
    pafs.FileSystem.from_uri(uri)[0].create_dir("out")
    yield uri
    server.stop()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_racing_writers_never_hold_one_output_together(where, tmp_path, request):
    """Four writers try to take the lease at once, again and again: never two at a time, and each
    attempt either holds it or is told who does."""
    import threading

    uri = str(tmp_path) if where == "local" else request.getfixturevalue("s3_uri")
    inside, most, wins, refusals = [0], [0], [0], [0]
    lock = threading.Lock()

    def writer(n: int) -> None:
        for _ in range(6):
            try:
                lease = OutputLease(uri, f"writer {n}").acquire()
            except LeaseHeld:
                with lock:
                    refusals[0] += 1
                continue
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                wins[0] += 1
            time.sleep(0.02)
            with lock:
                inside[0] -= 1
            lease.release()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and wins[0] >= 1 and wins[0] + refusals[0] == 24


def test_an_unforeseen_error_is_a_reject_with_its_type_not_a_crash(hostile, monkeypatch):
    """A decoder bug nobody foresaw (simulated: no real input triggers one we know of) stops one input."""
    import pipelines.preprocess_job as pp
    from pipelines.encode import EncodeConfig

    def broken(*args, **kwargs):
        raise KeyError("bug in a decoder")

    monkeypatch.setattr(pp, "encode_clips", broken)
    row = read_dataset("ssv2", hostile["videos"], hostile["annotations"], "train").rows[0]
    work = pp._Work(40, None, EncodeConfig(codec="mjpeg"), "cpu", 2, ("label",))
    out = pp.process_row(row.to_record(), work)
    assert out["reason"] == "unexpected_error" and out["detail"] == "KeyError: 'bug in a decoder'"
