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

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

from cast_model.config import PRESETS
from cast_model.vocab import DATASETS
from workflows.cli.common import user_error

EXPERIMENT = "cast-register"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cast-register", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="the paper's released .pth, a checkpoint folder of ours (cast.json + model.safetensors), "
                        "or a registered model (models:/NAME/VERSION) to register again with the current code")
    p.add_argument("--dataset", required=True, choices=DATASETS, help="the dataset the checkpoint's head was trained on")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="the dataset's label file (ssv2: labels.json; k400: an annotation CSV; ek100: "
                        "EPIC_100_train.csv with the class CSVs beside it); needed for a .pth")
    p.add_argument("--preset", default="base", choices=sorted(PRESETS), help="the model preset of a .pth")
    p.add_argument("--name", default=None, help="registered model name (default: cast-<dataset>)")
    p.add_argument("--champion", action="store_true", help="move the champion alias to this version even if one exists")
    return p.parse_args(argv)


def sha256(path: Path) -> str:
    """The file's digest, or for a folder the digest of its files' names and digests (sorted)."""
    if path.is_dir():
        parts = [f"{p.relative_to(path)}:{sha256(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from cast_model import CheckpointError
    from cast_model.convert import ConversionError
    from pipelines.datasets import AnnotationError
    from workflows.tracking import registry
    from workflows.tracking import store as tracking
    from workflows.inference.config import InferConfigError
    from workflows.inference.model import resolve_model
    from workflows.inference.released import prepare_release

    name = a.name or f"cast-{a.dataset}"
    with tempfile.TemporaryDirectory(prefix="cast-register-") as tmp:
        try:
            tracking.preflight()
            # A registered model: its checkpoint artifact (the weights and label map), not its logged code.
            source = resolve_model(a.checkpoint, Path(tmp) / "download").checkpoint if ":/" in a.checkpoint \
                else Path(a.checkpoint)
            folder = prepare_release(source, a.dataset, Path(tmp) / "checkpoint", a.preset, a.labels)
        except (CheckpointError, ConversionError, AnnotationError, InferConfigError, OSError,
                tracking.TrackingUnavailable) as e:
            return user_error("cast-register", " ".join(str(e).split()))
        origin = a.checkpoint if ":/" in a.checkpoint else str(source.resolve())
        tags = {"cast.kind": "register", tracking.DATASET_TAG: a.dataset, "cast.source": origin,
                "cast.source_sha256": sha256(source)}
        with tracking.one_shot_run(EXPERIMENT, f"register {Path(origin).name}", tags) as (client, run_id):
            reg = registry.register(run_id, folder, name, None, tags={"cast.source": tags["cast.source"],
                                                                       "cast.source_sha256": tags["cast.source_sha256"]})
            if a.champion and not reg.champion:
                client.set_registered_model_alias(name, registry.CHAMPION, reg.version)
    aliases = "candidate, champion" if (reg.champion or a.champion) else "candidate"
    print(f"cast-register: {a.checkpoint} -> models:/{name}/{reg.version} ({aliases})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
