"""Several stores read as one: a ladder spread over studies is fitted without hand-merged files.

`query_stores(dbs, sql)` runs one read-only statement on each store and stacks the results, adding a `store`
column (the file each row came from). A run that several stores hold (the same run id: the same config, seed
and stage) is kept once, from the store where its DONE is newest (`done_mtime_ns`, when the statement selects
it), else from the first store that holds it: a run is one measurement, however many files record it.
"""

from __future__ import annotations

from pathlib import Path

from costlaw.analysis.store.frames import query_df
from costlaw.costmodel.core.errors import CostlawError


def as_list(db) -> list[str]:
    """One --db or several (a list, or a repeated flag) as a list of paths, each given once."""
    dbs = [db] if isinstance(db, (str, Path)) else list(db or [])
    if not dbs:
        raise CostlawError("--db: required; give a results file (repeat --db to read several)")
    out: list[str] = []
    for d in map(str, dbs):
        if str(Path(d).resolve()) in {str(Path(o).resolve()) for o in out}:
            raise CostlawError(f"--db: {d!r} is given twice; give each results file once")
        out.append(d)
    return out


def query_stores(dbs, sql: str):
    """The statement's rows from every store (pandas), with a `store` column; duplicate run ids kept once."""
    import pandas as pd

    dbs = as_list(dbs)
    frames = []
    for db in dbs:
        df = query_df(db, sql, engine="pandas")
        df.insert(len(df.columns), "store", db)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(dbs) > 1 and "run_id" in df.columns and len(df):
        order = df["done_mtime_ns"].fillna(-1) if "done_mtime_ns" in df.columns else -pd.Series(df.index, df.index)
        keep = df.assign(_order=order).sort_values("_order", ascending=False, kind="stable")
        df = keep.drop_duplicates("run_id").drop(columns="_order").sort_index()
    return df.reset_index(drop=True)
