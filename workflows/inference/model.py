"""``--model`` -> our safetensors checkpoint on local disk, with the model's registry name and version.

Accepted: ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``models:/<name>/latest``, any other
MLflow model URI (``runs:/<run>/model``, ``s3://...``), or a local checkpoint folder (``cast.json`` +
``model.safetensors``). MLflow URIs are downloaded with ``mlflow.artifacts.download_artifacts``; the
checkpoint is the pyfunc model's ``checkpoint`` artifact (see ``workflows.inference.pyfunc``) or any folder of
the download holding ``cast.json``. Weights are read with safetensors only, never unpickled.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cast_model import CASTConfig, CheckpointError, read_checkpoint_meta, verify_checkpoint
from cast_model.checkpoint import META_FILE, WEIGHTS_FILE
from cast_model.vocab import CONTRACT_KEYS, DATASETS, SAMPLINGS

from .config import InferConfigError

# The name of the checkpoint folder among a logged pyfunc model's artifacts (``workflows.inference.pyfunc``).
CHECKPOINT_ARTIFACT = "checkpoint"
_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")
_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+|latest)/?$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``--model``: where its checkpoint lies and what it is."""

    uri: str  # as given
    checkpoint: Path  # local folder with cast.json + model.safetensors
    config: CASTConfig
    labels: dict[str, dict[str, str]]  # {head: {class_id: name}}
    name: str  # registered model name; the folder name for a local checkpoint
    version: str  # registry version; the run id for runs:/ URIs; "local" for a folder
    extra: dict[str, Any]  # the checkpoint's ``extra``: vocab.CONTRACT_KEYS (checked), run id, val_top1
    model_id: str | None = None  # MLflow's logged-model id of a registered version (metrics link to it)

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.labels)

    @property
    def dataset(self) -> str:
        """The dataset the model was trained on (the checkpoint's contract)."""
        return self.extra["dataset"]

    def weights_bytes(self) -> tuple[bytes, bytes]:
        """(cast.json, model.safetensors) as bytes: shipped to model replicas through the object store,
        so replicas on other nodes need neither the driver's disk nor the tracking server."""
        return (self.checkpoint / META_FILE).read_bytes(), (self.checkpoint / WEIGHTS_FILE).read_bytes()


class ModelLookupError(InferConfigError):
    """``--model`` names no usable model: unknown name, alias or version, an unreachable tracking server,
    refused credentials, or a download without a CAST checkpoint. One line, for an exit code 2."""


def resolve_model(uri: str, download_dir: str | Path | None = None) -> ModelSource:
    """Resolve and fetch ``uri`` (see the module doc). Every way it can fail is a :class:`ModelLookupError`
    with a one-line message."""
    from mlflow.exceptions import MlflowException

    try:
        return _resolve(uri, download_dir)
    except MlflowException as e:
        raise ModelLookupError(f"--model {uri}: {_one_line(e.message)}{_hint(e)}") from e
    except (CheckpointError, OSError) as e:
        text = _one_line(str(e))  # a checkpoint error names the model already (verify_checkpoint's name=)
        raise ModelLookupError(text if text.startswith(uri) else f"--model {uri}: {text}") from e


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _hint(e) -> str:
    from ..tracking import store as tracking

    code = getattr(e, "error_code", "")
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return " (check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN)"
    if code == "RESOURCE_DOES_NOT_EXIST":
        return f" (registry: {re.sub(r'//[^/@]*@', '//', tracking.tracking_uri())})"  # no credentials
    return ""


def _resolve(uri: str, download_dir: str | Path | None) -> ModelSource:
    local = Path(uri)
    if ":/" not in uri and local.is_dir():
        return _from_folder(uri, local, local.resolve().name, "local")
    name, version = registry_identity(uri)
    dst = Path(download_dir) if download_dir is not None else Path(tempfile.mkdtemp(prefix="cast-model-"))
    import mlflow.artifacts

    from ..tracking import store as tracking

    store = tracking.tracking_uri()  # the project's tracking/registry URI, for models:/ and runs:/ alike
    root = Path(mlflow.artifacts.download_artifacts(artifact_uri=_artifact_location(uri, name, version),
                                                    dst_path=str(dst), tracking_uri=store, registry_uri=store))
    source = _from_folder(uri, find_checkpoint(root), name, version)
    if uri.startswith("models:/") and version.isdigit():
        registered = tracking.client().get_model_version(name, version)
        source = dataclasses.replace(source, model_id=version_model_id(registered))
    return source


def _artifact_location(uri: str, name: str, version: str) -> str:
    """Where the files of a ``models:/`` URI lie, looked up in the project's store. MLflow's own download
    of a ``models:/`` URI asks the process-wide registry (``mlflow.get_registry_uri()``) whatever registry
    URI it is given, so without ``MLFLOW_TRACKING_URI`` in the environment it looked for the model in a
    ``mlflow.db`` in the working directory. Other URIs (``runs:/``, storage URIs) are returned as they are."""
    from ..tracking import store as tracking

    if uri.startswith("models:/") and version.isdigit():
        return tracking.client().get_model_version_download_uri(name, version)
    m = _LOGGED_MODEL.match(uri)
    if m:
        return tracking.client().get_logged_model(m["id"]).artifact_location
    return uri


def registry_identity(uri: str) -> tuple[str, str]:
    """(model name, version) of an MLflow model URI; aliases and ``latest`` are looked up in the
    registry. ``runs:/<run>/...`` gives (``runs:/<run>/...``, run id); other URIs give (uri, "")."""
    from ..tracking import store as tracking

    m = _ALIAS.match(uri)
    if m:
        mv = tracking.client().get_model_version_by_alias(m["name"], m["alias"])
        return m["name"], str(mv.version)
    m = _VERSION.match(uri)
    if m:
        if m["version"] != "latest":
            return m["name"], m["version"]
        versions = tracking.client().search_model_versions(f"name = '{m['name']}'")
        if not versions:
            raise CheckpointError(f"registered model {m['name']!r} has no versions")
        return m["name"], str(max(int(v.version) for v in versions))
    if uri.startswith("runs:/"):
        return uri, uri[len("runs:/"):].split("/", 1)[0]
    return uri, ""


def find_checkpoint(root: Path) -> Path:
    """The checkpoint folder inside a downloaded MLflow model (or the download itself)."""
    if (root / META_FILE).is_file():
        return root
    mlmodel = root / "MLmodel"
    if mlmodel.is_file():
        flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
        artifacts = (flavors.get("python_function") or {}).get("artifacts") or {}
        entry = artifacts.get(CHECKPOINT_ARTIFACT)
        if entry and (root / entry["path"] / META_FILE).is_file():
            return root / entry["path"]
    found = sorted(p.parent for p in root.rglob(META_FILE))
    if len(found) != 1:
        raise CheckpointError(f"{root}: expected one CAST checkpoint ({META_FILE} + {WEIGHTS_FILE}) in the "
                              f"model's artifacts, found {len(found)}")
    return found[0]


_LOGGED_MODEL = re.compile(r"^models:/(?P<id>m-[0-9a-f]+)/?$")


def version_model_id(version) -> str | None:
    """The logged model behind a registry version: ``model_id`` where the store keeps it, else the
    version's source ``models:/m-<id>`` (the SQL registry store does not persist the field)."""
    if getattr(version, "model_id", None):
        return version.model_id
    m = _LOGGED_MODEL.match(version.source or "")
    return m["id"] if m else None


def model_from_folder(folder: Path, name: str | None = None, version: str = "local") -> ModelSource:
    """A checkpoint folder already on disk (a local ``--model``, or a served model's artifact)."""
    return _from_folder(str(folder), folder, name or folder.resolve().name, version)


def _from_folder(uri: str, folder: Path, name: str, version: str) -> ModelSource:
    meta = read_checkpoint_meta(folder)
    if meta.get("trainable_only"):
        raise CheckpointError(f"{folder} holds only the trainable weights; batch inference needs a full "
                              "checkpoint (the registry holds full ones)")
    if not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS_FILE} is missing")
    labels = meta.get("labels")
    if not labels:
        raise CheckpointError(f"{folder}: the checkpoint has no label map; predictions would have no names")
    # Truncated weights or weights that do not fit the config fail here, on the driver, naming the model
    # the user asked for (not a download folder), instead of inside a model replica after Ray started.
    verify_checkpoint(folder, name=uri if ":/" in uri else str(folder))
    check_contract(meta.get("extra") or {}, labels, folder)
    return ModelSource(uri, folder, CASTConfig.from_dict(meta["config"]), labels, name, version,
                       meta.get("extra") or {})


def check_contract(extra: dict[str, Any], labels: dict[str, dict[str, str]], folder: Path) -> None:
    """The checkpoint is the one contract between training and inference: ``extra`` must hold
    vocab.CONTRACT_KEYS (dataset, heads, evaluation views), as training writes them. A checkpoint without
    them is refused with the command that adds them; inference never guesses them from a name or a recipe."""
    missing = [k for k in CONTRACT_KEYS if extra.get(k) is None]
    if missing:
        raise CheckpointError(f"{folder}: the checkpoint does not record {', '.join(missing)} (cast.json's extra, "
                              f"written by training); add them with: cast-stamp-checkpoint {folder} --dataset "
                              f"<{'|'.join(DATASETS)}>")
    problems = []
    if extra["dataset"] not in DATASETS:
        problems.append(f"dataset {extra['dataset']!r} is not one of {DATASETS}")
    if set(extra["heads"]) != set(labels):
        problems.append(f"heads {list(extra['heads'])} differ from the label map's {list(labels)}")
    if extra["sampling"] not in SAMPLINGS:
        problems.append(f"sampling {extra['sampling']!r} is not one of {SAMPLINGS}")
    for key in ("sampling_rate", "test_clips", "test_crops"):
        if not isinstance(extra[key], int) or extra[key] < 1:
            problems.append(f"{key} must be a positive integer, got {extra[key]!r}")
    if problems:
        raise CheckpointError(f"{folder}: the checkpoint's contract is invalid: {'; '.join(problems)}")
