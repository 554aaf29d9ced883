"""Which paths every node of a Ray cluster can see, and the check that refuses the others.

On one machine every path is visible to every worker. On a cluster of several nodes a local path is one
node's disk, unless it lies on a mount all nodes share; those mounts are declared in ``CAST_SHARED_DIRS``
(``os.pathsep``-separated; infra/k8s sets ``/mnt/cluster_storage``, the local cluster stack its
``data/cluster/shared``). Object-store URIs (``s3://``, ``gs://``, ...) are visible everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

SHARED_DIRS_ENV = "CAST_SHARED_DIRS"


class ClusterPathError(ValueError):
    """A path or tracking URI that the nodes of this cluster cannot all see (one line, exit code 2)."""


def is_uri(path: str) -> bool:
    """An object-store or other remote URI (``file://`` is a local path)."""
    return "://" in path and not path.startswith("file://")


def shared_dirs() -> list[Path]:
    return [Path(d).resolve() for d in os.environ.get(SHARED_DIRS_ENV, "").split(os.pathsep) if d]


def on_shared_mount(path: str) -> bool:
    local = Path(path[len("file://"):] if path.startswith("file://") else path).resolve()
    return any(local == d or d in local.parents for d in shared_dirs())


def cluster_path_problems(paths: Mapping[str, str | None], nodes: int, *, local_only: tuple[str, ...] = (),
                          tracking_uri: str | None = None) -> list[str]:
    """One message per path that not every node of an ``nodes``-node cluster can see, each naming the
    flag and the fix. ``local_only`` flags are read by code that needs a file system path (the DALI
    loaders): a URI is refused there on any cluster."""
    problems = []
    where = f"CAST_SHARED_DIRS ({os.environ.get(SHARED_DIRS_ENV) or 'not set'})"
    for flag, path in paths.items():
        if not path:
            continue
        if is_uri(path):
            if flag in local_only:
                problems.append(f"{flag} {path}: the DALI loaders read local files, not URIs; copy the shards "
                                f"to a folder every node mounts and pass that folder")
            continue
        if nodes > 1 and not on_shared_mount(path):
            fix = ("a folder on a mount every node shares" if flag in local_only else
                   "an s3:// (or other pyarrow) URI, or a folder on a mount every node shares")
            problems.append(f"{flag} {path} is a local folder and this Ray cluster has {nodes} nodes: only one "
                            f"node would see it; pass {fix}, listed in {where}")
    if nodes > 1 and tracking_uri and tracking_uri.startswith("sqlite:"):
        problems.append(f"MLFLOW_TRACKING_URI {tracking_uri} is a file on one node and this Ray cluster has "
                        f"{nodes} nodes: use an MLflow tracking server (export MLFLOW_TRACKING_URI=http://...)")
    return problems


def alive_nodes() -> int:
    """Nodes of the connected Ray cluster that are alive (Ray must be initialised)."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))
