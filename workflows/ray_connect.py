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
    if os.environ.get("RAY_ADDRESS"):
        if num_cpus is not None:
            print(f"[ray] RAY_ADDRESS is set: joining {os.environ['RAY_ADDRESS']}; "
                  f"--num-cpus {num_cpus} applies only to a local Ray and is ignored", flush=True)
        ray.init(log_to_driver=log_to_driver)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, log_to_driver=log_to_driver)
    ray.data.DataContext.get_current().enable_progress_bars = False  # our own progress lines instead
    return True
