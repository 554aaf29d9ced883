"""A rerun converges on the current input: compare what the output holds with what the annotations
and the files say now, and undo what no longer matches.

Each sample and reject carries the *fingerprint* of its input: labels, segment, and the source file's
size and modification time (``os.stat``; no content hash, which would read every video on every run).
On a rerun, per split:

  * a sample whose id is no longer listed (removed) or whose fingerprint changed (new label, replaced
    file, new segment): its whole shard is un-committed (marker first, then tar and index) and the
    shard's other, unchanged samples are processed again into new shards. Shards are rewritten, never
    patched, so every committed tar holds exactly the current samples;
  * a reject whose id is no longer listed, whose fingerprint changed (a missing video that arrived, a
    fixed file), whose reason is in ``retry`` (default ``missing``: retried once its file exists, which
    also covers outputs written before fingerprints existed), or a ``duplicate`` reject of an id
    now listed once: dropped from its fragment, so the input is tried again;
  * everything else is done and skipped.

Outputs written before fingerprints existed (no column) count as unchanged. A crash half-way through
leaves ids neither committed nor rejected: the next run processes them, so it still converges.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from pipelines.manifest import fragment_names, read_fragment
from pipelines.schema import VideoRow
from pipelines.shards import PARTS_DIR, join, write_table_atomic

FINGERPRINT_COLUMN = "source_fingerprint"


def fingerprint(row: VideoRow) -> str:
    """What, when it changes, makes an input's sample or reject out of date."""
    try:
        st = os.stat(row.path)
        source = [st.st_size, st.st_mtime_ns, st.st_mode >> 12]  # file type: a dir replaced by a file
    except (OSError, ValueError):
        source = None  # missing or unreadable: becomes a fingerprint change when the file arrives
    text = json.dumps([sorted(row.labels.items()), row.segment, row.segment_fps, source])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class Reconciled:
    done: set[str]  # ids with an up-to-date sample or reject
    rejected: set[tuple[str, str]]  # (id, reason) of the rejects kept
    committed: set[int]  # shard indices still committed
    removed: int = 0  # samples/rejects of ids no longer listed, dropped
    changed: int = 0  # samples/rejects whose input changed, to be redone
    retried: int = 0  # rejects tried again (reason in retry)
    rewritten: list[str] = field(default_factory=list)  # shards un-committed (their samples redone)


def _unchanged(recorded: str | None, current: str | None) -> bool:
    return recorded is None or recorded == current


# Eight parameters, three kinds, none of them travelling together elsewhere: where (fs, base, split),
# what the input is now (rows, their fingerprints) and the run's choices (committed shards, reasons to
# retry, the log); a bundle would exist for this one call.
def reconcile(fs, base: str, split: str, rows: list[VideoRow], fingerprints: dict[str, str],
              committed: set[int], retry: frozenset[str], log: Callable[[str], None]) -> Reconciled:
    """Bring ``base``'s committed samples and rejects of ``split`` in line with ``rows`` (see module)."""
    out = Reconciled(set(), set(), set(committed))
    for name in fragment_names(fs, base, split):
        t = read_fragment(fs, base, name).to_pylist()
        stale = [r for r in t if r["source_id"] not in fingerprints
                 or not _unchanged(r.get(FINGERPRINT_COLUMN), fingerprints[r["source_id"]])]
        if not stale:
            out.done.update(r["source_id"] for r in t)
            continue
        removed = sum(r["source_id"] not in fingerprints for r in stale)
        out.removed += removed
        out.changed += len(stale) - removed
        shard = name[: -len(".parquet")]
        fs.delete_file(join(base, PARTS_DIR, name))  # the commit marker first: a crash leaves leftovers only
        for ext in (".tar", ".idx"):
            if fs.get_file_info(join(base, shard + ext)).type.name == "File":
                fs.delete_file(join(base, shard + ext))
        out.committed.discard(int(shard.rsplit("-", 1)[1]))
        out.rewritten.append(shard + ".tar")
    listed = Counter(r.source_id for r in rows)
    paths = {r.source_id: r.path for r in rows}
    for name in fragment_names(fs, base, split, rejects=True):
        _reconcile_rejects(fs, base, name, fingerprints, listed, paths, retry, out)
    if out.removed or out.changed or out.retried:
        log(f"[preprocess {split}] input changed since the last run: {out.removed} removed, {out.changed} "
            f"changed, {out.retried} reject(s) retried; {len(out.rewritten)} shard(s) to rewrite")
    return out


def _reconcile_rejects(fs, base: str, name: str, fingerprints: dict[str, str], listed: Counter,
                       paths: dict[str, str], retry: frozenset[str], out: Reconciled) -> None:
    table = read_fragment(fs, base, name)
    keep = []
    for r in table.to_pylist():
        sid = r["source_id"]
        if sid not in fingerprints:
            out.removed += 1
        elif r["reason"] == "duplicate" and listed[sid] < 2:
            out.changed += 1
        elif not _unchanged(r.get(FINGERPRINT_COLUMN), fingerprints[sid]):
            out.changed += 1
        elif r["reason"] in retry and (r["reason"] != "missing" or os.path.lexists(paths[sid])):
            # A ``missing`` input still absent would be rejected the same again: retrying it would only
            # rewrite its fragment, and a finished job's rerun must change no file.
            out.retried += 1
        else:
            keep.append(r)
            out.rejected.add((sid, r["reason"]))
            if r["reason"] != "duplicate":
                out.done.add(sid)
    if len(keep) == table.num_rows:
        return
    path = join(base, PARTS_DIR, name)
    if keep:
        write_table_atomic(fs, path, pa.Table.from_pylist(keep, schema=table.schema))
    else:
        fs.delete_file(path)
