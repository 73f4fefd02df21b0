"""Who may open the results file, and how long to wait for it.

Writers (`costlaw ingest`, `write_fits`) first take `<db>.lock` with fcntl.flock and write their PID into
it, so a second writer waits a little and then fails naming the holder. DuckDB's own file lock then
keeps readers and the writer apart; `connect` retries a lock conflict for a bounded time, because a
reader that arrives during an ingest should wait for it, not fail at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

import duckdb

from costlaw.costmodel.core.errors import CostlawError

DEFAULT_WAIT_S = 10.0


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


@contextlib.contextmanager
def write_lock(db: Path, wait: float = DEFAULT_WAIT_S):
    """Hold `<db>.lock` exclusively for the block. The kernel drops the lock if the holder dies."""
    path = lock_path(db)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        delay = 0.02
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise CostlawError(f"--db: {db} is being written by another process (PID {holder}, lock file "
                                       f"{path}); wait for it to finish or give a longer --wait") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def connect(db: Path, read_only: bool, wait: float = DEFAULT_WAIT_S, config: dict | None = None):
    """duckdb.connect, retrying while another process holds the file (bounded by `wait` seconds)."""
    deadline = time.monotonic() + wait
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(db), read_only=read_only, config=config or {})
        except duckdb.IOException as e:
            if "lock" not in str(e).lower():
                raise CostlawError(f"--db: cannot open {db} ({str(e).splitlines()[0]}); "
                                   "check that it is a costlaw results file") from None
            if time.monotonic() >= deadline:
                who = "an ingest" if read_only else "another process"
                raise CostlawError(f"--db: {db} is locked by {who} ({_holder(e)}); wait for it to finish "
                                   "and retry, or give a longer --wait") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _holder(e: Exception) -> str:
    text = str(e)
    i = text.find("PID")
    return text[i:].split(")")[0].strip() if i >= 0 else "holder unknown"
