"""`costlaw fit`: fit a scaling law to a table of runs (CSV or Parquet), per group, with bootstrap intervals
and a leave-largest-out extrapolation check.

Example (Chinchilla, Epoch's 240 rows):
  costlaw fit --data svg_extracted_data.csv --law chinchilla \\
      --assign 'D = `Training FLOP` / (6 * `Model Size`)' --where 'loss < loss.nlargest(5).min()' \\
      --x 'Model Size,D' --bootstrap 1000 --json
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.units import table


def add_arguments(p):
    src = p.add_argument_group("data")
    src.add_argument("--data", help="a CSV or Parquet table, one row per run")
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
    out.add_argument("--json", action="store_true", help="one JSON object (a list with --group-by)")


def main(args) -> int:
    if not args.list_laws:
        # Before the heavy imports, so a mistyped path fails at once.
        if not args.data:
            raise CostlawError("--data: required; give a CSV or Parquet file of runs")
        if not Path(args.data).is_file():
            raise CostlawError(f"--data: no such file {args.data!r}")
        _check_options(args)
    from costlaw.fitting import laws

    if args.list_laws:
        print(table([{"law": k, "variables": ",".join(v.variables), "params": ",".join(v.params),
                      "formula": v.formula} for k, v in sorted(laws().items())]))
        return 0
    import numpy as np

    from costlaw.fitting import bootstrap, fit, get_law, holdout_largest

    if not args.law:
        raise CostlawError("--law: required; give one of " + ", ".join(sorted(laws())))
    law = get_law(args.law)
    df = _read(args, Path(args.data))
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

    parts = [({}, df)] if not groups else [
        (dict(zip(groups, (k if isinstance(k, tuple) else (k,)))), sub)
        for k, sub in df.groupby(groups, sort=True, dropna=False)]
    from costlaw.fitting.data import prepare

    # Check every group before fitting any, so bad input fails fast with one line.
    data = []
    for g, sub in parts:
        try:
            X, y = prepare(law, sub[xcols].to_numpy(float), sub[args.y].to_numpy(float), xcols, args.y)
            if args.holdout_largest and len(y) - args.holdout_largest < len(law.params):
                raise CostlawError(f"--holdout-largest: {args.holdout_largest} of {len(y)} runs leaves fewer "
                                   f"than the {len(law.params)} parameters of {law.name} to fit; use a smaller K")
        except CostlawError as e:
            raise CostlawError(f"group {_label(g)}: {e}") if g else e from None
        data.append((g, sub, X, y))

    derived = {}
    for pt in points:
        derived[f"{args.y}@" + ",".join(f"{c}={v:g}" for c, v in zip(xcols, pt))] = (
            lambda p, pt=pt: float(law.predict(p, np.array([pt]))[0]))
    for target in args.inverse or []:
        derived[f"{xcols[0]}@{args.y}={target:g}"] = lambda p, t=target: law.inverse(p, t, strict=False)

    from costlaw.costmodel.core.progress import Progress

    log = Progress(len(data) * args.bootstrap, "bootstrap refits", "refits", every_s=None,
                   bar=None if args.bootstrap else False)
    results, plots = [], []
    for g, sub, X, y in data:
        t0 = time.perf_counter()
        res = fit(law, X, y, loss=args.loss, delta=args.delta, starts=args.starts, seed=args.seed,
                  refine=args.refine, x_names=xcols, y_name=args.y)
        out = {"group": _plain(g)} if groups else {}
        out.update(res.to_dict())
        out.update({"x": xcols, "y": args.y})
        est = {k: fn(res.params) for k, fn in {**law.derived, **derived}.items()}
        if est:
            out["derived"] = est
        boot = None
        if args.bootstrap:
            boot = bootstrap(law, X, y, res, n=args.bootstrap, seed=args.seed, derived=derived, x_names=xcols,
                             y_name=args.y, progress=lambda done, total: log.update(1))
            out.update({k: v for k, v in boot.to_dict().items() if k != "estimates"})
        if args.holdout_largest:
            by = args.holdout_by or xcols[0]
            key = by if by in xcols else sub[by].to_numpy(float)
            ho = holdout_largest(law, X, y, k=args.holdout_largest, by=key, loss=args.loss, delta=args.delta,
                                 starts=args.starts, seed=args.seed, refine=args.refine, x_names=xcols,
                                 y_name=args.y)
            out["holdout"] = ho.to_dict()
            out["holdout"]["by"] = by
        from costlaw.costmodel.core.files import clean_json

        results.append(clean_json(out))
        plots.append((_label(g), res, X, y, boot))
        if len(data) > 1 and not log.interactive:
            log.log(f"fit {_label(g) or 'all'}: {res.n_points} points, objective {res.objective:.6g}, "
                    f"{time.perf_counter() - t0:.1f}s")
    log.close()
    if args.plot:
        from costlaw.fitting.plot import plot_fits

        plot_fits(args.plot, plots, x_names=xcols, y_name=args.y)
    if args.json:
        print(json.dumps(results if groups else results[0], indent=2))
        return 0
    for i, r in enumerate(results):
        if i:
            print()
        _print_human(r, law)
    if args.plot:
        print(f"\nplot written to {args.plot}")
    return 0


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


def _read(args, path: Path):
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            df = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise CostlawError(f"--data: {path.name} is neither .csv nor .parquet; convert it or rename it")
    except CostlawError:
        raise
    except Exception as e:  # pandas/pyarrow raise many types for unreadable files
        raise CostlawError(f"--data: cannot read {path.name}: {_one_line(e)}") from None
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


def _plain(g: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in g.items()}


def _label(g: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in _plain(g).items())


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _print_human(r: dict, law) -> None:
    if "group" in r:
        print(f"group {_label(r['group'])}")
    loss = f"huber(delta={r['delta']:g})" if r["loss"] == "huber" else r["loss"]
    print(f"law {r['law']}  {r['formula']}  x {','.join(r['x'])}  y {r['y']}  loss {loss} on log residuals, summed")
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
        print(f"bootstrap: {r['n_bootstrap']} resamples of the runs, seed {r['seed']}{failed}; "
              "95% percentile intervals")
    if "holdout" in r:
        h = r["holdout"]
        print(f"holdout: fitted on {h['n_train']} runs with {h['by']} < {h['threshold']:g}, predicting the "
              f"{h['n_heldout']} largest: max |rel error| {100 * h['max_abs_rel_error']:.3g}%, "
              f"mean {100 * h['mean_abs_rel_error']:.3g}%")
        print(table([{**{c: _fmt(v) for c, v in row["x"].items()}, r["y"]: _fmt(row["y_true"]),
                      "predicted": _fmt(row["y_pred"]), "rel error %": f"{100 * row['rel_error']:+.3f}",
                      "x / max train": f"{row['extrapolation']:.3g}"} for row in h["rows"]]))
