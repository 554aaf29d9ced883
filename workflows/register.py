"""Register a checkpoint in the MLflow Model Registry so that ``cast-predict``, ``cast-serve`` and
``cast-batch-infer`` take it: the paper's released ``.pth`` or a checkpoint folder of ours.

    cast-register cast_ssv2.pth --dataset ssv2 --labels labels.json
    cast-register cast_k400.pth --dataset k400 --labels kinetics400/train.csv
    cast-register cast_ek100.pth --dataset ek100 --labels EPIC_100_train.csv
    cast-register path/to/our/checkpoint --dataset ssv2
    cast-register models:/cast-ssv2/3 --dataset ssv2      # again, e.g. a version logged with older code

The class names of a ``.pth`` come from the dataset's own label file, in the order the paper's code
numbers its head (``workflows.inference.released``); a folder of ours keeps its own label map. The
version gets ``candidate``, and ``champion`` when the name has none yet (``--champion``: always). A
checkpoint or label file that does not fit is one line and exit 2, before anything is registered.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from workflows.cli.common import user_error
from workflows.cli.flags import CommandLine, Parsed
from workflows.inference.config import RegisterConfig

EXPERIMENT = "cast-register"


def command_line() -> CommandLine:
    return CommandLine(RegisterConfig, "cast-register", __file__, description=__doc__)


def main(argv: list[str] | None = None) -> int:
    return command_line().run(argv, register)


def register(parsed: Parsed) -> int:
    """The job: the checkpoint made a folder of ours (label map, contract), then registered in its own run."""
    cfg: RegisterConfig = parsed.config
    from cast_model import CheckpointError
    from cast_model.convert import ConversionError
    from pipelines.datasets import AnnotationError
    from workflows.inference.config import InferConfigError
    from workflows.inference.model import resolve_model
    from workflows.inference.released import prepare_release
    from workflows.tracking import registry
    from workflows.tracking import store as tracking
    from workflows.tracking.lineage import path_sha256

    name = cfg.registered_name
    with tempfile.TemporaryDirectory(prefix="cast-register-") as tmp:
        try:
            tracking.preflight()
            # A registered model: its checkpoint artifact (the weights and label map), not its logged code.
            source = resolve_model(cfg.checkpoint, Path(tmp) / "download").checkpoint if cfg.is_registered \
                else Path(cfg.checkpoint)
            folder = prepare_release(source, cfg.dataset, Path(tmp) / "checkpoint", cfg.preset, cfg.labels)
        except (CheckpointError, ConversionError, AnnotationError, InferConfigError, OSError,
                tracking.TrackingUnavailable) as e:
            return user_error(parsed.prog, " ".join(str(e).split()))
        origin = cfg.checkpoint if cfg.is_registered else str(source.resolve())
        version_tags = {"cast.source": origin, "cast.source_sha256": path_sha256(source)}
        tags = {"cast.kind": "register", tracking.DATASET_TAG: cfg.dataset, **version_tags}
        with tracking.one_shot_run(EXPERIMENT, f"register {Path(origin).name}", tags) as (client, run_id):
            reg = registry.register(run_id, folder, name, None, tags=version_tags)
            if cfg.champion and not reg.champion:
                client.set_registered_model_alias(name, registry.CHAMPION, reg.version)
    aliases = "candidate, champion" if (reg.champion or cfg.champion) else "candidate"
    print(f"{parsed.prog}: {cfg.checkpoint} -> models:/{name}/{reg.version} ({aliases})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
