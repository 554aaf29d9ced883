"""One writer per output: an exclusive, expiring lease on a folder, on any pyarrow filesystem.

Object stores have no exclusive create that pyarrow exposes, so the lease is decided by listing, which
S3, GCS and local disks answer consistently after a write:

  1. list ``OUT/_lease/``; a live holder there -> wait (``wait_s``) or raise :class:`LeaseHeld`
  2. write our own candidate ``OUT/_lease/<token>.json`` (owner, host, pid, started, heartbeat, ttl)
  3. list again: alone -> ours; anyone else live -> delete ours, back off a random moment, go to 1.

Two writers can never both win: whoever lists second after both wrote sees the other. A holder rewrites
its file (the heartbeat) every ``ttl_s / 4``; a lease whose heartbeat is older than its ``ttl_s``, or
whose holder is a dead process on this host, is stale: the next job deletes it, says so, and goes on
(recovery after a crash or kill -9). A holder that finds its own file gone (declared stale while it was
paused) has lost the lease; :meth:`OutputLease.check` raises :class:`LeaseLost` at its next commit.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import pyarrow.fs as pafs

from pipelines.shards import join, list_names, resolve_out, write_atomic

LEASE_DIR = "_lease"
DEFAULT_TTL_S = 120.0


class LeaseHeld(RuntimeError):
    """Another live job holds the output."""


class LeaseLost(RuntimeError):
    """This job's lease was taken over (its heartbeat stopped for longer than the TTL)."""


@dataclass(frozen=True)
class LeaseInfo:
    owner: str  # what holds it, e.g. "preprocess train"
    host: str
    pid: int
    token: str
    started: float
    heartbeat: float
    ttl_s: float

    def describe(self, now: float) -> str:
        return (f"{self.owner} (host {self.host}, pid {self.pid}, started "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.started))}, last heartbeat "
                f"{now - self.heartbeat:.0f}s ago)")


def _pid_dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child its parent has not reaped yet is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def stale_reason(info: LeaseInfo, now: float) -> str | None:
    """Why ``info`` no longer holds anything, or None while it is live."""
    if now - info.heartbeat > info.ttl_s:
        return f"no heartbeat for {now - info.heartbeat:.0f}s (ttl {info.ttl_s:.0f}s)"
    if info.host == socket.gethostname() and info.pid != os.getpid() and _pid_dead(info.pid):
        return f"process {info.pid} on this host is gone"
    return None


class OutputLease:
    """The lease on ``uri`` (a local folder or object-store URI). Use as a context manager."""

    def __init__(self, uri: str, owner: str, ttl_s: float = DEFAULT_TTL_S, wait_s: float = 0.0,
                 log: Callable[[str], None] | None = None) -> None:
        if ttl_s <= 0 or wait_s < 0:
            raise ValueError(f"ttl_s must be > 0 and wait_s >= 0, got {ttl_s}, {wait_s}")
        self.uri, self.owner, self.ttl_s, self.wait_s = uri, owner, ttl_s, wait_s
        self.fs, base = resolve_out(uri)
        self.dir = join(base, LEASE_DIR)
        self.log = log or (lambda msg: None)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None

    # -- the files ----------------------------------------------------------------------------------------
    def _path(self, token: str) -> str:
        return join(self.dir, f"{token}.json")

    def _write(self, started: float) -> None:
        info = LeaseInfo(self.owner, socket.gethostname(), os.getpid(), self.token, started, time.time(), self.ttl_s)
        write_atomic(self.fs, self._path(self.token), json.dumps(asdict(info)).encode())

    def _others(self) -> list[LeaseInfo]:
        """Live leases of other jobs; stale ones are removed (and reported) on the way."""
        live, now = [], time.time()
        for name in list_names(self.fs, self.dir):
            if not name.endswith(".json") or name == f"{self.token}.json":
                continue
            path = join(self.dir, name)
            try:
                with self.fs.open_input_stream(path) as f:
                    info = LeaseInfo(**json.loads(f.read().decode()))
            except FileNotFoundError:
                continue  # released while we listed
            except OSError as e:
                # An object store that fails a read (being rewritten, a transient error): count it as a
                # live holder. The safe side: at worst this attempt backs off or is refused.
                live.append(LeaseInfo(f"a lease file that could not be read ({name}: {e})"[:300], "?", -1, name,
                                      now, now, DEFAULT_TTL_S))
                continue
            except (ValueError, TypeError) as e:
                # Our writes are atomic, so this is foreign or damaged: live until older than any TTL.
                mtime = self.fs.get_file_info(path).mtime
                if mtime is not None and now - mtime.timestamp() > DEFAULT_TTL_S:
                    self.log(f"[lease] removed unreadable lease file {path}: {e}")
                    self.fs.delete_file(path)
                else:
                    live.append(LeaseInfo(f"an unreadable lease file {name}", "?", -1, name, now, now, DEFAULT_TTL_S))
                continue
            why = stale_reason(info, now)
            if why is None:
                live.append(info)
                continue
            self.log(f"[lease] {self.uri}: recovered the lease of a dead job, {info.describe(now)}: {why}")
            try:
                self.fs.delete_file(path)
            except FileNotFoundError:
                pass
        return live

    # -- acquire / release ----------------------------------------------------------------------------------
    def acquire(self) -> "OutputLease":
        self.fs.create_dir(self.dir, recursive=True)
        deadline = time.time() + self.wait_s
        started = time.time()
        while True:
            holders = self._others()
            if not holders:
                self._write(started)
                holders = self._others()
                if not holders:
                    self._start_heartbeat(started)
                    return self
                self.fs.delete_file(self._path(self.token))  # a tie: both back off, one comes back first
            if holders and time.time() >= deadline:
                raise LeaseHeld(f"{self.uri} is in use by {holders[0].describe(time.time())}; wait for it to "
                                f"finish, or remove {self.dir} if that job is certainly gone")
            time.sleep(random.uniform(0.05, 0.5) if self.wait_s == 0 else min(2.0, self.ttl_s / 8))

    def _start_heartbeat(self, started: float) -> None:
        def beat() -> None:
            last_ok = time.time()
            while not self._stop.wait(self.ttl_s / 4):
                try:
                    if self.fs.get_file_info(self._path(self.token)).type != pafs.FileType.File:
                        self._lost = "its lease file was removed by another job (heartbeat too late)"
                        return
                    self._write(started)
                    last_ok = time.time()
                except OSError as e:  # a storage hiccup: try again next beat, give up past the TTL
                    if time.time() - last_ok > self.ttl_s:
                        self._lost = f"its heartbeat could not be written for {self.ttl_s:.0f}s: {e}"
                        return

        self._thread = threading.Thread(target=beat, name=f"lease-{self.token[:8]}", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise :class:`LeaseLost` when another job took the output over: call before each commit."""
        if self._lost:
            raise LeaseLost(f"{self.uri}: this job lost its lease: {self._lost}")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._lost is None:
            try:
                self.fs.delete_file(self._path(self.token))
            except FileNotFoundError:
                pass

    def __enter__(self) -> "OutputLease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


_HELD: dict[str, OutputLease] = {}
_HELD_LOCK = threading.Lock()


@contextmanager
def hold(uri: str, owner: str, wait_s: float = 0.0, ttl_s: float = DEFAULT_TTL_S,
         log: Callable[[str], None] | None = None) -> Iterator[OutputLease]:
    """The lease on ``uri`` for the block; re-entrant within a thread (an entry point that took the
    lease before starting Ray calls a job function that takes it again). Two threads are two writers."""
    fs, base = resolve_out(uri)
    key = f"{threading.get_ident()}:{type(fs).__name__}:{base}"
    with _HELD_LOCK:
        held = _HELD.get(key)
    if held is not None:
        yield held
        return
    lease = OutputLease(uri, owner, ttl_s=ttl_s, wait_s=wait_s, log=log).acquire()
    with _HELD_LOCK:
        _HELD[key] = lease
    try:
        yield lease
    finally:
        with _HELD_LOCK:
            _HELD.pop(key, None)
        lease.release()
