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
# A new results file is written in 64 KiB blocks instead of DuckDB's 256 KiB: a store's dozen tables each take at
# least a block, so a study's store of a few dozen runs was 2.3-5.5 MB, mostly empty blocks. Copied into 64 KiB
# blocks the 14 committed study stores went from 43.7 to 12.5 MiB (16 KiB: 8.0), and a synthetic one of 300 runs x
# 1,000 steps from 11.3 to 9.9 MB (16 KiB: 13.6, larger); ingest and query times were the same (store_bench.py).
# A file keeps the block size it was created with; analysis/store/compact.py rewrites an old one.
BLOCK_SIZE = 65536


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
    """duckdb.connect, retrying while another process holds the file (bounded by `wait` seconds). A writer's
    connection is refused unless the file is a costlaw store or empty (`check_store`)."""
    deadline = time.monotonic() + wait
    delay = 0.02
    while True:
        try:
            fresh = not read_only and (not Path(db).exists() or Path(db).stat().st_size == 0)
            con = duckdb.connect(str(db), read_only=read_only,
                                 config={**({"default_block_size": str(BLOCK_SIZE)} if fresh else {}),
                                         **(config or {})})
            break
        except duckdb.IOException as e:
            if "lock" not in str(e).lower():
                raise CostlawError(f"--db: cannot open {db} ({_first_line(e)}); "
                                   "check that it is a costlaw results file") from None
            if time.monotonic() >= deadline:
                who = "an ingest" if read_only else "another process"
                raise CostlawError(f"--db: {db} is locked by {who} ({_holder(e)}); wait for it to finish "
                                   "and retry, or give a longer --wait") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        except duckdb.Error as e:  # not a DuckDB file, a damaged one, one from another DuckDB version
            raise CostlawError(f"--db: cannot open {db} ({_first_line(e)}); "
                               "check that it is a costlaw results file") from None
    if not read_only:
        try:
            check_store(con, db)
        except BaseException:
            con.close()
            raise
    return con


def check_store(con, db) -> None:
    """Refuse a database that holds tables or views of its own but no costlaw schema: writing our tables beside
    them would change a file that is not ours."""
    from costlaw.analysis.store.schema import version

    if version(con):
        return
    names = [r[0] for r in con.execute("""
        SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND NOT temporary
        UNION ALL SELECT view_name FROM duckdb_views()
         WHERE database_name = current_database() AND NOT internal AND NOT temporary
        ORDER BY 1""").fetchall()]
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise CostlawError(f"--db: {db} is a DuckDB file of something else ({shown}; no costlaw schema_version); "
                           "give a new file or a costlaw results file")


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _holder(e: Exception) -> str:
    text = str(e)
    i = text.find("PID")
    return text[i:].split(")")[0].strip() if i >= 0 else "holder unknown"
