"""The one way this project connects to Ray: join the cluster named by ``RAY_ADDRESS`` or start a local one.

``ray.init()`` with no address silently joins the newest cluster that ``ray start`` left on this machine
(Ray reads ``/tmp/ray/ray_current_cluster``), which would put a local job on somebody else's cluster and
make ``num_cpus`` an error. A local run therefore asks for ``address="local"`` explicitly.
"""

from __future__ import annotations

import os


def connect_ray(num_cpus: int | None = None, *, dashboard: bool = False, log_to_driver: bool = True) -> bool:
    """Connect this process to Ray; return True when this call started it (the caller then shuts it down).

    Inside ``ray job submit`` (or with ``RAY_ADDRESS`` exported) this joins that cluster and ignores
    ``num_cpus``: a cluster's size is the cluster's. Otherwise it starts a private local Ray with
    ``num_cpus`` CPUs. ``dashboard`` also serves the state API that Ray Train's placement-group cleaner
    polls, so training asks for it.
    """
    import ray

    if ray.is_initialized():
        return False
    address = cluster_address()
    if address:
        if num_cpus is not None:
            print(f"[ray] RAY_ADDRESS is set: joining {address}; "
                  f"--num-cpus {num_cpus} applies only to a local Ray and is ignored", flush=True)
        ray.init(address=address, log_to_driver=log_to_driver)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, log_to_driver=log_to_driver)
    ray.data.DataContext.get_current().enable_progress_bars = False  # our own progress lines instead
    return True


def local_cpus(num_cpus: int | None) -> int | None:
    """The CPUs of the local Ray that :func:`connect_ray` would start for ``num_cpus`` (given, else every
    CPU of this machine), or None when it joins a cluster (``RAY_ADDRESS`` set: the cluster's size is the
    cluster's, and an autoscaler may add nodes). For checks that must run before Ray starts: a local Ray
    too small for a job's actors is a deadlock, not a slow job."""
    if os.environ.get("RAY_ADDRESS"):
        return None
    # Ray counts the machine's CPUs, lowered to a cgroup quota: never more than os.cpu_count().
    return num_cpus if num_cpus is not None else (os.cpu_count() or 1)


def too_few_cpus(num_cpus: int | None, need: int | float, needs: str) -> str | None:
    """The one-line problem when the local Ray of ``num_cpus`` has fewer than ``need`` CPUs (``needs`` says
    what they are for), else None."""
    have = local_cpus(num_cpus)
    if have is None or have >= need:
        return None
    given = f"--num-cpus {num_cpus}" if num_cpus is not None else f"this machine's {have} CPUs"
    return (f"the job needs at least {need:g} CPUs on a local Ray ({needs}), {given} given: it would wait "
            f"forever")


def cluster_address() -> str | None:
    """The Ray cluster to join: ``RAY_ADDRESS`` (``host:port`` of the GCS, ``ray://``, ``auto``), or None.

    ``RAY_ADDRESS=http://...`` is the job API's address, which ``ray job submit`` wants and a driver
    cannot join; data/cluster/env.sh sets it, and beside it ``CAST_RAY_GCS_ADDRESS`` for a driver run
    directly on the cluster's machine. Inside a job Ray itself sets ``RAY_ADDRESS`` to the GCS address.
    """
    address = os.environ.get("RAY_ADDRESS")
    if not address or not address.startswith(("http://", "https://")):
        return address or None
    if os.environ.get("CAST_RAY_GCS_ADDRESS"):
        return os.environ["CAST_RAY_GCS_ADDRESS"]
    raise ValueError(f"RAY_ADDRESS={address} is the Ray job API (for `ray job submit`), not a cluster a "
                     f"script can join: submit the script with `ray job submit --working-dir . -- python ...`, "
                     f"or export RAY_ADDRESS=<head>:<gcs port> to run it as a driver")
