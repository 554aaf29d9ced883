"""Logging a trained checkpoint as an MLflow pyfunc model and moving the registry aliases.

``candidate`` always points at the newest version; ``champion`` moves to it only when its validation
top-1 (stored as the version tag ``val_top1``) beats the current champion's.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from ..inference.classify import views_for
from ..inference.model import CHECKPOINT_ARTIFACT, model_from_folder
from ..inference.pyfunc import VIEWS_CONFIG, input_example_for, signature_for
from . import store as tracking

CANDIDATE = "candidate"
CHAMPION = "champion"
VAL_TAG = "val_top1"
REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_CODE = REPO_ROOT / "workflows" / "inference" / "pyfunc_entry.py"
# The code MLflow ships with the model: the project's packages, whole (the pyfunc imports
# workflows.inference -> pipelines, cast_model). Whole packages, so a module that moves or is added
# travels without a list to keep. A model logged before a move carries the old paths: register it again.
CODE_PACKAGES = ("cast_model", "pipelines", "workflows")


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    model_uri: str
    val_top1: float
    champion: bool  # this version holds the champion alias now
    previous_champion: str | None  # the version that held it before (None: there was none)


def log_model(run_id: str, checkpoint_dir: str | Path, registered_model: str | None) -> mlflow.models.model.ModelInfo:
    """Log ``checkpoint_dir`` (cast_model format) into run ``run_id`` as pyfunc model ``model``."""
    source = model_from_folder(Path(checkpoint_dir), name=registered_model)
    tracking.use_store()  # mlflow.start_run and pyfunc.log_model below take their URIs from the process

    def log(code_paths: list[str]) -> mlflow.models.model.ModelInfo:
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(MODEL_CODE), code_paths=code_paths,
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_dir)}, signature=signature_for(source.config, source.heads),
            input_example=input_example_for(source.config), registered_model_name=registered_model,
            model_config={VIEWS_CONFIG: asdict(views_for(source))}, pip_requirements=_requirements())

    with tempfile.TemporaryDirectory() as tmp:
        code_paths = stage_code(Path(tmp))
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            return log(code_paths)
        # Open the run only for this call: a run left active would leak into whatever this process does next.
        with mlflow.start_run(run_id=run_id):
            return log(code_paths)


def stage_code(dst: Path) -> list[str]:
    """Copy the packages of :data:`CODE_PACKAGES` under ``dst``; the entries to pass as ``code_paths``
    (MLflow puts each one's parent on the served model's ``sys.path``)."""
    for package in CODE_PACKAGES:
        shutil.copytree(REPO_ROOT / package, dst / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return sorted(str(dst / package) for package in CODE_PACKAGES)


# Seven parameters: what is registered (run, checkpoint, name) and what is logged with it (val_top1,
# tags, metrics, step); the last three are optional keywords each caller sets on its own.
def register(run_id: str, checkpoint_dir: str | Path, name: str, val_top1: float,
             tags: dict[str, str] | None = None, metrics: Mapping[str, float] | None = None,
             step: int = 0) -> Registered:
    """Log, register as a new version of ``name``, tag it, point ``candidate`` at it and maybe ``champion``.
    ``val_top1`` and ``metrics`` (e.g. the final validation figures) are logged into the run at ``step``
    (the step they were measured at: no extra point in the run's history) attached to the logged model
    (its ``model_id``), so the model's page shows them."""
    info = log_model(run_id, checkpoint_dir, name)
    version = str(info.registered_model_version)
    client = tracking.client()
    now = int(time.time() * 1000)
    linked = {"val_top1": float(val_top1), **{k: float(v) for k, v in (metrics or {}).items()}}
    client.log_batch(run_id, metrics=[Metric(k, v, now, step, model_id=info.model_id) for k, v in linked.items()])
    for key, value in {VAL_TAG: repr(float(val_top1)), "run_id": run_id, **(tags or {})}.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_registered_model_alias(name, CANDIDATE, version)
    previous = champion_version(name)
    wins = previous is None or float(val_top1) > float(previous.tags.get(VAL_TAG, "-inf"))
    if wins:
        client.set_registered_model_alias(name, CHAMPION, version)
    return Registered(name, version, f"models:/{name}/{version}", float(val_top1), wins,
                      None if previous is None else str(previous.version))


def champion_version(name: str):
    try:
        return tracking.client().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _requirements() -> list[str]:
    """Pinned from this environment (MLflow's inference would scan the whole code path)."""
    from importlib.metadata import distributions, version

    packages = ["mlflow", "torch", "numpy", "safetensors", "timm", "av", "pyarrow", "pandas", "pillow", "PyYAML"]
    # DALI decodes VP9/MJPEG; its distribution name carries the CUDA variant installed here.
    packages += sorted({d.metadata["Name"] for d in distributions() if d.metadata["Name"].startswith("nvidia-dali")})
    return [f"{p}=={version(p)}" for p in packages]
