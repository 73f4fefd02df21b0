"""Rewrite a results file compactly: every table and view copied into a new file of BLOCK_SIZE blocks, checked
row for row, then moved over the old one if it is smaller. DuckDB never shrinks a file: rows deleted or replaced by
re-ingests leave free blocks behind, and a file created in DuckDB's default 256 KiB blocks keeps them."""

from __future__ import annotations

import os
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import move_into_place


def compact(db, wait: float | None = None) -> tuple[int, int]:
    """(bytes before, bytes after; equal when the copy was no smaller and the file was kept). Holds the store's
    write lock throughout, so no ingest writes meanwhile; on any failure the original file is left as it was."""
    import duckdb

    from costlaw.analysis.store.lock import BLOCK_SIZE, DEFAULT_WAIT_S, connect, write_lock

    db = Path(db)
    if not db.is_file():
        raise CostlawError(f"--db: no results file {str(db)!r} to compact; give an existing one")
    tmp = db.with_name(f".{db.name}.compact-{os.getpid()}")
    before = db.stat().st_size
    with write_lock(db, DEFAULT_WAIT_S if wait is None else wait):
        connect(db, read_only=False, wait=0).close()  # a costlaw store (check_store), not another process's
        try:
            con = duckdb.connect()
            try:
                con.execute(f"ATTACH '{_quoted(tmp)}' AS dst (BLOCK_SIZE {BLOCK_SIZE})")
                con.execute(f"ATTACH '{_quoted(db)}' AS src (READ_ONLY)")
                con.execute("COPY FROM DATABASE src TO dst")
                for (table,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'src'"
                                            ).fetchall():
                    a, b = (con.execute(f'SELECT count(*) FROM {d}."{table}"').fetchone()[0] for d in ("src", "dst"))
                    if a != b:
                        raise CostlawError(f"--db: compacting {db} copied {b} of {a} rows of {table}; the file "
                                           "is left as it was")
                con.execute("DETACH src")
                con.execute("DETACH dst")
            finally:
                con.close()
            if tmp.stat().st_size < before:
                move_into_place(tmp, db)
        finally:
            for p in (tmp, Path(f"{tmp}.wal")):
                p.unlink(missing_ok=True)
    return before, db.stat().st_size


def _quoted(p: Path) -> str:
    return str(p).replace("'", "''")
