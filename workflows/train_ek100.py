"""Fine-tune CAST on ek100 (recipe: configs/ek100.yaml). See workflows/training/launch.py.

    python workflows/train_ek100.py --shards OUT --val-shards OUT --preset tiny --num-workers 2
    ray job submit --working-dir . -- python workflows/train_ek100.py --shards ... --num-workers 8
"""

import sys

from workflows.training import launch


def main(argv: list[str] | None = None) -> int:
    """The ``cast-train-ek100`` command."""
    return launch.main("ek100", argv)


if __name__ == "__main__":
    sys.exit(main())
