"""Writing WebDataset shards with their DALI index, committed atomically, on any pyarrow filesystem.

The tar is written member by member straight to the output stream (ustar headers, no pax), so the
data offset of every member is known while writing and the ``.idx`` comes for free: DALI's index
format ``v1.2 <samples>`` then one line per sample ``<ext> <data offset> <size> <member name> ...``
(the format of DALI's own ``wds2idx``).

A shard only ever appears complete: tar, index and manifest fragment are written under temporary
names and renamed; the manifest fragment is renamed last and is the commit marker.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

PARTS_DIR = "_parts"  # manifest / rejects fragments, one per committed shard or reject batch
_BLOCK = 512


def resolve_out(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, base path)`` for a local path, ``file://`` URI or object-store URI (s3://, gs://, ...)."""
    if "://" not in uri:
        uri = os.path.abspath(uri)
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/") or "/"


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts)


@dataclass(frozen=True)
class Member:
    name: str  # "<key>.<ext>"
    data: bytes


def _header(name: str, size: int) -> bytes:
    if len(name.encode()) > 99:
        raise ValueError(f"tar member name too long for a ustar header: {name!r}")
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0  # mtime 0: identical inputs -> identical shards
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def write_tar(stream, samples: list[list[Member]]) -> str:
    """Write ``samples`` (each a list of members sharing a key, kept adjacent) as a tar to ``stream``;
    return the DALI index text."""
    pos = 0
    lines = []
    for members in samples:
        entries = []
        for m in members:
            header = _header(m.name, len(m.data))
            stream.write(header)
            pos += len(header)
            entries.append(f"{m.name.split('.', 1)[1]} {pos} {len(m.data)} {m.name}")
            stream.write(m.data)
            pad = -len(m.data) % _BLOCK
            stream.write(b"\0" * pad)
            pos += len(m.data) + pad
        lines.append(" ".join(entries))
    stream.write(b"\0" * (2 * _BLOCK))  # end-of-archive marker
    return f"v1.2 {len(samples)}\n" + "\n".join(lines) + "\n"


def _tmp(path: str) -> str:
    d, name = posixpath.split(path)
    return posixpath.join(d, f".{name}.tmp-{uuid.uuid4().hex[:8]}")


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    tmp = _tmp(path)
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def write_table_atomic(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_atomic(fs, path, buf.getvalue())


def commit_shard(fs: pafs.FileSystem, base: str, tar_name: str, samples: list[list[Member]],
                 manifest: pa.Table) -> None:
    """Write ``tar_name`` + ``.idx`` under ``base``, then its manifest fragment (the commit marker)."""
    tar_path = join(base, tar_name)
    tmp = _tmp(tar_path)
    with fs.open_output_stream(tmp) as f:
        index = write_tar(f, samples)
    write_atomic(fs, tar_path[: -len(".tar")] + ".idx", index.encode())
    fs.move(tmp, tar_path)
    fs.create_dir(join(base, PARTS_DIR), recursive=True)
    write_table_atomic(fs, join(base, PARTS_DIR, tar_name[: -len(".tar")] + ".parquet"), manifest)


def list_names(fs: pafs.FileSystem, base: str, sub: str = "") -> list[str]:
    """File names directly under ``base/sub`` (empty if it does not exist)."""
    sel = pafs.FileSelector(join(base, sub) if sub else base, allow_not_found=True)
    return sorted(posixpath.basename(i.path) for i in fs.get_file_info(sel) if i.type == pafs.FileType.File)


def read_index(text: str) -> list[dict[str, tuple[int, int]]]:
    """Parse a DALI ``.idx``: per sample ``{ext: (offset, size)}``. Anything else than a well-formed
    index — empty, a line that is not ``ext offset size name`` groups, a negative or overlapping member,
    a count that does not match — is a ``ValueError`` that says which line and why."""
    lines = text.strip().splitlines()
    if not lines:
        raise ValueError("empty index")
    head = lines[0].split()
    if len(head) != 2 or head[0] != "v1.2" or not head[1].isdigit():
        raise ValueError(f"line 1: expected 'v1.2 <count>', got {lines[0][:80]!r}")
    out, end = [], 0
    for n, line in enumerate(lines[1:], start=2):
        f = line.split()
        if not f or len(f) % 4:
            raise ValueError(f"line {n}: expected groups of 'ext offset size name', got {len(f)} fields")
        sample = {}
        for i in range(0, len(f), 4):
            try:
                offset, size = int(f[i + 1]), int(f[i + 2])
            except ValueError:
                raise ValueError(f"line {n}: offset/size of {f[i]!r} are not integers") from None
            if offset < 0 or size < 0:
                raise ValueError(f"line {n}: member {f[i]!r} has a negative offset or size ({offset}, {size})")
            if offset < end:
                raise ValueError(f"line {n}: member {f[i]!r} at {offset} overlaps the previous one (ends at {end})")
            end = offset + size
            sample[f[i]] = (offset, size)
        out.append(sample)
    if len(out) != int(head[1]):
        raise ValueError(f"index says {head[1]} samples, lists {len(out)}")
    return out
