"""The paper's ablation (Tables 1 and 2) on this project's synthetic tasks, as one command.

``config`` (what to run), ``variants`` (the networks compared), ``task`` (a task's labels, oracles and
scores), ``data`` (shards made once, clips decoded once and held in memory), ``trial`` (one Ray Tune
trial: a Ray Train run of one variant and seed, logged as a nested MLflow run), ``attention_png`` (B-CAST's
attention maps as a picture), ``report`` (the comparison table, bar chart and gate), ``run`` (all of it,
under one parent MLflow run). The door is ``workflows/reproduce.py``.
"""
