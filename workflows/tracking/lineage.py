"""What made a run: the code version and the input data, recorded the way MLflow's UI shows them, so a
registered model (through its version's run) answers "which code and which data made me".

* **Code**: MLflow's source tags (``mlflow.source.name``, ``mlflow.source.type``,
  ``mlflow.source.git.commit``). The commit is ``CAST_GIT_COMMIT`` when set, else ``git rev-parse HEAD``
  of this code's checkout. ``ray job submit --working-dir .`` uploads the files without ``.git``, so the
  submitting side passes the commit along in that variable (``--runtime-env-json '{"env_vars":
  {"CAST_GIT_COMMIT": "<sha>"}}'``; the container image sets it at build time). Without either, no
  commit tag is written and :func:`source_tags` says why.
* **Weights**: every weight file a run starts from (its sha256, path and, for the project's own
  pretrained experts, the MLflow run that made it) as ``cast.lineage.<role>_*`` tags.
* **Data**: each input shard folder's manifest (``manifest.parquet``, the split's rows) as an MLflow
  dataset with MLflow's digest of its content, in context ``training``, ``validation`` or
  ``evaluation``; the same manifest gives the same digest, a changed one another.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

COMMIT_ENV = "CAST_GIT_COMMIT"
CODE_ROOT = Path(__file__).resolve().parents[2]
CONTEXT_TAG = "mlflow.data.context"  # MLflow's input tag for a dataset's role
PRETRAIN_RUN_KEY = "cast.pretrain_run_id"  # safetensors metadata written by workflows.experts


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_sha256(path: Path) -> str:
    """The sha256 of a file, or of a folder: of its files' relative names and digests, sorted."""
    if path.is_dir():
        parts = [f"{p.relative_to(path)}:{file_sha256(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return file_sha256(path)


def _pretrain_run(path: Path) -> str | None:
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get(PRETRAIN_RUN_KEY)


def weight_tags(files: Mapping[str, str | None]) -> dict[str, str]:
    """``cast.lineage.<role>_sha256`` / ``_path`` / ``_run_id`` tags for each role's weight file
    (``{"spatial": path, ...}``; a role without a file is left out)."""
    tags: dict[str, str] = {}
    for role, value in files.items():
        if not value:
            continue
        path, prefix = Path(value), f"cast.lineage.{role}"
        tags[f"{prefix}_path"] = str(path)
        tags[f"{prefix}_sha256"] = file_sha256(path)
        run = _pretrain_run(path)
        if run:
            tags[f"{prefix}_run_id"] = run
    return tags


def code_version(root: Path = CODE_ROOT) -> tuple[str | None, str]:
    """(commit, where it came from): ``CAST_GIT_COMMIT``, the checkout at ``root``, or (None, why not)."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV].strip(), f"${COMMIT_ENV}"
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"git could not run ({e}); set {COMMIT_ENV}"
    if out.returncode != 0:
        return None, f"{root} is not a git checkout (a Ray job's uploaded working dir?); set {COMMIT_ENV}"
    return out.stdout.strip(), "git"


def source_tags(entry_point: str, root: Path = CODE_ROOT) -> tuple[dict[str, str], str]:
    """MLflow's source tags for a run of ``entry_point`` (e.g. ``workflows/train_ssv2.py``), and a
    one-line note of where the commit came from (or why there is none), for the job's log."""
    from mlflow.entities import SourceType
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

    tags = {MLFLOW_SOURCE_NAME: entry_point, MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.JOB)}
    commit, origin = code_version(root)
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
        return tags, f"code version {commit[:12]} (from {origin})"
    return tags, f"code version unknown: {origin}"


def manifest_dataset(folder: str, split: str | None):
    """The rows of ``folder``'s manifest (one split, or all with ``None``) as an MLflow dataset: name
    ``<folder name>/<split>``, source the manifest file, MLflow's digest of the rows."""
    import mlflow.data

    from pipelines.manifest import MANIFEST_FILE, read_manifest

    table = read_manifest(folder, split).to_pandas()
    name = f"{Path(folder.rstrip('/')).name}/{split or 'all'}"
    return mlflow.data.from_pandas(table, source=f"{folder.rstrip('/')}/{MANIFEST_FILE}", name=name)


def has_manifest(folder: str) -> bool:
    """``folder`` (a local path or URI) is a shard folder with its manifest."""
    from pipelines.manifest import MANIFEST_FILE
    from pipelines.shards import resolve_out

    try:
        fs, base = resolve_out(folder)
        return fs.get_file_info(f"{base}/{MANIFEST_FILE}").type.name == "File"
    except (OSError, ValueError):
        return False


def record(run_id: str, entry_point: str, datasets: Mapping[str, object], log=print) -> None:
    """Tag run ``run_id`` with its code version and log ``datasets`` ({context: MLflow dataset}) as its
    inputs. Called each time a job opens the run: a resumed run gets the code version it resumed with
    (the tags are overwritten); a dataset already logged in that context is not logged again."""
    from mlflow.entities import DatasetInput, InputTag

    from . import store

    client = store.client()
    tags, note = source_tags(entry_point)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    have = {(d.dataset.digest, t.value) for d in client.get_run(run_id).inputs.dataset_inputs
            for t in d.tags if t.key == CONTEXT_TAG}
    new = [DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(CONTEXT_TAG, context)])
           for context, ds in datasets.items() if (ds.digest, context) not in have]
    if new:
        client.log_inputs(run_id, datasets=new)
    log(f"[lineage] {note}; inputs " + ", ".join(f"{c} {ds.name} (digest {ds.digest})" for c, ds in datasets.items()))
