"""What batch inference writes: ``OUT/predictions/`` (Parquet parts) and ``OUT/rejects.parquet``.

Each flush writes one part, ``predictions/part-<job id>-<seq>.parquet``, atomically (temp name, then
rename), so a part is either complete or absent and an interrupted job loses at most one flush. The
schema is fixed here, once, per label heads:

  key, source_id, path                   the sample key, the video's id (its path for raw files), its file
  [<head>_]label                         the known label (null when the input has none)
  [<head>_]top_ids / _names / _probs     top-k classes, best first (EK100: verb_ and noun_ columns)
  action_top_verb_ids / _noun_ids /      EK100 only: the k most probable (verb, noun) pairs under
    _names / _probs                        p(verb) * p(noun); names are "<verb> <noun>"
  model_name, model_version, model_uri   what predicted it
  job_id, predicted_at                   which run, when (UTC)

``rejects.parquet`` (source_id, path, reason, detail, rejected_at) holds one row per source id across
runs: a rerun appends new rejects and drops ids that were predicted since (``--retry-rejects``).
"""

from __future__ import annotations

import posixpath
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cast_model.vocab import head_prefix, is_action, label_key
from pipelines.manifest import REJECTS_FILE
from pipelines.shards import join, list_names, resolve_out, write_table_atomic

PREDICTIONS_DIR = "predictions"
# The inference job's rejects (same file name as preprocessing's; no split, a time of rejection instead).
REJECT_SCHEMA = pa.schema([("source_id", pa.string()), ("path", pa.string()), ("reason", pa.string()),
                           ("detail", pa.string()), ("rejected_at", pa.timestamp("ms", tz="UTC"))])


def new_job_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def prediction_schema(heads: tuple[str, ...]) -> pa.Schema:
    ids, names, probs = pa.list_(pa.int32()), pa.list_(pa.string()), pa.list_(pa.float32())
    fields = [("key", pa.string()), ("source_id", pa.string()), ("path", pa.string())]
    for h in heads:
        p = head_prefix(h)
        fields += [(f"{p}label", pa.int32()), (f"{p}top_ids", ids), (f"{p}top_names", names), (f"{p}top_probs", probs)]
    if is_action(heads):
        fields += [("action_top_verb_ids", ids), ("action_top_noun_ids", ids), ("action_top_names", names),
                   ("action_top_probs", probs)]
    fields += [("model_name", pa.string()), ("model_version", pa.string()), ("model_uri", pa.string()),
               ("job_id", pa.string()), ("predicted_at", pa.timestamp("ms", tz="UTC"))]
    return pa.schema(fields)


@dataclass(frozen=True)
class ModelStamp:
    name: str
    version: str
    uri: str


def _names(ids: np.ndarray, labels: dict[str, str]) -> list[list[str]]:
    return [[labels[str(int(i))] for i in row if i >= 0] for row in ids]


def _lists(a: np.ndarray, valid: np.ndarray) -> list[list]:
    return [row[m].tolist() for row, m in zip(a, valid)]


def predictions_table(batch: dict[str, np.ndarray], labels: dict[str, dict[str, str]], model: ModelStamp,
                      job_id: str) -> pa.Table:
    """Predictor output rows (only those without a reject reason) -> a table of :func:`prediction_schema`."""
    heads = tuple(labels)
    n = len(batch["source_id"])
    cols: dict[str, list | pa.Array] = {"key": list(batch["key"]), "source_id": list(batch["source_id"]),
                                        "path": list(batch["path"])}
    for h in heads:
        p = head_prefix(h)
        ids = batch[f"{p}top_ids"]
        valid = ids >= 0
        known = batch.get(label_key(h))
        cols[f"{p}label"] = [None] * n if known is None else [int(v) if int(v) >= 0 else None for v in known]
        cols[f"{p}top_ids"] = _lists(ids, valid)
        cols[f"{p}top_names"] = _names(ids, labels[h])
        cols[f"{p}top_probs"] = _lists(batch[f"{p}top_probs"], valid)
    if is_action(heads):
        v, nn_ = batch["action_top_verb_ids"], batch["action_top_noun_ids"]
        valid = v >= 0
        cols["action_top_verb_ids"], cols["action_top_noun_ids"] = _lists(v, valid), _lists(nn_, valid)
        cols["action_top_names"] = [[f"{labels['verb'][str(int(a))]} {labels['noun'][str(int(b))]}"
                                     for a, b in zip(ra[m], rb[m])] for ra, rb, m in zip(v, nn_, valid)]
        cols["action_top_probs"] = _lists(batch["action_top_probs"], valid)
    now = pa.scalar(int(time.time() * 1000), pa.timestamp("ms", tz="UTC"))
    cols.update(model_name=[model.name] * n, model_version=[model.version] * n, model_uri=[model.uri] * n,
                job_id=[job_id] * n)
    cols["predicted_at"] = pa.array([now.value] * n, pa.timestamp("ms", tz="UTC"))
    return pa.table(cols, schema=prediction_schema(heads))


def rejects_table(rows: list[dict]) -> pa.Table:
    now = int(time.time() * 1000)
    return pa.Table.from_pylist([{"source_id": r["source_id"], "path": r["path"], "reason": r["reason"],
                                  "detail": r.get("detail", ""), "rejected_at": now} for r in rows],
                                schema=REJECT_SCHEMA)


class OutputStore:
    """``OUT`` on any pyarrow filesystem (local path, file://, s3://, gs://)."""

    def __init__(self, out: str) -> None:
        self.fs, self.base = resolve_out(out)
        self.fs.create_dir(join(self.base, PREDICTIONS_DIR), recursive=True)

    def part_names(self) -> list[str]:
        return [n for n in list_names(self.fs, self.base, PREDICTIONS_DIR)
                if n.endswith(".parquet") and not n.startswith(".")]

    def read_predictions(self, columns: list[str] | None = None) -> pa.Table | None:
        """Every part, concatenated (None when there is none yet)."""
        tables = []
        for name in self.part_names():
            with self.fs.open_input_file(join(self.base, PREDICTIONS_DIR, name)) as f:
                tables.append(pq.read_table(f, columns=columns))
        return pa.concat_tables(tables, promote_options="default") if tables else None

    def predicted_ids(self, model: ModelStamp) -> set[str]:
        """Source ids this model (name and version) has already predicted in OUT."""
        t = self.read_predictions(["source_id", "model_name", "model_version"])
        if t is None:
            return set()
        mine = pc.and_(pc.equal(t["model_name"], model.name), pc.equal(t["model_version"], model.version))
        return set(t.filter(mine)["source_id"].to_pylist())

    def write_part(self, table: pa.Table, job_id: str, seq: int) -> str:
        name = f"part-{job_id}-{seq:05d}.parquet"
        write_table_atomic(self.fs, join(self.base, PREDICTIONS_DIR, name), table)
        return posixpath.join(PREDICTIONS_DIR, name)

    def read_rejects(self) -> pa.Table | None:
        path = join(self.base, REJECTS_FILE)
        if self.fs.get_file_info(path).type.name != "File":
            return None
        with self.fs.open_input_file(path) as f:
            return pq.read_table(f)

    def rejected_ids(self) -> set[str]:
        t = self.read_rejects()
        return set() if t is None else set(t["source_id"].to_pylist())

    def update_rejects(self, new: list[dict], predicted: set[str] = frozenset()) -> int:
        """Append ``new`` rejects (one row per source id: a newer reason replaces an older one) and drop
        ids in ``predicted`` (retried and now fine). Returns the rows in the file."""
        old = self.read_rejects()
        if not new and (old is None or not predicted):
            return 0 if old is None else old.num_rows
        rows = {} if old is None else {r["source_id"]: r for r in old.to_pylist()}
        for r in rejects_table(new).to_pylist():
            rows[r["source_id"]] = r
        for sid in predicted:
            rows.pop(sid, None)
        table = pa.Table.from_pylist(sorted(rows.values(), key=lambda r: r["source_id"]), schema=REJECT_SCHEMA)
        write_table_atomic(self.fs, join(self.base, REJECTS_FILE), table)
        return table.num_rows
