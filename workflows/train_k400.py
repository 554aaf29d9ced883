"""Fine-tune CAST on k400 (recipe: configs/k400.yaml). See workflows/training/launch.py.

    python workflows/train_k400.py --shards OUT --val-shards OUT --preset tiny --num-workers 2
    ray job submit --working-dir . -- python workflows/train_k400.py --shards ... --num-workers 8
"""

import sys

from workflows.training import launch


def main(argv: list[str] | None = None) -> int:
    """The ``cast-train-k400`` command."""
    return launch.main("k400", argv)


if __name__ == "__main__":
    sys.exit(main())
