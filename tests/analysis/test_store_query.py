"""costlaw query: read-only, refuses every write form, leaves the file byte-identical; formats, --list, waits."""

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import time

import duckdb
import pyarrow.parquet as pq
import pytest

from costlaw.analysis.store import check_sql, ingest, query_df, table_df
from costlaw.costmodel import CostlawError, preset
from costlaw.runs.config import DataConfig, RunConfig, TrainConfig
from tests.support.synth_runs import write_run


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    base = tmp_path_factory.mktemp("q")
    m = preset("gqa-3m", vocab_size=257)
    for h, kv in ((4, 1), (4, 2), (4, 4)):
        c = RunConfig(model=m.replace(n_heads=h, n_kv_heads=kv), data=DataConfig(seq_len=64),
                      train=TrainConfig(steps=10, batch_size=2))
        write_run(base / "root", c.to_dict(), steps=10, final_loss=2.0 + kv / 10)
    ingest(base / "root", base / "r.duckdb")
    return base / "r.duckdb"


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Out:
    def __init__(self, code, stdout, stderr):
        self.returncode, self.stdout, self.stderr = code, stdout, stderr


@pytest.fixture
def cli(capsys):
    """`costlaw query ARGS` in this process (the CLI's own main, so exit codes and messages are the real ones)."""
    from costlaw.cli import main

    def run(*args):
        capsys.readouterr()
        code = main(["query", *map(str, args)])
        o = capsys.readouterr()
        return Out(code, o.out, o.err)

    return run


def cli_process(*args):
    return subprocess.run([sys.executable, "-m", "costlaw", "query", *map(str, args)], capture_output=True,
                          text=True)


WRITES = {
    "drop": "DROP TABLE runs",
    "insert": "INSERT INTO runs (run_id, model_id, status) VALUES ('x', 'y', 'completed')",
    "update": "UPDATE runs SET final_loss = 0",
    "delete": "DELETE FROM steps",
    "create_table": "CREATE TABLE t AS SELECT * FROM runs",
    "create_view": "CREATE VIEW v AS SELECT 1",
    "create_macro": "CREATE MACRO m(x) AS x + 1",
    "alter": "ALTER TABLE runs ADD COLUMN z INT",
    "attach": "ATTACH '{dir}/other.duckdb' AS other",
    "detach": "DETACH memory",
    "copy_to": "COPY runs TO '{dir}/out.csv'",
    "copy_query_to": "COPY (SELECT * FROM steps) TO '{dir}/out.parquet' (FORMAT parquet)",
    "copy_from": "COPY runs FROM '{dir}/in.csv'",
    "export": "EXPORT DATABASE '{dir}/export'",
    "install": "INSTALL httpfs",
    "load": "LOAD json",
    "set": "SET threads = 1",
    "reset": "RESET threads",
    "pragma_write": "PRAGMA enable_profiling = 'json'",
    "call": "CALL pragma_version()",
    "checkpoint": "CHECKPOINT",
    "vacuum": "VACUUM",
    "begin": "BEGIN TRANSACTION",
    "use": "USE memory",
    "multi": "SELECT 1; DROP TABLE runs",
    "multi_select": "SELECT 1; SELECT 2",
    "explain_analyze_write": "EXPLAIN ANALYZE DELETE FROM steps",
    "comment_then_drop": "-- harmless\nDROP TABLE runs",
    "pivot_statement": "PIVOT runs ON n_heads USING count(*)",
}


@pytest.mark.parametrize("form", sorted(WRITES))
def test_refuses_writes_and_leaves_the_file_unchanged(form, db, tmp_path, cli):
    sql = WRITES[form].format(dir=tmp_path)
    before = digest(db)
    out = cli("--db", db, sql)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "refused" in out.stderr or "not allowed" in out.stderr or "statements given" in out.stderr
    assert digest(db) == before
    assert os.listdir(tmp_path) == []  # no file written through COPY / EXPORT / ATTACH
    with pytest.raises(CostlawError):
        check_sql(sql)


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM runs", "FROM run_summary SELECT n_heads", "DESCRIBE runs", "SHOW TABLES",
    "SUMMARIZE steps", "EXPLAIN SELECT * FROM steps", "PRAGMA table_info('runs')",
    "WITH s AS (SELECT * FROM steps) SELECT max(step) FROM s", "/* why */ SELECT 1",
])
def test_reads_are_allowed(sql, db):
    before = digest(db)
    check_sql(sql)
    assert query_df(db, sql).height >= 1
    assert digest(db) == before


def test_connection_itself_is_read_only(db):
    from costlaw.analysis.store import connect_readonly

    con = connect_readonly(db)
    try:
        with pytest.raises(duckdb.Error):
            con.execute("CREATE TABLE t (x INT)")
    finally:
        con.close()


def test_formats(db, tmp_path, cli):
    sql = "SELECT n_kv_heads, final_loss FROM run_summary ORDER BY n_kv_heads"
    t = cli("--db", db, sql)
    assert t.returncode == 0 and t.stdout.splitlines()[0].split() == ["n_kv_heads", "final_loss"]
    assert len(t.stdout.splitlines()) == 2 + 3
    c = cli("--db", db, sql, "--format", "csv")
    assert list(csv.DictReader(io.StringIO(c.stdout))) == [
        {"n_kv_heads": str(kv), "final_loss": str(2.0 + kv / 10)} for kv in (1, 2, 4)]
    j = cli("--db", db, sql, "--format", "json")
    assert json.loads(j.stdout) == [{"n_kv_heads": kv, "final_loss": 2.0 + kv / 10} for kv in (1, 2, 4)]
    out = tmp_path / "r.parquet"
    p = cli("--db", db, sql, "--format", "parquet", "--out", out)
    assert p.returncode == 0 and pq.read_table(out).to_pylist() == json.loads(j.stdout)
    e = cli("--db", db, sql, "--format", "parquet")
    assert e.returncode == 2 and "--out" in e.stderr
    same = cli("--db", db, sql, "--format", "csv", "--out", db)
    assert same.returncode == 2 and "the database itself" in same.stderr


def test_list_and_frames(db, cli):
    out = cli("--db", db, "--list")
    assert out.returncode == 0
    listed = {line.split()[0]: (line.split()[1], int(line.split()[2])) for line in out.stdout.splitlines()[2:]}
    assert listed["runs"] == ("table", 3) and listed["steps"] == ("table", 30) and listed["run_summary"] == ("view", 3)
    assert {"final_loss_by_heads", "kv_policy_evals", "position_loss", "inference", "fits"} <= set(listed)
    assert table_df(db, "run_summary", engine="pandas").shape[0] == 3
    assert query_df(db, "SELECT * FROM steps").height == 30
    with pytest.raises(CostlawError, match="engine"):
        query_df(db, "SELECT 1", engine="spark")


def test_help_documents_the_views():
    out = subprocess.run([sys.executable, "-m", "costlaw", "query", "--help"], capture_output=True, text=True)
    for view in ("run_summary", "final_loss_by_heads", "kv_policy_evals", "position_loss", "inference"):
        assert view in out.stdout
    assert "read the results file and nothing else" in out.stdout and "external access off" in out.stdout


def test_missing_db_and_bad_sql_are_one_line_errors(db, tmp_path):
    out = cli_process("--db", tmp_path / "none.duckdb", "SELECT 1")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no such results file" in out.stderr
    assert not (tmp_path / "none.duckdb").exists()
    out = cli_process("--db", db, "SELECT nope FROM runs")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "SQL:" in out.stderr


HOLD = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def test_waits_for_a_running_writer_then_gives_a_clear_error(db):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db), "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t = time.monotonic()
        out = cli_process("--db", db, "SELECT 1", "--wait", "0.5")
        assert out.returncode == 2 and out.stderr.count("\n") == 1
        assert "locked by an ingest" in out.stderr and f"PID {holder.pid}" in out.stderr
        assert time.monotonic() - t < 15
    finally:
        holder.kill()
        holder.wait()


def test_bounded_retry_succeeds_when_the_writer_finishes(db):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db), "1.0"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        out = cli_process("--db", db, "SELECT count(*) AS n FROM runs", "--format", "json", "--wait", "20")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == [{"n": 3}]
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("sql", ["SELECT * FROM query('DROP TABLE runs')",
                                 "SELECT * FROM query('SELECT 1; DELETE FROM steps')"])
def test_writes_hidden_in_a_select_fail_and_change_nothing(sql, db, cli):
    before = digest(db)
    out = cli("--db", db, sql)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "SQL:" in out.stderr
    assert digest(db) == before


def test_time_zone_values_print_as_text(db, cli):
    out = cli("--db", db, "SELECT TIMESTAMPTZ '2026-01-02 03:04:05+00' AS t, 1 AS x", "--format", "json")
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)
    assert row["x"] == 1 and isinstance(row["t"], str) and row["t"].startswith("2026-01-0")  # in the local zone


# ---------------------------------------------------------------- local files, errors while fetching
FILE_READS = {
    "read_csv": "SELECT * FROM read_csv('{secret}')",
    "replacement_scan": "SELECT * FROM '{secret}'",
    "read_text": "SELECT * FROM read_text('{secret}')",
    "read_blob": "SELECT * FROM read_blob('{secret}')",
    "read_json": "SELECT * FROM read_json_auto('{secret}')",
    "sniff_csv": "SELECT * FROM sniff_csv('{secret}')",
    "glob": "SELECT * FROM glob('{dir}/*')",
    "read_parquet": "SELECT * FROM read_parquet('{dir}/*.parquet')",
    "passwd": "SELECT * FROM read_csv('/etc/passwd', sep = ':')",
}


@pytest.mark.parametrize("form", sorted(FILE_READS))
def test_queries_read_no_file_but_the_results(form, db, tmp_path, cli):
    secret = tmp_path / "secret.csv"
    secret.write_text("token\nhunter2\n")
    out = cli("--db", db, FILE_READS[form].format(secret=secret, dir=tmp_path), "--format", "csv")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "SQL: Permission Error" in out.stderr and "hunter2" not in out.stdout + out.stderr
    with pytest.raises(CostlawError, match="Permission Error"):
        query_df(db, FILE_READS[form].format(secret=secret, dir=tmp_path))


@pytest.mark.parametrize("sql,says", [
    ("SELECT cast('x' AS INTEGER) AS v", "Could not convert string 'x'"),
    ("SELECT error('boom') AS v", "boom"),
    ("SELECT * FROM force_checkpoint()", "CHECKPOINT"),
    ("SELECT CASE WHEN step > 5 THEN cast('y' AS DOUBLE) END FROM steps", "Could not convert string 'y'"),
])
@pytest.mark.parametrize("fmt", ["table", "json", "csv", "parquet"])
def test_errors_while_rows_are_fetched_are_one_line(sql, says, fmt, db, tmp_path):
    extra = ["--out", tmp_path / "o.parquet"] if fmt == "parquet" else []
    out = cli_process("--db", db, sql, "--format", fmt, *extra)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("costlaw query: error: SQL: ") and says in out.stderr
    assert not (tmp_path / "o.parquet").exists()
    for engine in ("polars", "pandas"):
        with pytest.raises(CostlawError, match="SQL: "):
            query_df(db, sql, engine=engine)


def test_values_no_format_holds_are_one_line(db, tmp_path, cli):
    out = cli("--db", db, "SELECT INTERVAL 3 MONTH AS i", "--format", "parquet", "--out", tmp_path / "o.parquet")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "cast that column to VARCHAR" in out.stderr
    with pytest.raises(CostlawError, match="could not be converted"):
        query_df(db, "SELECT union_value(k := 1) AS u")
    j = cli("--db", db, "SELECT 'NaN'::DOUBLE AS n, 'infinity'::DOUBLE AS i, 1.5::DOUBLE AS x", "--format", "json")
    assert j.returncode == 0 and json.loads(j.stdout) == [{"n": None, "i": None, "x": 1.5}]  # strict JSON
