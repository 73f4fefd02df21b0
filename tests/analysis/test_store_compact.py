"""Results files in 64 KiB blocks: a new store is made in them, and `costlaw ingest --compact` rewrites an old one
(every table and view kept, row for row) or leaves it as it was."""

import os

import duckdb
import pytest

from costlaw.analysis.store import ingest
from costlaw.analysis.store.compact import compact
from costlaw.analysis.store.lock import BLOCK_SIZE
from costlaw.costmodel import CostlawError
from tests.support.synth_runs import write_run

from .test_store_ingest import cfg, dump


def block_size(db) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0]
    finally:
        con.close()


def views(db) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal "
                                           "ORDER BY 1").fetchall()]
        return {n: con.execute(f"SELECT * FROM {n} ORDER BY ALL").fetchall() for n in names}
    finally:
        con.close()


@pytest.fixture
def old_store(tmp_path):
    """A store as earlier versions made it: DuckDB's default 256 KiB blocks, six runs ingested into it."""
    root = tmp_path / "root"
    for h, kv in ((4, 4), (4, 2), (4, 1)):
        for seed in (0, 1):
            write_run(root, cfg(h, kv, seed).to_dict(), steps=20, final_loss=2.0 + kv / 10 + seed / 100)
    db = tmp_path / "old.duckdb"
    duckdb.connect(str(db), config={"default_block_size": "262144"}).close()  # an empty file of the old size
    ingest(root, db)
    return db


def test_a_new_store_is_made_in_small_blocks(tmp_path, old_store):
    root = tmp_path / "root"
    db = tmp_path / "new.duckdb"
    ingest(root, db)
    assert block_size(db) == BLOCK_SIZE and block_size(old_store) == 262144
    same = {k: v for k, v in dump(db).items() if k != "schema_version"}  # which holds when each was made
    assert same == {k: v for k, v in dump(old_store).items() if k != "schema_version"}
    assert views(db) == views(old_store)
    assert os.path.getsize(db) * 3 < os.path.getsize(old_store)


def test_compact_keeps_every_row_and_view_and_shrinks_the_file(cli, old_store):
    tables, shown = dump(old_store), views(old_store)
    assert len(shown["run_summary"]) == 6
    size = os.path.getsize(old_store)
    rc, out, err = cli("ingest", "--db", old_store, "--compact")
    assert rc == 0, err
    after = os.path.getsize(old_store)
    assert out.strip() == f"compacted {old_store}: {size:,} -> {after:,} bytes" and after * 3 < size
    assert block_size(old_store) == BLOCK_SIZE
    assert dump(old_store) == tables and views(old_store) == shown
    assert not [p for p in old_store.parent.iterdir() if ".compact-" in p.name]
    again = old_store.read_bytes()
    assert compact(old_store) == (after, after) and old_store.read_bytes() == again  # no smaller: kept
    root = old_store.parent / "root"  # the compacted store takes new runs as before
    write_run(root, cfg(8, 2, 0).to_dict(), steps=20, final_loss=2.5)
    assert ingest(root, old_store).line().startswith("ingested 1 (1 new, 0 replaced), unchanged 6")
    assert len(views(old_store)["run_summary"]) == 7


def test_a_failed_compaction_leaves_the_file_as_it_was(old_store, monkeypatch):
    before, tables = old_store.read_bytes(), dump(old_store)

    def fail(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        compact(old_store)
    assert old_store.read_bytes() == before and dump(old_store) == tables
    assert not [p for p in old_store.parent.iterdir() if ".compact-" in p.name]


def test_compact_refuses_what_is_not_a_costlaw_store(cli, tmp_path):
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE mine (x INT)")
    con.close()
    before = other.read_bytes()
    rc, out, err = cli("ingest", "--db", other, "--compact")
    assert rc == 2 and "is a DuckDB file of something else (mine" in err
    assert other.read_bytes() == before
    with pytest.raises(CostlawError, match="no results file"):
        compact(tmp_path / "missing.duckdb")
    rc, out, err = cli("ingest", "--db", tmp_path / "x.duckdb")
    assert rc == 2 and "--root: required" in err and "--compact" in err
