"""`costlaw fit`: fit a scaling law to a table of runs (CSV or Parquet, or a read-only query of a results file),
per group, with bootstrap intervals and a leave-largest-out extrapolation check, through the one group-fit
pipeline (analysis/fits) that recommend and report use. The output (--json, --out) is the one fits format
"costlaw-fits/1", which `costlaw recommend --fits` reads; with --db the fits also go to the store's fits table,
keyed by a fingerprint of the runs, points, options and fitter, where `costlaw recommend --db` and `costlaw report`
find and reuse any fit of the same runs made the same way.

Example (Chinchilla, Epoch's 240 rows):
  costlaw fit --data svg_extracted_data.csv --law chinchilla \\
      --assign 'D = `Training FLOP` / (6 * `Model Size`)' --where 'loss < loss.nlargest(5).min()' \\
      --x 'Model Size,D' --bootstrap 1000 --json

Example (a store's laws, exactly as `costlaw recommend --db results.duckdb --bootstrap 100` fits them when every
run is a GQA pretraining run at one seq_len, so that recommend then reuses them instead of fitting):
  costlaw fit --db results.duckdb --law gqa-size --x params_non_embedding --group-by n_heads,n_kv_heads,head_dim \\
      --sql "SELECT run_id, n_heads, n_kv_heads, head_dim, params_non_embedding,
                    coalesce(val_loss, final_loss) AS loss FROM runs WHERE status = 'completed'" --bootstrap 100
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.units import table


def add_arguments(p):
    src = p.add_argument_group("data (--data, or --db with --sql)")
    src.add_argument("--data", help="a CSV or Parquet table, one row per run")
    src.add_argument("--db", help="a results file (costlaw ingest): read the rows with --sql, and store the fits in "
                                  "its fits table")
    src.add_argument("--sql", metavar="SELECT",
                     help="with --db: one read-only query giving one row per run with a run_id column, e.g. "
                          "\"SELECT * FROM run_summary WHERE family = 'gqa'\"")
    src.add_argument("--assign", action="append", metavar="NAME=EXPR",
                     help="add a column (pandas eval syntax, backquote names with spaces), before --where; "
                          "repeatable. E.g. 'D = `Training FLOP` / (6 * `Model Size`)'")
    src.add_argument("--where", metavar="EXPR",
                     help="row filter in pandas query syntax, e.g. 'n_kv_heads <= 4 and loss < 5'")
    src.add_argument("--group-by", metavar="COL[,COL]", help="one fit per group, e.g. n_heads,n_kv_heads")
    law = p.add_argument_group("law")
    law.add_argument("--law", help="power-plus-constant | gqa-size | chinchilla | compute | linear (see --list-laws)")
    law.add_argument("--list-laws", action="store_true", help="print the registered laws and exit")
    law.add_argument("--x", metavar="COL[,COL]",
                     help="columns for the law's variables, in order (default: the variables' own names)")
    law.add_argument("--y", default="loss", metavar="COL", help="the loss column (default loss)")
    fitg = p.add_argument_group("fit")
    fitg.add_argument("--loss", default="huber", choices=["huber", "l2", "l1"],
                      help="on log residuals, summed (default huber)")
    fitg.add_argument("--delta", type=float, default=1e-3, help="Huber delta (default 1e-3)")
    fitg.add_argument("--starts", type=int, help="number of starts (default: the law's grid; 4500 for chinchilla)")
    fitg.add_argument("--refine", type=int, default=10, help="best distinct starts refined by L-BFGS-B (default 10)")
    fitg.add_argument("--seed", type=int, default=0, help="seed for random starts and bootstrap resamples")
    unc = p.add_argument_group("uncertainty and validation")
    unc.add_argument("--bootstrap", type=int, default=0, metavar="K", help="K bootstrap refits (resampling runs)")
    unc.add_argument("--holdout-largest", type=int, metavar="K",
                     help="also fit without the K largest runs and report their prediction errors")
    unc.add_argument("--holdout-by", metavar="COL",
                     help="rank runs by this variable or column (default: the first --x column)")
    unc.add_argument("--predict", action="append", metavar="X[,X]",
                     help="report the predicted y at this point (one value per variable); repeatable")
    unc.add_argument("--inverse", action="append", type=float, metavar="Y",
                     help="report the x at which a one-variable law reaches y (e.g. N* for a target loss); "
                          "repeatable")
    out = p.add_argument_group("output")
    out.add_argument("--plot", metavar="FILE.png", help="data, fitted curve and bootstrap band")
    out.add_argument("--json", action="store_true",
                     help="print the fits document (format costlaw-fits/1, one entry per group) instead of tables")
    out.add_argument("--out", metavar="FILE.json", help="also write the fits document here")


def main(args) -> int:
    if not args.list_laws:
        _check_source(args)  # before the heavy imports, so a mistyped path fails at once
        _check_options(args)
    from costlaw.fitting import laws

    if args.list_laws:
        print(table([{"law": k, "variables": ",".join(v.variables), "params": ",".join(v.params),
                      "formula": v.formula} for k, v in sorted(laws().items())]))
        return 0
    import numpy as np

    from costlaw.analysis.fits import FitOptions, fit_groups, header, make_groups, split
    from costlaw.fitting import get_law

    if not args.law:
        raise CostlawError("--law: required; give one of " + ", ".join(sorted(laws())))
    law = get_law(args.law)
    df, runs, source = _rows(args)
    xcols = _columns(args.x, "--x") if args.x else list(law.variables)
    if len(xcols) != len(law.variables):
        raise CostlawError(f"--x: law {law.name} has {len(law.variables)} variable(s) "
                           f"({', '.join(law.variables)}), got {len(xcols)} column(s); give one column per variable")
    groups = _columns(args.group_by, "--group-by") if args.group_by else []
    for flag, cols in (("--x", xcols), ("--y", [args.y]), ("--group-by", groups)):
        _check_columns(df, cols, flag, numeric=flag != "--group-by")
    if args.holdout_by is not None:
        _check_columns(df, [args.holdout_by], "--holdout-by", numeric=True)
    points = [_point(s, law) for s in args.predict or []]
    if args.inverse and len(law.variables) != 1:
        raise CostlawError(f"--inverse: law {law.name} has {len(law.variables)} variables; inverse needs one")

    derived = {}
    for pt in points:
        derived[f"{args.y}@" + ",".join(f"{c}={v:g}" for c, v in zip(xcols, pt))] = (
            lambda p, pt=pt: float(law.predict(p, np.array([pt]))[0]))
    for target in args.inverse or []:
        derived[f"{xcols[0]}@{args.y}={target:g}"] = lambda p, t=target: law.inverse(p, t, strict=False)
    options = FitOptions(law=law.name, x=tuple(xcols), y=args.y, loss=args.loss, delta=args.delta,
                         starts=args.starts, refine=args.refine, seed=args.seed, bootstrap=args.bootstrap,
                         holdout_largest=args.holdout_largest, holdout_by=args.holdout_by, derived=tuple(derived))
    # Check every group before fitting any, so bad input fails fast with one line.
    parts = make_groups(split(df, groups), options, runs=runs)

    from costlaw.costmodel.core.progress import Progress

    log = Progress(len(parts) * options.bootstrap, "bootstrap refits", "refits", every_s=None,
                   bar=None if options.bootstrap else False)
    t0 = time.perf_counter()
    say = log.log if len(parts) > 1 and not log.interactive else None
    fits = fit_groups(parts, options, derived=derived, say=say, tick=lambda: log.update(1))
    log.close()
    if say:
        print(f"{len(fits)} groups fitted in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    doc = {**header(options, source), "candidates": [f.entry for f in fits]}
    done = []
    if args.plot:
        from costlaw.fitting.plot import plot_fits

        plot_fits(args.plot, [(f.group.label, f.result, f.group.X, f.group.y, f.boot) for f in fits],
                  x_names=xcols, y_name=args.y)
        done.append(f"plot written to {args.plot}")
    if args.out:
        from costlaw.costmodel.core.files import write_atomic

        write_atomic(Path(args.out), json.dumps(doc, indent=1) + "\n")
        done.append(f"fits written to {args.out}")
    if args.db:
        from costlaw.analysis.fits import store

        try:
            ids = store(args.db, doc, source_query=args.sql)
        except OSError as e:
            raise CostlawError(f"--db: cannot write {args.db}'s fits table ({e}); give a results file you can "
                               "write, or --out FILE instead") from None
        done.append(f"{len(ids)} fit(s) stored in {args.db}'s fits table (costlaw recommend --db and costlaw report "
                    "reuse those of the same runs and options)")
    if args.json:
        print(json.dumps(doc, indent=1))
        for line in done:
            print(line, file=sys.stderr)
        return 0
    for i, entry in enumerate(doc["candidates"]):
        if i:
            print()
        _print_human(entry, doc)
    if done:
        print()
    for line in done:
        print(line)
    return 0


def _check_source(args) -> None:
    if args.data and args.db:
        raise CostlawError("--db: reads rows from a results file, --data from a table; give one of them")
    if args.db:
        if not args.sql:
            raise CostlawError("--sql: required with --db; give one SELECT returning one row per run with run_id, "
                               "e.g. \"SELECT * FROM run_summary\"")
        from costlaw.analysis.store.query import existing_db

        existing_db(args.db)
    elif args.sql:
        raise CostlawError("--sql: queries a results file; give --db RESULTS.duckdb too")
    elif not args.data:
        raise CostlawError("--data: required; give a CSV or Parquet file of runs, or --db RESULTS.duckdb with --sql")
    elif not Path(args.data).is_file():
        raise CostlawError(f"--data: no such file {args.data!r}")


def _check_options(args) -> None:
    if args.bootstrap and args.bootstrap < 2:
        raise CostlawError(f"--bootstrap: need at least 2 resamples, got {args.bootstrap}")
    if args.holdout_largest is not None and args.holdout_largest < 1:
        raise CostlawError(f"--holdout-largest: must be >= 1, got {args.holdout_largest}")
    for flag, value in (("--starts", args.starts), ("--refine", args.refine)):
        if value is not None and value < 1:
            raise CostlawError(f"{flag}: must be >= 1, got {value}")
    if not args.delta > 0:
        raise CostlawError(f"--delta: must be > 0, got {args.delta}; the convention is 1e-3")
    if args.plot:
        plot = Path(args.plot)
        if plot.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
            raise CostlawError(f"--plot: {plot.name} needs a .png, .pdf, .svg or .jpg suffix")
        if not plot.parent.is_dir():
            raise CostlawError(f"--plot: no directory {str(plot.parent)!r}; create it first")
    if args.out and not Path(args.out).parent.is_dir():
        raise CostlawError(f"--out: no directory {str(Path(args.out).parent)!r}; create it first")


def _rows(args):
    """(rows after --assign and --where, run_id -> ingest fingerprint or None, where the rows came from)."""
    if args.db:
        df, runs = _query(args.db, args.sql)
        source = f"store {args.db}: {' '.join(args.sql.split())}"
    else:
        df, runs, source = _read(Path(args.data)), None, str(args.data)
    return _filter(args, df), runs, source


def _query(db, sql: str):
    from costlaw.analysis.store import query_df, query_rows

    try:
        df = query_df(db, sql, engine="pandas")
    except CostlawError as e:
        msg = str(e)
        raise CostlawError("--sql: " + msg.removeprefix("SQL: ") if msg.startswith("SQL: ") else msg) from None
    if "run_id" not in df.columns:
        raise CostlawError(f"--sql: the result has no run_id column (columns are {_cols(df)}); select run_id too, "
                           "so each stored fit names the runs it was fitted on")
    if df.empty:
        raise CostlawError("--sql: the query returned no rows; loosen its WHERE")
    _, rows = query_rows(db, "SELECT run_id, fingerprint FROM runs")
    return df, dict(rows)


def _read(path: Path):
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except Exception as e:  # pandas/pyarrow raise many types for unreadable files
        raise CostlawError(f"--data: cannot read {path.name}: {_one_line(e)}") from None
    raise CostlawError(f"--data: {path.name} is neither .csv nor .parquet; convert it or rename it")


def _filter(args, df):
    import pandas as pd

    for expr in args.assign or []:
        if "=" not in expr:
            raise CostlawError(f"--assign: {expr!r} is not NAME = EXPR")
        try:
            df = df.eval(expr)
        except Exception as e:
            raise CostlawError(f"--assign: {expr!r}: {_one_line(e)}; columns are {_cols(df)}") from None
        if not isinstance(df, pd.DataFrame):
            raise CostlawError(f"--assign: {expr!r} is an expression, not an assignment; write NAME = EXPR")
    if args.where:
        try:
            df = df.query(args.where)
        except Exception as e:
            raise CostlawError(f"--where: {args.where!r}: {_one_line(e)}; columns are {_cols(df)} "
                               "(backquote names with spaces)") from None
        if df.empty:
            raise CostlawError(f"--where: {args.where!r} keeps no rows; loosen the filter")
    return df


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}"


def _cols(df) -> str:
    return ", ".join(map(str, df.columns))


def _columns(spec: str, flag: str) -> list[str]:
    cols = [c.strip() for c in spec.split(",")]
    if not all(cols):
        raise CostlawError(f"{flag}: {spec!r} has an empty column name; write COL[,COL]")
    return cols


def _check_columns(df, cols, flag, numeric: bool):
    import pandas as pd

    for c in cols:
        if c not in df.columns:
            raise CostlawError(f"{flag}: unknown column {c!r}; columns are {_cols(df)}")
        if numeric and not pd.api.types.is_numeric_dtype(df[c]):
            raise CostlawError(f"{flag}: column {c!r} is not numeric ({df[c].dtype}); pick a numeric column")


def _point(spec: str, law) -> list[float]:
    try:
        vals = [float(v) for v in spec.split(",")]
    except ValueError:
        raise CostlawError(f"--predict: {spec!r} is not comma-separated numbers") from None
    if len(vals) != len(law.variables):
        raise CostlawError(f"--predict: {spec!r} has {len(vals)} value(s); {law.name} needs one per variable "
                           f"({', '.join(law.variables)})")
    return vals


def _label(g: dict) -> str:
    from costlaw.analysis.fits import label_of

    return label_of(g)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _print_human(r: dict, doc: dict) -> None:
    """One group's entry of the fits document as text."""
    opts = doc["options"]
    if r.get("group"):
        print(f"group {_label(r['group'])}")
    loss = f"huber(delta={opts['delta']:g})" if opts["loss"] == "huber" else opts["loss"]
    print(f"law {doc['law']}  {doc['formula']}  x {','.join(doc['x'])}  y {doc['y']}  loss {loss} on log residuals, "
          "summed")
    state = "converged" if r["success"] else f"NOT CONVERGED ({r['message']})"
    # Repeated x (seeds) cap R² below 1 whatever the law: show the cap so R² is read against it.
    ceiling = f" (ceiling {_fmt(r['r2_ceiling'])} from repeated x)" if r.get("r2_ceiling") is not None else ""
    print(f"points {r['n_points']}  objective {_fmt(r['objective'])}  |grad| {r['grad_norm']:.2g}  "
          f"R² {_fmt(r['r2'])}{ceiling}  starts {r['n_starts']} ({r['n_refined']} refined, {r['n_at_best']} at best)  "
          f"{state}")
    rows = []
    values = {**r["params"], **r.get("derived", {})}
    for k, v in values.items():
        row = {"": k, "value": _fmt(v) if v is not None else "inf/undefined"}
        if "stderr" in r:
            lo, hi = r["ci95"][k]
            row.update({"stderr": _fmt(r["stderr"][k]), "ci95 lo": _fmt(lo), "ci95 hi": _fmt(hi)})
        rows.append(row)
    print(table(rows))
    if "stderr" in r:
        failed = f", {r['n_failed']} did not converge" if r["n_failed"] else ""
        print(f"bootstrap: {r['n_bootstrap']} resamples of the runs, seed {opts['seed']}{failed}; "
              "95% percentile intervals")
    if "holdout" in r:
        h = r["holdout"]
        print(f"holdout: fitted on {h['n_train']} runs with {h['by']} < {h['threshold']:g}, predicting the "
              f"{h['n_heldout']} largest: max |rel error| {100 * h['max_abs_rel_error']:.3g}%, "
              f"mean {100 * h['mean_abs_rel_error']:.3g}%")
        print(table([{**{c: _fmt(v) for c, v in row["x"].items()}, doc["y"]: _fmt(row["y_true"]),
                      "predicted": _fmt(row["y_pred"]), "rel error %": f"{100 * row['rel_error']:+.3f}",
                      "x / max train": f"{row['extrapolation']:.3g}"} for row in h["rows"]]))
