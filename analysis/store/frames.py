"""Polars / pandas frames from the same read-only, checked queries that `costlaw query` runs."""

from __future__ import annotations

from costlaw.analysis.store.lock import DEFAULT_WAIT_S
from costlaw.analysis.store.query import connect_readonly, execute, sql_errors
from costlaw.costmodel.core.errors import CostlawError

ENGINES = ("polars", "pandas")


def query_df(db, sql: str, engine: str = "polars", wait: float = DEFAULT_WAIT_S):
    """One read-only statement's result as a polars (default) or pandas DataFrame."""
    if engine not in ENGINES:
        raise CostlawError(f"engine: {engine!r} is not one of {', '.join(ENGINES)}; choose polars or pandas")
    con = connect_readonly(db, wait)
    try:
        result = execute(con, sql)
        with sql_errors():
            return result.pl() if engine == "polars" else result.df()
    finally:
        con.close()


def table_df(db, name: str, engine: str = "polars", wait: float = DEFAULT_WAIT_S):
    """A whole table or view (e.g. "run_summary") as a DataFrame."""
    if not name.replace("_", "").isalnum():
        raise CostlawError(f"name: {name!r} is not a table or view name; see costlaw query --db FILE --list")
    return query_df(db, f'SELECT * FROM "{name}"', engine, wait)
