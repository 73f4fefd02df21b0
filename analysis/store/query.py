"""Read-only access to the results database: a read-only connection plus a statement check.

A read-only DuckDB connection cannot change the database file, but it can still write other files
(COPY ... TO, EXPORT DATABASE), attach databases, install extensions or change settings. So every SQL
text is first split by DuckDB's own parser (`extract_statements`) and refused unless it is exactly one
SELECT (which covers FROM-first queries, DESCRIBE, SHOW and SUMMARIZE), an EXPLAIN of one, or a PRAGMA
from a short list of read-only ones.

The connection also has DuckDB's external access turned off (`enable_external_access = false`, locked): a
query reads the results file and nothing else, so `read_csv('/etc/passwd')`, `glob('~/*')`, `read_text`,
`ATTACH` and extension loading all fail. A statement pasted from a report or a colleague therefore cannot
read the files of whoever runs it. To join the results with another file, load both in Python (`query_df`
gives a polars or pandas frame) or open the file with duckdb yourself.

Errors raised while rows are fetched (a failed cast, `error('boom')`, a value Python cannot hold) are
one-line `SQL:` errors like those raised while planning.
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path

import duckdb

from costlaw.analysis.store.lock import DEFAULT_WAIT_S, connect
from costlaw.analysis.store.schema import check_not_newer, version
from costlaw.costmodel.core.errors import CostlawError

READ_ONLY_PRAGMAS = {"show_tables", "show_tables_expanded", "table_info", "show", "database_size", "version",
                     "platform", "database_list", "storage_info", "functions", "collations"}
_EXPLAIN = re.compile(r"^\s*explain\s+(analyze\s+)?", re.IGNORECASE)
_COMMENT = re.compile(r"^\s*(--[^\n]*(\n|$)|/\*.*?\*/)", re.DOTALL)
_PRAGMA = re.compile(r"^\s*pragma\s+([A-Za-z_][A-Za-z0-9_]*)\s*(\(|;|$)", re.IGNORECASE)
_HINT = "costlaw query is read-only; the database is written only by costlaw ingest"


def _strip_comments(sql: str) -> str:
    while True:
        m = _COMMENT.match(sql)
        if not m:
            return sql
        sql = sql[m.end():]


def check_sql(sql: str, con=None) -> None:
    """Raise CostlawError unless `sql` is one read-only statement (see the module doc)."""
    con = con or duckdb.connect(":memory:")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise CostlawError(f"SQL: {str(e).splitlines()[0]}; fix the query") from None
    if not statements:
        raise CostlawError("SQL: no statement given; pass one SELECT, e.g. \"SELECT * FROM run_summary\"")
    if len(statements) > 1:
        raise CostlawError(f"SQL: {len(statements)} statements given; pass exactly one read-only statement")
    st = statements[0]
    kind = st.type
    if kind == duckdb.StatementType.SELECT:
        return
    text = _strip_comments(st.query)
    if kind == duckdb.StatementType.EXPLAIN:
        m = _EXPLAIN.match(text)
        if m is None:
            raise CostlawError(f"SQL: cannot read this EXPLAIN; {_HINT}")
        check_sql(text[m.end():], con)  # EXPLAIN ANALYZE runs its statement: check that statement too
        return
    if kind == duckdb.StatementType.PRAGMA:
        m = _PRAGMA.match(text)
        if m and m.group(1).lower() in READ_ONLY_PRAGMAS:
            return
        raise CostlawError(f"SQL: PRAGMA {m.group(1) if m else ''} is not allowed (only "
                           f"{', '.join(sorted(READ_ONLY_PRAGMAS))}); {_HINT}")
    name = kind.name.replace("_", " ")
    raise CostlawError(f"SQL: {name} statements are refused; {_HINT}")


def existing_db(db) -> Path:
    """`db` as a Path, or a one-line error naming --db when no results file is there."""
    p = Path(db)
    if not p.is_file():
        raise CostlawError(f"--db: no such results file {str(p)!r}; create it with costlaw ingest --root DIR --db {p}")
    return p


READ_ONLY_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                    "enable_external_access": False, "lock_configuration": True}


def connect_readonly(db, wait: float = DEFAULT_WAIT_S):
    """A read-only DuckDB connection to `db`, retrying for up to `wait` s while an ingest holds it.
    It reads no other file (external access off), loads no extension, and its configuration is locked."""
    p = existing_db(db)
    con = connect(p, read_only=True, wait=wait, config=dict(READ_ONLY_CONFIG))
    try:
        check_not_newer(version(con), p)
    except CostlawError:
        con.close()
        raise
    return con


@contextlib.contextmanager
def sql_errors():
    """Errors of running a statement or fetching its rows as one-line `SQL:` errors. DuckDB evaluates lazily, so
    a failing cast or `error()` surfaces only when rows are fetched; converting a value to Python or Arrow can
    fail too (a date before year 1, a type the frame library lacks)."""
    try:
        yield
    except duckdb.Error as e:
        raise CostlawError(f"SQL: {_first_line(e)}; fix the query (costlaw query --db FILE --list shows the "
                           "tables and views)") from None
    except CostlawError:
        raise
    except Exception as e:
        if not isinstance(e, _conversion_errors()):
            raise
        raise CostlawError(f"SQL: a result value could not be converted ({type(e).__name__}: {_first_line(e)}); "
                           "cast that column to VARCHAR") from None


def _conversion_errors() -> tuple:
    """What converting a result to Python, Arrow, polars or pandas raises for a value it cannot hold; the frame
    libraries are looked up only if already imported, so `costlaw query` does not load them to check."""
    out: list = [ValueError, OverflowError, TypeError, NotImplementedError, KeyError]
    for module, name in (("polars.exceptions", "PolarsError"), ("pyarrow.lib", "ArrowException")):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, name):
            out.append(getattr(mod, name))
    return tuple(out)


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def execute(con, sql: str):
    """Check `sql`, run it on `con`, return it as a DuckDB relation (.pl(), .df(), .to_arrow_table()): fetch
    from it inside `sql_errors()`."""
    check_sql(sql, con)
    with sql_errors():
        rel = con.sql(sql)
        if rel is None:  # a PRAGMA that returns nothing
            rel = con.sql("SELECT NULL AS result WHERE false")
        return rel


def query_arrow(db, sql: str, wait: float = DEFAULT_WAIT_S):
    """The result of one read-only statement as a pyarrow Table."""
    con = connect_readonly(db, wait)
    try:
        rel = execute(con, sql)
        with sql_errors():
            return rel.to_arrow_table()
    finally:
        con.close()


def query_rows(db, sql: str, wait: float = DEFAULT_WAIT_S) -> tuple[list[str], list[tuple]]:
    """The result of one read-only statement as (column names, rows of Python values)."""
    con = connect_readonly(db, wait)
    try:
        rel = execute(con, sql)
        with sql_errors():
            types = [str(t) for t in rel.types]
            if any("WITH TIME ZONE" in t for t in types):  # Python values for these need pytz: print them as text
                rel = rel.project(", ".join(
                    f'CAST({_ident(c)} AS VARCHAR) AS {_ident(c)}' if "WITH TIME ZONE" in t else _ident(c)
                    for c, t in zip(rel.columns, types)))
            return list(rel.columns), rel.fetchall()
    finally:
        con.close()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def list_objects(db, wait: float = DEFAULT_WAIT_S) -> list[dict]:
    """Tables and views of the results file with their row counts, and the schema version."""
    con = connect_readonly(db, wait)
    try:
        with sql_errors():
            objs = con.execute("""
                SELECT table_name AS name, 'table' AS kind FROM duckdb_tables()
                 WHERE database_name = current_database() AND schema_name = 'main' AND NOT temporary
                UNION ALL
                SELECT view_name, 'view' FROM duckdb_views()
                 WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal
                   AND NOT temporary
                ORDER BY kind, name""").fetchall()
            out = []
            for name, kind in objs:
                n = con.execute(f"SELECT count(*) FROM {_ident(name)}").fetchall()[0][0]
                out.append({"name": name, "kind": kind, "rows": n})
            return out
    finally:
        con.close()
