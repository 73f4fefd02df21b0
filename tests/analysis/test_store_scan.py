"""Finding runs: symlinked roots and run directories followed, loops and dead links reported, directory names
checked; a --db that is not a costlaw store refused untouched; the exit status of `costlaw ingest`."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from costlaw.analysis.store import ingest, query_df, write_fits
from costlaw.costmodel import CostlawError
from costlaw.costmodel.core.exitcodes import FAILED, INPUT, OK
from tests.analysis.test_store_bad_runs import config
from tests.support.synth_runs import write_run


def runs(root: Path, seeds) -> list[Path]:
    return [write_run(root, config(s)) for s in seeds]


def ids(db) -> list[str]:
    return query_df(db, "SELECT run_id FROM runs ORDER BY run_id")["run_id"].to_list()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- symlinks
def test_symlinked_runs_folder_on_another_disk(tmp_path, cli):
    scratch, root = tmp_path / "scratch", tmp_path / "root"
    made = runs(scratch, (0, 1, 2))
    root.mkdir()
    (root / "runs").symlink_to(scratch / "runs")
    rc, out, _ = cli("ingest", "--root", root, "--db", tmp_path / "r.duckdb")
    assert rc == OK, out
    assert ids(tmp_path / "r.duckdb") == sorted(d.name for d in made)
    assert "skipped 0, unreadable 0" in out


def test_symlinked_run_directory_and_symlinked_root(tmp_path):
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "root"
    [far] = runs(elsewhere, (0,))
    [near] = runs(root, (1,))
    (root / "runs" / far.name).symlink_to(far)
    (tmp_path / "link").symlink_to(root)
    rep = ingest(tmp_path / "link", tmp_path / "r.duckdb")
    assert sorted(rep.ingested) == sorted([far.name, near.name]) and not rep.skipped and not rep.unreadable


def test_loop_back_to_the_root_is_read_once(tmp_path, cli):
    root = tmp_path / "root"
    made = runs(root, (0, 1))
    (root / "runs" / "loop").symlink_to(root)
    (root / "runs" / "again").symlink_to(root / "runs")
    rc, out, _ = cli("ingest", "--root", root, "--db", tmp_path / "r.duckdb", "--json")
    rep = json.loads(out)
    assert rc == OK and sorted(rep["ingested"]) == sorted(d.name for d in made) and not rep["unreadable"]
    assert sorted((s["dir"], s["reason"]) for s in rep["skipped"]) == [
        (str(root / "runs" / "again"), f"the same directory as {root / 'runs'}, reached again through a symlink; "
                                       "read once"),
        (str(root / "runs" / "loop"), f"the same directory as {root}, reached again through a symlink; read once")]


def test_link_to_a_directory_holding_the_root_is_not_followed(tmp_path):
    root = tmp_path / "deep" / "root"
    runs(root, (0,))
    (root / "up").symlink_to(tmp_path)
    (root / "slash").symlink_to("/")  # followed, this would search the whole machine
    t = time.monotonic()
    rep = ingest(root, tmp_path / "r.duckdb")
    assert time.monotonic() - t < 30
    assert len(rep.ingested) == 1 and not rep.unreadable
    reasons = {s["dir"]: s["reason"] for s in rep.skipped}
    assert reasons[str(root / "slash")] == "a symlink to /, which contains the root: a loop, not followed"
    assert reasons[str(root / "up")] == f"a symlink to {tmp_path}, which contains the root: a loop, not followed"


@pytest.mark.parametrize("kind", ["dead", "self", "pair"])
def test_links_that_lead_nowhere_are_reported_unreadable(kind, tmp_path, cli):
    root = tmp_path / "root"
    made = runs(root, (0, 1))
    if kind == "dead":  # a scratch disk that is not mounted
        (root / "scratch-runs").symlink_to(tmp_path / "not-mounted" / "runs")
        bad, why = root / "scratch-runs", "No such file or directory"
    elif kind == "self":
        (root / "me").symlink_to(root / "me")
        bad, why = root / "me", "Too many levels of symbolic links"
    else:
        (root / "a").symlink_to(root / "b")
        (root / "b").symlink_to(root / "a")
        bad, why = root / "a", "Too many levels of symbolic links"
    rc, out, _ = cli("ingest", "--root", root, "--db", tmp_path / "r.duckdb", "--json")
    rep = json.loads(out)
    assert rc == FAILED and sorted(rep["ingested"]) == sorted(d.name for d in made)
    item = next(u for u in rep["unreadable"] if u["dir"] == str(bad))
    assert why in item["reason"] and "runs behind it are not ingested" in item["reason"]


def test_directory_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    from costlaw.analysis.store import scan

    root = tmp_path / "root"
    [d] = runs(root, (0,))
    locked = root / "locked"
    locked.mkdir()
    real = os.scandir

    def scandir(path):  # as for a directory of another user (a test running as root could read a mode-0 one)
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(scan.os, "scandir", scandir)
    rep = ingest(root, tmp_path / "r.duckdb")
    assert rep.ingested == [d.name]
    assert rep.unreadable == [{"dir": str(locked), "run_id": None, "reason": "cannot be listed (Permission denied)"}]


def test_hidden_directories_are_not_searched(tmp_path):
    root = tmp_path / "root"
    [kept] = runs(root, (0,))
    runs(root / ".trash", (1,))
    rep = ingest(root, tmp_path / "r.duckdb")
    assert rep.ingested == [kept.name] and not (rep.skipped or rep.unreadable or rep.corrupt)


def test_fifos_and_sockets_in_the_tree_are_never_opened(tmp_path):
    import socket

    root = tmp_path / "root"
    [d] = runs(root, (0,))
    os.mkfifo(root / "runs" / "0123456789abcdef")  # named like a run, but no directory
    os.mkfifo(d / "train.log")  # a file the store does not read
    (root / "sockets").mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "sockets" / "config.json"))  # a run directory whose config.json is a socket
    try:
        rep = ingest(root, tmp_path / "r.duckdb")
    finally:
        s.close()
    assert rep.ingested == [d.name] and not rep.corrupt
    assert rep.incomplete == [{"dir": str(root / "sockets"), "run_id": None,
                               "reason": "no DONE; config.json: is a socket, not a file"}]


# ---------------------------------------------------------------- names
def test_root_that_is_a_run_directory(tmp_path, cli):
    [d] = runs(tmp_path / "a", (0,))
    rc, _, _ = cli("ingest", "--root", d, "--db", tmp_path / "r.duckdb")
    assert rc == OK and ids(tmp_path / "r.duckdb") == [d.name]
    copy = tmp_path / "copy-of-run"
    d.rename(copy)  # the same run, not under its id: the rule holds for the root too
    rc, out, _ = cli("ingest", "--root", copy, "--db", tmp_path / "s.duckdb", "--json")
    rep = json.loads(out)
    assert rc == FAILED and not rep["ingested"] and rep["corrupt"][0]["dir"] == str(copy)
    assert "is not its directory's name (copy-of-run)" in rep["corrupt"][0]["reason"]


def test_paths_that_are_not_utf8_print_and_store(tmp_path, cli):
    root = tmp_path / "root"
    odd = os.fsdecode(b"study-\xff")
    [d] = runs(root / odd, (0,))
    [m] = runs(root, (1,))
    m.rename(m.parent / os.fsdecode(b"run-\xfe"))  # misnamed, and not UTF-8
    rc, out, err = cli("ingest", "--root", root, "--db", tmp_path / "r.duckdb")
    assert rc == FAILED and "Traceback" not in err
    assert "run-\\xfe" in out and "is not its directory's name (run-\\xfe)" in out
    assert query_df(tmp_path / "r.duckdb", "SELECT source_dir FROM runs")["source_dir"].to_list() == [
        str(tmp_path / "root" / "study-\\xff" / "runs" / d.name)]


# ---------------------------------------------------------------- the results file
def _foreign(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE users (id INTEGER, name VARCHAR)")
    con.execute("INSERT INTO users VALUES (1, 'ada')")
    con.execute("CREATE VIEW v AS SELECT * FROM users")
    con.close()


@pytest.mark.parametrize("kind", ["foreign_duckdb", "foreign_with_a_lock_file", "text_file", "zero_bytes",
                                  "directory"])
def test_db_that_is_not_a_costlaw_store_is_refused_untouched(kind, tmp_path):
    root = tmp_path / "root"
    runs(root, (0,))
    db = tmp_path / "their.duckdb"
    if kind.startswith("foreign"):
        _foreign(db)
        if kind == "foreign_with_a_lock_file":  # left by an earlier refused write: checked under the lock then
            (tmp_path / "their.duckdb.lock").write_text("")
    elif kind == "text_file":
        db.write_text("name,score\nada,1\n")
    elif kind == "zero_bytes":
        db.write_bytes(b"")
    else:
        db.mkdir()
    before = None if db.is_dir() else digest(db)
    listing = sorted(os.listdir(tmp_path))
    out = subprocess.run([sys.executable, "-m", "costlaw", "ingest", "--root", str(root), "--db", str(db)],
                         capture_output=True, text=True)
    assert out.returncode == INPUT and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("costlaw ingest: error: --db: ")
    assert sorted(os.listdir(tmp_path)) == listing  # not even a lock file
    if before is not None:
        assert digest(db) == before
    if kind.startswith("foreign"):
        assert "a DuckDB file of something else (users, v; no costlaw schema_version)" in out.stderr
        with pytest.raises(CostlawError, match="something else"):
            write_fits(db, [{"law": "power", "params": {"a": 1.0}}])
        con = duckdb.connect(str(db), read_only=True)
        assert con.execute("SELECT table_name FROM duckdb_tables()").fetchall() == [("users",)]
        con.close()


# ---------------------------------------------------------------- exit status, idempotence with bad runs present
def test_headline_one_run_with_1e30_tokens_among_400(tmp_path):
    """The issue's case: one run's metrics hold a 10^30 token count; every other run ingests, that one is named."""
    root, db = tmp_path / "root", tmp_path / "r.duckdb"
    good = runs(root, range(400))
    [bad] = runs(root, (1000,))
    with open(bad / "metrics.jsonl", "a") as f:
        f.write('{"step": 21, "tokens": 1000000000000000000000000000000, "loss": 2.0}\n')
    out = subprocess.run([sys.executable, "-m", "costlaw", "ingest", "--root", str(root), "--db", str(db)],
                         capture_output=True, text=True)
    assert out.returncode == FAILED and "Traceback" not in out.stderr, out.stderr
    assert "ingested 400 (400 new, 0 replaced), unchanged 0, incomplete 0, corrupt 1" in out.stdout
    assert "metrics.jsonl: line 21: tokens: 100000...(31 digits) does not fit a 64-bit integer" in out.stdout
    assert ids(db) == sorted(d.name for d in good)
    # ingesting again changes no row: the good runs are unchanged, the bad one is reported again
    con = duckdb.connect(str(db), read_only=True)
    before = con.execute("SELECT * EXCLUDE (ingested_at) FROM runs ORDER BY run_id").fetchall()
    con.close()
    again = ingest(root, db)
    assert len(again.unchanged) == 400 and not again.ingested and [c["run_id"] for c in again.corrupt] == [bad.name]
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT * EXCLUDE (ingested_at) FROM runs ORDER BY run_id").fetchall() == before
    con.close()


def test_help_states_the_exit_status_and_the_symlink_rule():
    out = subprocess.run([sys.executable, "-m", "costlaw", "ingest", "--help"], capture_output=True, text=True)
    text = " ".join(out.stdout.split())
    assert f"{OK} every finished run under --root is in the results file" in text
    assert f"{FAILED} the good runs were committed, but some were not: a corrupt run" in text
    assert f"{INPUT} refused before writing" in text
    assert "symlinked directories (a runs/ on a scratch disk) are followed" in text
