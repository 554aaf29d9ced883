"""`make reproduce` / `cast-reproduce`: the paper's ablation (CAST against each expert alone, their
ensemble, late fusion, no exchange, one direction only) on the synthetic motion and binding tasks,
as Ray Tune trials over Ray Train runs, under one MLflow parent run.

    python workflows/reproduce.py                     # the default profile (fits 30 min on 2 cores)
    python workflows/reproduce.py --full              # more seeds
    ray job submit --working-dir . -- python workflows/reproduce.py   # on a cluster (RAY_ADDRESS)

Prints the comparison table; exits 1 when CAST is not the best on the appearance-motion balance by more
than the seeds' spread (``--no-gate``: always 0 after a complete run), 2 on a wrong flag.
"""

from __future__ import annotations

import argparse
import sys
import time

from workflows.ablation.config import FULL, AblationConfig, AblationConfigError
from workflows.ablation.variants import NAMES


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def _names(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.split(",") if x)


# (field, type, help) of the flags that set one AblationConfig field each
FLAGS: tuple[tuple[str, type, str], ...] = (
    ("steps", int, "optimizer steps of every trained variant (one recipe)"),
    ("batch_size", int, "clips per step"),
    ("lr", float, "AdamW learning rate (warmup, then cosine decay)"),
    ("weight_decay", float, "AdamW weight decay (not on biases, norms, positions)"),
    ("eval_every", int, "steps between validation points of the learning curves"),
    ("videos_per_class", int, "training videos per class (validation gets a quarter)"),
    ("heldout_per_class", int, "test videos per class, rendered from another seed"),
    ("concurrent_trials", int, "trials run at once (one Ray Train worker each)"),
    ("cpus_per_trial", float, "CPUs of a trial's Train worker (its torch threads)"),
    ("attention_videos", int, "test videos whose attention maps CAST's runs show"),
    ("experts_dir", str, "expert cache folder (empty: data/experts)"),
    ("data_dir", str, "where each task's videos, shards and decoded clips are cached"),
    ("storage_path", str, "Ray Tune/Train run folders (a URI or a shared folder on a cluster)"),
    ("experiment", str, "MLflow experiment"),
    ("run_name", str, "parent run name (empty: ablation-<time>)"),
)


def parse(argv: list[str] | None = None) -> tuple[AblationConfig, int | None]:
    d = AblationConfig()
    p = argparse.ArgumentParser(prog="cast-reproduce", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--full", action="store_true", help=f"the full profile: {FULL}")
    p.add_argument("--tasks", type=_names, default=d.tasks, help="comma separated: motion, binding")
    p.add_argument("--variants", type=_names, default=d.variants, help=f"comma separated, of {', '.join(NAMES)}")
    p.add_argument("--seeds", type=_ints, default=None, help=f"comma separated (default {d.seeds}; --full {FULL['seeds']})")
    p.add_argument("--experts", choices=("project", "none"), default=d.experts,
                   help="project: the tiny experts pretrained here (made once); none: random frozen experts (smoke runs)")
    p.add_argument("--preset", default=d.preset, help="model geometry (the experts' preset)")
    for name, kind, text in FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(d, name), help=text)
    p.add_argument("--no-gate", action="store_true", help="exit 0 even when CAST does not lead")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (ignored on a cluster)")
    a = p.parse_args(argv)
    seeds = a.seeds if a.seeds is not None else (FULL["seeds"] if a.full else d.seeds)
    fields = {k: getattr(a, k) for k in ("tasks", "variants", "experts", "preset", *(f[0] for f in FLAGS))}
    return AblationConfig(seeds=seeds, gate=not a.no_gate, **fields), a.num_cpus


def main(argv: list[str] | None = None) -> int:
    from workflows.tracking import store as tracking
    from workflows.cli.common import user_error
    from workflows.cluster.ray_connect import connect_ray

    try:
        cfg, num_cpus = parse(argv)
        cfg.validate()
        tracking.preflight()
    except (AblationConfigError, tracking.TrackingUnavailable) as err:
        return user_error("cast-reproduce", err)
    import ray

    from workflows.ablation.run import run_ablation

    started = connect_ray(num_cpus, dashboard=True)  # the state API Ray Train's placement-group cleaner polls
    try:
        result = run_ablation(cfg, log=lambda m: print(f"[reproduce {time.strftime('%H:%M:%S')}] {m}", flush=True))
    finally:
        if started:
            ray.shutdown()
    print(result.markdown)
    for gate in result.gates:
        print(gate.line())
    print(f"[reproduce] {result.seconds:.0f}s; MLflow parent run {result.parent_run_id}; open the UI with\n    "
          f"{tracking.ui_command()}", flush=True)
    return 0 if result.passed or not cfg.gate else 1


if __name__ == "__main__":
    sys.exit(main())
