"""Fine-tune CAST on ssv2 (recipe: configs/ssv2.yaml). See workflows/training/launch.py.

    python workflows/train_ssv2.py --shards OUT --val-shards OUT --preset tiny --num-workers 2
    ray job submit --working-dir . -- python workflows/train_ssv2.py --shards ... --num-workers 8
"""

import os
import sys

if __package__ in (None, ""):  # run as a script (also under `ray job submit`): repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from workflows.training.launch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("ssv2"))
