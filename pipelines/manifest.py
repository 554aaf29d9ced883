"""Reading what a preprocessing run produced: ``classes.json``, ``manifest.parquet``,
``rejects.parquet`` and the shard lists; and consolidating the per-shard fragments into them.

One ``manifest.parquet`` and one ``rejects.parquet`` per output folder, with a ``split`` column; they
are rebuilt from ``_parts/`` (the per-shard commit markers) at the end of every run, so they always
list exactly the committed shards of every split in the folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.shards import PARTS_DIR, join, list_names, resolve_out, write_atomic, write_table_atomic

CLASSES_FILE = "classes.json"
MANIFEST_FILE = "manifest.parquet"
REJECTS_FILE = "rejects.parquet"
_SHARD_PART = re.compile(r"^(?P<split>.+)-(?P<index>\d{6})\.parquet$")
_REJECT_PART = re.compile(r"^(?P<split>.+)-rejects-[0-9a-f]+\.parquet$")


class LabelMapError(ValueError):
    """A shard folder's ``classes.json`` is missing or is not ``{head: {class_id: name}}``."""


def read_label_map(out_dir: str | Path) -> dict[str, dict[str, str]]:
    """``{head: {class_id_str: class_name}}`` from ``OUT/classes.json`` (a folder or a URI): the one
    reader of that file, for preprocessing, the loaders, training and inference."""
    fs, base = resolve_out(str(out_dir))
    path = join(base, CLASSES_FILE)
    try:
        with fs.open_input_stream(path) as f:
            labels = json.loads(f.read().decode())
    except FileNotFoundError as err:
        raise LabelMapError(f"{out_dir}: {CLASSES_FILE} is missing (not a shard folder written by "
                            f"workflows/preprocess.py?)") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LabelMapError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(labels, dict) or not all(isinstance(v, dict) for v in labels.values()):
        raise LabelMapError(f"{path}: expected {{head: {{class_id: name}}}}")
    return {h: {str(k): str(v) for k, v in m.items()} for h, m in labels.items()}


def write_label_map(out_dir: str, label_map: dict[str, dict[str, str]]) -> None:
    fs, base = resolve_out(out_dir)
    write_atomic(fs, join(base, CLASSES_FILE), json.dumps(label_map, indent=1, sort_keys=False).encode())


def _read_parquet(fs, path: str) -> pa.Table:
    with fs.open_input_file(path) as f:
        return pq.read_table(f)


def shard_parts(fs, base: str) -> dict[str, list[int]]:
    """Committed shard indices per split (from the commit markers in ``_parts/``)."""
    out: dict[str, list[int]] = {}
    for name in list_names(fs, base, PARTS_DIR):
        m = _SHARD_PART.match(name)
        if m and not _REJECT_PART.match(name):
            out.setdefault(m["split"], []).append(int(m["index"]))
    return {k: sorted(v) for k, v in out.items()}


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables, promote_options="default") if tables else None


def fragment_names(fs, base: str, split: str | None = None, rejects: bool = False) -> list[str]:
    """Names (under ``_parts/``) of the committed manifest fragments (one per shard) or reject
    fragments (one per batch), optionally of one split only."""
    names = []
    for name in list_names(fs, base, PARTS_DIR):
        is_reject = bool(_REJECT_PART.match(name))
        m = _REJECT_PART.match(name) if rejects else _SHARD_PART.match(name)
        if m is None or is_reject != rejects or (split is not None and m["split"] != split):
            continue
        names.append(name)
    return names


def read_fragment(fs, base: str, name: str) -> pa.Table:
    return _read_parquet(fs, join(base, PARTS_DIR, name))


def read_fragments(fs, base: str, split: str | None = None, rejects: bool = False) -> pa.Table | None:
    """Concatenate the committed manifest (or rejects) fragments, optionally of one split only."""
    return _concat([read_fragment(fs, base, n) for n in fragment_names(fs, base, split, rejects)])


def _write_if_changed(fs, path: str, table: pa.Table) -> None:
    # A rerun with nothing to do must leave the folder exactly as it was.
    if fs.get_file_info(path).type.name == "File" and _read_parquet(fs, path).equals(table):
        return
    write_table_atomic(fs, path, table)


def consolidate(out_dir: str) -> tuple[int, int]:
    """Rebuild ``manifest.parquet`` and ``rejects.parquet`` from all committed fragments; returns
    (samples, rejects)."""
    fs, base = resolve_out(out_dir)
    manifest = read_fragments(fs, base)
    rejects = read_fragments(fs, base, rejects=True)
    if manifest is not None:
        manifest = manifest.sort_by([("split", "ascending"), ("shard", "ascending"), ("key", "ascending")])
        _write_if_changed(fs, join(base, MANIFEST_FILE), manifest)
    if rejects is not None:
        rejects = rejects.sort_by([("split", "ascending"), ("source_id", "ascending")])
        _write_if_changed(fs, join(base, REJECTS_FILE), rejects)
    return (0 if manifest is None else manifest.num_rows), (0 if rejects is None else rejects.num_rows)


def _read_and_filter(out_dir: str, name: str, split: str | None) -> pa.Table:
    fs, base = resolve_out(out_dir)
    table = _read_parquet(fs, join(base, name))
    if split is not None:
        table = table.filter(pc.equal(table["split"], split))
    return table


def read_manifest(out_dir: str, split: str | None = None) -> pa.Table:
    """``manifest.parquet`` (one row per sample: key, split, shard, source_id, num_frames, fps, height,
    width, bytes, label columns), optionally one split only. ``.to_pandas()`` for a DataFrame."""
    return _read_and_filter(out_dir, MANIFEST_FILE, split)


def read_rejects(out_dir: str, split: str | None = None) -> pa.Table:
    """``rejects.parquet`` (split, source_id, path, reason, detail)."""
    return _read_and_filter(out_dir, REJECTS_FILE, split)


def shard_paths(out_dir: str, split: str) -> list[str]:
    """Committed shard tars of ``split``, in index order (local paths: DALI reads files)."""
    fs, base = resolve_out(out_dir)
    idx = shard_parts(fs, base).get(split, [])
    if not idx:
        raise FileNotFoundError(f"no committed shards of split {split!r} in {out_dir}")
    return [join(base, f"{split}-{i:06d}.tar") for i in idx]
