"""IsoFLOP curves from the store: each selected run's training curve (the steps table: tokens, loss) as cumulative
training FLOPs (tokens x the run's c_train_flops_per_token) against loss, for costlaw.fitting.isoflop.

`load_curves(dbs, sql)`: `sql` selects the runs (one row per run with run_id and the N and FLOPs-per-token columns);
the steps of each run come from the store the run's row came from (with several stores, a run they share is read
from one, as analysis.store.union does). Rows with no loss or no tokens are skipped; a run left with fewer than two
logged points has no curve and is counted.
"""

from __future__ import annotations

import numpy as np

from costlaw.costmodel.core.errors import CostlawError

DEFAULT_SQL = ("SELECT run_id, params_non_embedding, c_train_flops_per_token FROM runs "
               "WHERE status = 'completed'")
STEPS_SQL = ("SELECT run_id, tokens, loss FROM steps WHERE loss IS NOT NULL AND tokens IS NOT NULL "
             "AND tokens > 0 ORDER BY run_id, step")


def load_curves(dbs, sql: str = DEFAULT_SQL, n_col: str = "params_non_embedding",
                c_col: str = "c_train_flops_per_token"):
    """(curves, notes): fitting.isoflop.Curve per selected run with a curve, and lines on what was left out."""
    from costlaw.analysis.store.frames import query_df
    from costlaw.analysis.store.union import as_list, query_stores
    from costlaw.fitting.isoflop import Curve

    dbs = as_list(dbs)
    runs = query_stores(dbs, sql)
    for col, flag in (("run_id", "--sql"), (n_col, "--n"), (c_col, "--c-per-token")):
        if col not in runs.columns:
            raise CostlawError(f"{flag}: the runs query has no {col!r} column (columns are "
                               f"{', '.join(map(str, runs.columns))}); select it")
    if runs.empty:
        raise CostlawError("--sql: the runs query returned no rows; loosen its WHERE")
    bad = runs[~(np.isfinite(runs[n_col].astype(float)) & np.isfinite(runs[c_col].astype(float)))]
    runs = runs.drop(bad.index)
    notes = [f"{len(bad)} run(s) without {n_col} or {c_col} left out"] if len(bad) else []
    curves, flat = [], 0
    for db in dbs:
        mine = runs[runs["store"] == db]
        if mine.empty:
            continue
        steps = query_df(db, STEPS_SQL, engine="pandas")
        steps = steps[steps["run_id"].isin(set(mine["run_id"]))]
        by_run = {rid: g for rid, g in steps.groupby("run_id", sort=False)}
        for row in mine.itertuples(index=False):
            rec = row._asdict()
            g = by_run.get(rec["run_id"])
            if g is None or len(g) < 2:
                flat += 1
                continue
            c = float(rec[c_col])
            curves.append(Curve(str(rec["run_id"]), float(rec[n_col]), c, g["tokens"].to_numpy(float) * c,
                                g["loss"].to_numpy(float)))
    if flat:
        notes.append(f"{flat} run(s) with fewer than 2 logged steps have no curve and are left out")
    return curves, notes
