"""The batch-inference job on Ray Data.

    records (driver) -> map: decode + multi-view sample (CPU tasks; failures become reject rows)
                     -> map_batches: model replicas in an actor pool (one per GPU, else CPU), explicit
                        batch size; softmax averaged over views; top-k
                     -> driver: Parquet parts in OUT/predictions/, rejects in OUT/rejects.parquet

:func:`plan_job` does everything that can fail on a wrong config (model lookup and download, input
listing, label check, view settings) without Ray; :func:`run_job` runs the plan on the current Ray
cluster (``ray.init`` is the caller's).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from pipelines.progress import format_eta
from pipelines.schema import count_rejects

from ..cluster.ray_connect import too_few_cpus
from .config import InferConfig, InferConfigError
from .inputs import InputListing, check_labels, list_inputs
from .model import ModelSource, resolve_model
from .store import ModelStamp, OutputStore, new_job_id, predictions_table
from .views import ViewSpec, view_settings


@dataclass
class JobPlan:
    cfg: InferConfig
    model: ModelSource
    listing: InputListing
    views: ViewSpec
    dataset: str
    todo: list[dict]  # records not yet predicted by this model (nor rejected, unless retried)
    skipped: int
    duplicates: list[dict]
    unlisted: list[dict] = field(default_factory=list)  # inputs rejected while listing (InputListing.rejects)

    @property
    def stamp(self) -> ModelStamp:
        return ModelStamp(self.model.name, self.model.version, self.model.uri)


@dataclass
class JobResult:
    job_id: str
    listed: int
    skipped: int
    predicted: int
    rejected: int
    seconds: float
    videos_per_s: float
    first_output_s: float = 0.0  # start-up: seconds until the first predictions came back
    parts: list[str] = field(default_factory=list)
    reject_reasons: dict[str, int] = field(default_factory=dict)


def dataset_of(listing: InputListing, model: ModelSource) -> str:
    """The dataset the input belongs to: the input's own say, else the checkpoint's."""
    return listing.dataset or model.dataset


def plan_job(cfg: InferConfig, model: ModelSource | None = None) -> JobPlan:
    """Resolve the model, list the input, check labels and views, subtract what OUT already holds."""
    model = model or resolve_model(cfg.model)
    listing = list_inputs(cfg)
    if cfg.eval:
        check_labels(listing, model.labels)
    dataset = dataset_of(listing, model)
    views = view_settings(cfg, model, listing.max_fps)
    store = OutputStore(cfg.out)
    done = store.predicted_ids(ModelStamp(model.name, model.version, model.uri))
    if not cfg.retry_rejects:
        done |= store.rejected_ids()
    todo = [r for r in listing.records if r["source_id"] not in done]
    duplicates = [r for r in listing.duplicates if r["source_id"] not in done]
    unlisted = [r for r in listing.rejects if r["source_id"] not in done]
    return JobPlan(cfg, model, listing, views, dataset, todo, len(listing.records) - len(todo), duplicates,
                   unlisted)


def choose_device(cfg: InferConfig, cluster_gpus: float, log: Callable[[str], None]) -> str:
    """``gpu`` asks Ray for GPUs and waits for them (an autoscaler adds GPU nodes: the cluster may have
    none yet); ``auto`` takes the GPU when the cluster has one now and says so when it runs on CPU."""
    if cfg.device != "auto":
        return cfg.device
    if cluster_gpus >= cfg.gpus_per_replica:
        return "gpu"
    log(f"[batch_infer] --device auto: the Ray cluster has {cluster_gpus:g} GPUs now, running on CPU "
        f"(--device gpu waits for GPU nodes an autoscaler adds)")
    return "cpu"


def pool_size(cfg: InferConfig, device: str, cluster_gpus: float) -> tuple[int, int]:
    """(min, max) model actors: ``num_replicas`` fixes both; else ``min_replicas`` .. ``max_replicas``,
    whose default is what the cluster's GPUs hold now (at least one: the autoscaler's first node)."""
    if cfg.num_replicas:
        return cfg.num_replicas, cfg.num_replicas
    if cfg.max_replicas is not None:
        return cfg.min_replicas, cfg.max_replicas
    fits = int(cluster_gpus // cfg.gpus_per_replica) if device == "gpu" else 1
    return cfg.min_replicas, max(cfg.min_replicas, fits, 1)


def check_local_cpus(cfg: InferConfig, num_cpus: int | None) -> None:
    """Refuse, before Ray starts, a local Ray that cannot hold the model replicas and a decode task at once:
    each replica is an actor that keeps its CPU for the whole job (on GPU too), so with no CPU left the
    decode tasks that feed them never run and the job waits forever. Joining a cluster is not checked
    (its size is the cluster's; an autoscaler may add nodes)."""
    replicas = cfg.num_replicas or cfg.min_replicas  # the pool's first actors, started before any decode
    problem = too_few_cpus(num_cpus, replicas + 1,
                           f"{replicas} model replica(s) x 1 CPU + at least 1 CPU for decoding")
    if problem:
        raise InferConfigError(problem)


def run_job(plan: JobPlan, log: Callable[[str], None] | None = None) -> JobResult:
    """Run ``plan`` on the current Ray cluster under OUT's lease (one writer per output; raises
    ``pipelines.lease.LeaseHeld`` while another live job writes there); returns counts and throughput.
    What OUT holds is read again under the lease: a plan made before another job finished repeats nothing."""
    from pipelines.lease import hold

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    with hold(plan.cfg.out, "batch_infer", wait_s=plan.cfg.lease_wait, log=log):
        store = OutputStore(plan.cfg.out)
        done = store.predicted_ids(plan.stamp) | (set() if plan.cfg.retry_rejects else store.rejected_ids())
        if done:
            todo = [r for r in plan.todo if r["source_id"] not in done]
            plan = replace(plan, todo=todo, skipped=plan.skipped + len(plan.todo) - len(todo),
                           duplicates=[r for r in plan.duplicates if r["source_id"] not in done],
                           unlisted=[r for r in plan.unlisted if r["source_id"] not in done])
        return _run_job(plan, log)


def _run_job(plan: JobPlan, log: Callable[[str], None]) -> JobResult:
    """Stream the plan's videos through decode tasks and model replicas; write predictions and rejects."""
    cfg, job_id = plan.cfg, new_job_id()
    result = JobResult(job_id, len(plan.listing.records), plan.skipped, 0, 0, 0.0, 0.0)
    total = len(plan.todo)
    log(f"[batch_infer {job_id}] model {plan.model.name} v{plan.model.version}; {result.listed} videos listed "
        f"({plan.listing.kind}), {plan.skipped} already done, {total} to predict; views {plan.views.clips} clip(s) "
        f"x {plan.views.crops} crop(s), {plan.views.sampling} sampling")
    writer = _OutputWriter(plan, job_id, result)
    writer.rejects += [dict(r) for r in plan.duplicates]  # reason: duplicate or conflicting_labels
    writer.rejects += [dict(r) for r in plan.unlisted]
    t0 = time.time()
    if total:
        processed, last_log = 0, time.time()
        for batch in _prediction_stream(plan, job_id, log).iter_batches(batch_size=None, batch_format="numpy"):
            if not processed:
                result.first_output_s = time.time() - t0
            processed += writer.add(batch)
            now = time.time()
            if now - last_log >= cfg.progress_every or processed == total:
                rate = processed / max(now - t0, 1e-9)
                log(f"[batch_infer {job_id}] {processed}/{total} videos ({result.predicted} predicted, "
                    f"{processed - result.predicted} rejected), {rate:.2f} videos/s, "
                    f"ETA {format_eta((total - processed) / rate) if rate > 0 else '?'}")
                last_log = now
    writer.flush()
    result.seconds = time.time() - t0
    result.videos_per_s = total / result.seconds if total and result.seconds > 0 else 0.0
    log(f"[batch_infer {job_id}] done in {result.seconds:.1f}s: {result.predicted} predicted, {result.rejected} "
        f"rejected {result.reject_reasons}, {result.skipped} skipped; throughput {result.videos_per_s:.2f} videos/s")
    return result


def _prediction_stream(plan: JobPlan, job_id: str, log: Callable[[str], None]):
    """The Ray Data pipeline of the plan's videos: decode tasks, then an actor pool of model replicas."""
    import numpy as np
    import ray

    from pipelines.memory import DEFAULT_BUDGET_BYTES

    from .replica import Predictor
    from .views import decode_views

    cfg, total = plan.cfg, len(plan.todo)
    gpus = ray.cluster_resources().get("GPU", 0)
    device = choose_device(cfg, gpus, log)
    low, high = pool_size(cfg, device, gpus)
    weights = plan.model.weights_bytes()
    weights_size = sum(len(b) for b in weights)
    checkpoint = ray.put(weights)
    # Small blocks (<= 8 videos, at least 64 of them when there are enough videos): decode tasks
    # stay short, spread over the cluster, and never hold many decoded videos at once.
    ds = ray.data.from_items(plan.todo, override_num_blocks=min(total, max(math.ceil(total / 8), 64)))
    # Each decode task asks for the memory it lets a video take (pipelines.memory) plus its views and
    # base, so Ray never packs a node with more decodes than it holds.
    ds = ds.map(decode_views, fn_kwargs={"spec": plan.views}, num_cpus=1,
                num_gpus=0.25 if cfg.decode_device == "gpu" else 0,
                memory=DEFAULT_BUDGET_BYTES + (256 << 20) + int(np.prod(plan.views.shape)))
    ds = ds.map_batches(Predictor, batch_size=cfg.batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
                        fn_constructor_kwargs={"checkpoint": [checkpoint], "top_k": cfg.top_k,
                                               "device": device, "precision": cfg.precision},
                        num_gpus=cfg.gpus_per_replica if device == "gpu" else 0, num_cpus=1,
                        # A replica's host memory: its weights twice (bytes + tensors) and headroom.
                        # Also keeps Ray Data from fusing the decode tasks into the actors on CPU
                        # clusters, so videos decode in parallel with the model instead of in turn.
                        memory=2 * weights_size + (1 << 30))
    log(f"[batch_infer {job_id}] {low}..{high} model replica(s) on {device}"
        f"{f' ({cfg.gpus_per_replica:g} GPU each)' if device == 'gpu' else ''}, batch size {cfg.batch_size} videos")
    return ds


class _OutputWriter:
    """A job's predictions and rejects on their way to OUT: predictions buffered into Parquet parts of
    ``flush_rows`` (or every ``flush_s``), rejects merged into rejects.parquet at each flush; counts go
    into the job's result."""

    def __init__(self, plan: JobPlan, job_id: str, result: JobResult) -> None:
        self.cfg, self.labels, self.stamp, self.job_id, self.result = plan.cfg, plan.model.labels, plan.stamp, \
            job_id, result
        self.store = OutputStore(plan.cfg.out)
        self.rejects: list[dict] = []
        self.pending: list = []
        self.pending_rows, self.seq, self.last_flush = 0, 0, time.time()
        self.predicted_ids: set[str] = set()

    def add(self, batch: dict) -> int:
        """One batch of model output (rows with an empty ``reason`` predicted, the others rejected);
        flushes when due. Returns the videos it held."""
        import numpy as np

        reasons = np.asarray(batch["reason"]).astype(str)
        ok = reasons == ""
        if ok.any():
            rows = {k: np.asarray(v)[ok] for k, v in batch.items()}
            self.pending.append(predictions_table(rows, self.labels, self.stamp, self.job_id))
            self.pending_rows += int(ok.sum())
            self.predicted_ids.update(str(s) for s in rows["source_id"])
            self.result.predicted += int(ok.sum())
        for i in np.flatnonzero(~ok):
            self.rejects.append({"source_id": str(batch["source_id"][i]), "path": str(batch["path"][i]),
                                 "reason": str(reasons[i]), "detail": str(batch["detail"][i])})
        if self.pending_rows >= self.cfg.flush_rows or time.time() - self.last_flush >= self.cfg.flush_s:
            self.flush()
        return len(ok)

    def flush(self) -> None:
        import pyarrow as pa

        if self.pending:
            self.result.parts.append(self.store.write_part(pa.concat_tables(self.pending), self.job_id, self.seq))
            self.seq += 1
        self.store.update_rejects(self.rejects, self.predicted_ids if self.cfg.retry_rejects else set())
        count_rejects(self.result.reject_reasons, self.rejects)
        self.result.rejected += len(self.rejects)
        self.pending, self.pending_rows, self.last_flush = [], 0, time.time()
        self.rejects.clear()
