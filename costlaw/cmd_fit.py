"""`costlaw fit`: fit a scaling law to a table of runs (CSV, Parquet, JSON lines, or a read-only query of one or more
results files), per group, with bootstrap intervals and a held-out extrapolation check, through the one group-fit
pipeline (analysis/fits) that recommend and report use. Any law: a registered one (--law), a formula (--formula) or
a Python file (--law-file); log or raw residuals, weights, fixed/tied/bounded parameters, given starts, the
objective at given parameters (--eval-at), variable projection (--method varpro). The output (--json, --out) is the
one fits format "costlaw-fits/1", which `costlaw recommend --fits` reads; with one --db the fits also go to the
store's fits table, keyed by a fingerprint of the runs, points, options and fitter, where `costlaw recommend --db`
and `costlaw report` find and reuse any fit of the same runs made the same way. Examples: EPILOG below.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.units import table

EPILOG = """\
expressions (--formula, --assign, --where, --holdout-where) are costlaw's one expression language, never eval()
(costmodel/core/expr.py states it; `costlaw sweep --where` reads the same): numbers, column and parameter names
(`Training FLOP` quotes a name with spaces), + - * / // % **, comparisons, and/or/not, 'a if c else b', strings in
comparisons ('completed'), and here the functions exp, log, log2, log10, sqrt, abs, minimum, maximum,
where(c, a, b); --where/--assign/--holdout-where add largest(x, k) and smallest(x, k) (the k-th largest / smallest
value of a column, as sorted(x)[-k]).

examples:
  # Chinchilla (Epoch's 240 rows: the five largest losses dropped), Approach 3 with 1,000 bootstrap refits
  costlaw fit --data svg_extracted_data.csv --law chinchilla \\
      --assign 'D = `Training FLOP` / (6 * `Model Size`)' --where 'loss < largest(loss, 5)' \\
      --x 'Model Size,D' --bootstrap 1000 --json
  # the same law as a formula (fitted in the same log-sum-exp form, because it is a sum of power terms), and a figure
  costlaw fit --data runs.csv --formula 'E + A/N**alpha + B/D**beta' --x N,D --plot fit.png
  # a law from a Python file that defines laws with the public API (fitting.Law / LSELaw / formula_law)
  costlaw fit --data runs.csv --law-file laws.py --law pure-power --x N
  # a rising accuracy curve: raw residuals (y may be <= 0), least squares, curve_fit's sigma as weights 1/sigma^2
  costlaw fit --data acc.csv --formula 'top - A*C**(-alpha)' --x C --y acc --residuals raw --loss l2 \\
      --assign 'w = 1/acc_std**2' --weights w --init top=0.9,A=5,alpha=0.2
  # fix E, tie the exponents, bound alpha, start A at 400, 200 random starts in a box
  costlaw fit --data runs.csv --law chinchilla --x N,D --fix E=1.69 --tie beta=alpha --bounds alpha=0:1 \\
      --init A=400 --random-starts 200 --start-box A=10:1e4 --start-box B=10:1e4
  # Hoffmann et al.'s published parameters on these data: objective, R², predictions (no fit)
  costlaw fit --data runs.csv --law chinchilla --x N,D --eval-at A=406.4,B=410.7,E=1.69,alpha=0.34,beta=0.28
  # seeds of one config resampled together; hold out the 1e21-FLOP runs; keep each (N, D)'s best learning rate
  costlaw fit --data sweep.csv --law chinchilla --x N,D --best-of loss --by N,D --bootstrap 1000 \\
      --bootstrap-by config --holdout-where 'C >= 1e21'
  # several results files fitted as one ladder; variable projection instead of the joint start grid
  costlaw fit --db a.duckdb --db b.duckdb --sql "SELECT run_id, params_non_embedding, val_loss AS loss \\
      FROM runs WHERE status = 'completed'" --law gqa-size --x params_non_embedding --method varpro
  # a store's laws, exactly as `costlaw recommend --db results.duckdb --bootstrap 100` fits them (one seq_len)
  costlaw fit --db results.duckdb --law gqa-size --x params_non_embedding --group-by n_heads,n_kv_heads,head_dim \\
      --sql "SELECT run_id, n_heads, n_kv_heads, head_dim, params_non_embedding,
                    coalesce(val_loss, final_loss) AS loss FROM runs WHERE status = 'completed'" --bootstrap 100
"""


def add_arguments(p):
    from costlaw import options

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    src = p.add_argument_group("data (--data, or --db with --sql)")
    src.add_argument("--data", help="a table, one row per run: .csv, .parquet, .jsonl (JSON lines) or .json (records)")
    src.add_argument("--db", action="append",
                     help="a results file (costlaw ingest): read the rows with --sql; repeat to read several as one "
                          "ladder (a run several hold is kept once). With one --db the fits are stored in its fits "
                          "table")
    src.add_argument("--sql", metavar="SELECT",
                     help="with --db: one read-only query giving one row per run with a run_id column, e.g. "
                          "\"SELECT * FROM run_summary WHERE family = 'gqa'\"")
    src.add_argument("--assign", action="append", metavar="NAME=EXPR",
                     help="add a column, before --where; repeatable. E.g. 'D = `Training FLOP` / (6 * `Model Size`)'")
    src.add_argument("--where", metavar="EXPR",
                     help="keep the rows where EXPR holds, e.g. \"n_kv_heads <= 4 and status == 'completed'\" or "
                          "Epoch's 'loss < largest(loss, 5)' (the expression language below)")
    src.add_argument("--best-of", metavar="COL",
                     help="keep, per --by group, only the row with the least COL (e.g. each size's best learning "
                          "rate: --best-of loss --by N,D); ties broken once, by the other columns' values")
    src.add_argument("--by", metavar="COL[,COL]", help="the groups of --best-of")
    src.add_argument("--group-by", metavar="COL[,COL]", help="one fit per group, e.g. n_heads,n_kv_heads")
    law = p.add_argument_group("law (one of --law, --formula, --law-file)")
    law.add_argument("--law", help="a registered law: power-plus-constant | gqa-size | chinchilla | compute | linear "
                                   "(see --list-laws), or one that --law-file defines")
    law.add_argument("--formula", metavar="EXPR",
                     help="a law from an expression over data columns (the variables) and parameters (every other "
                          "name), e.g. 'E + A/N**alpha + B/D**beta'; sums of power terms are fitted in log-sum-exp "
                          "form, any other formula in natural units (default start: every parameter 1, as curve_fit)")
    law.add_argument("--law-file", metavar="PATH",
                     help="a Python file defining laws with the public API (costlaw.fitting.Law, LSELaw, "
                          "formula_law, register_law); pick one with --law when it defines several")
    law.add_argument("--list-laws", action="store_true", help="print the registered laws (and --law-file's) and exit")
    law.add_argument("--x", metavar="COL[,COL]",
                     help="columns for the law's variables, in order (default: the variables' own names; for "
                          "--formula, the formula's names that are columns)")
    law.add_argument("--y", default="loss", metavar="COL", help="the loss column (default loss)")
    fitg = p.add_argument_group("objective and fit")
    fitg.add_argument("--residuals", default="log", choices=["log", "raw"],
                      help="log: r = log y - log ŷ (default; y > 0, relative errors); raw: r = y - ŷ (y may be <= 0, "
                           "rising curves such as accuracy fit)")
    fitg.add_argument("--loss", default="huber", choices=["huber", "l2", "l1"],
                      help="summed over points: huber (default), l2 (reported as sum r²/2, HALF the sum of squares), "
                           "l1 (sum |r|)")
    fitg.add_argument("--delta", type=float, default=1e-3,
                      help="Huber delta, in the residuals' units (default 1e-3)")
    fitg.add_argument("--weights", metavar="COL",
                      help="a column whose values MULTIPLY each point's loss (sum w·rho(r)): with --loss l2 they "
                           "multiply the squared residual, so w = 1/sigma² with --residuals raw --loss l2 is "
                           "scipy's curve_fit(sigma=sigma, absolute_sigma=True), e.g. --assign 'w = 1/sd**2' "
                           "--weights w")
    fitg.add_argument("--fix", action="append", metavar="NAME=VALUE",
                      help="hold a parameter at a value in natural units (repeatable; commas separate), e.g. "
                           "--fix E=1.69")
    fitg.add_argument("--tie", action="append", metavar="NAME=NAME",
                      help="make the first parameter equal the second, e.g. --tie beta=alpha")
    fitg.add_argument("--bounds", action="append", metavar="NAME=LO:HI",
                      help="bound a parameter's value in natural units (an end may be empty), e.g. --bounds alpha=0:1 "
                           "--bounds E=1.5:")
    fitg.add_argument("--init", action="append", metavar="NAME=VALUE",
                      help="start values in natural units, always refined (every free parameter: one start; some: the "
                           "law's grid with those values), e.g. --init A=400,alpha=0.3")
    fitg.add_argument("--random-starts", type=int, default=0, metavar="K",  # range: _check_options
                      help="K extra seeded random starts, uniform in fit space within --start-box (elsewhere within "
                           "finite bounds, else the grid's range)")
    fitg.add_argument("--start-box", action="append", metavar="NAME=LO:HI",
                      help="the box of --random-starts for a parameter, e.g. --start-box alpha=0.1:1")
    fitg.add_argument("--starts", type=int, help="number of grid starts (default: the law's grid; 4500 for chinchilla)")
    fitg.add_argument("--refine", type=int, default=10, help="best distinct starts refined by L-BFGS-B (default 10)")
    fitg.add_argument("--method", default="joint", choices=["joint", "varpro"],
                      help="joint: the start grid and L-BFGS-B over every parameter (default); varpro: variable "
                           "projection for laws linear in their coefficients once the exponents are fixed (search "
                           "the exponents, coefficients profiled out), e.g. --law chinchilla --method varpro")
    options.bounded(fitg.add_argument("--seed", type=int, default=0,
                                      help="seed for random starts and bootstrap resamples"), 0, 2**63 - 1)
    fitg.add_argument("--eval-at", action="append", metavar="NAME=VALUE,...",
                      help="do not fit: report the objective, R² and each row's prediction at these parameters (every "
                           "parameter; --fix values count), e.g. a paper's: --eval-at A=406.4,B=410.7,E=1.69,"
                           "alpha=0.34,beta=0.28")
    unc = p.add_argument_group("uncertainty and validation")
    unc.add_argument("--bootstrap", type=int, metavar="K",
                     help=f"K bootstrap refits, resampling runs (rows) (default {options.DEFAULT_BOOTSTRAP}, the same "
                          "for every verb that bootstraps, none with --eval-at; 0: none); resamples that cannot "
                          "identify the law or do not converge are counted and left out of the intervals")
    unc.add_argument("--bootstrap-by", metavar="COL",
                     help="resample groups of rows sharing COL's value instead of rows (seeds, LR-sweep rows or "
                          "checkpoints of one run), e.g. --bootstrap-by run_name")
    unc.add_argument("--holdout-largest", type=int, metavar="K",
                     help="also fit without the K largest runs and report their prediction errors")
    unc.add_argument("--holdout-by", metavar="COL",
                     help="rank runs by this variable or column (default: the first --x column)")
    unc.add_argument("--holdout-where", metavar="EXPR",
                     help="also fit without the rows where EXPR holds and predict them, e.g. 'C >= 1e21'")
    unc.add_argument("--predict", action="append", metavar="X[,X]",
                     help="report the predicted y at this point (one value per variable); repeatable")
    unc.add_argument("--inverse", action="append", type=float, metavar="Y",
                     help="report the x at which a one-variable law reaches y (e.g. N* for a target loss); "
                          "repeatable")
    out = p.add_argument_group("output")
    out.add_argument("--plot", metavar="FILE.png",
                     help="data, fitted law and bootstrap band: one variable: y vs x; several: a panel per variable "
                          "(measured and predicted) and measured vs predicted")
    out.add_argument("--json", action="store_true",
                     help="print the fits document (format costlaw-fits/1): per group params (natural units), "
                          "objective, r2, stderr, ci95, held-out rows' y_true and y_pred (with --list-laws: the laws)")
    out.add_argument("--out", metavar="FILE.json", help="also write the fits document here")


def main(args) -> int:
    from costlaw.fitting import laws

    file_laws, law_sha = {}, None
    if args.law_file:
        from costlaw.fitting.lawfile import load_law_file
        from costlaw.options import input_file

        input_file(args.law_file, "--law-file", "a Python file that defines laws")
        file_laws, law_sha = load_law_file(args.law_file)
    if args.list_laws:
        rows = [{"law": k, "variables": ",".join(v.variables), "params": ",".join(v.params), "formula": v.formula}
                for k, v in sorted(laws().items())]
        print(json.dumps(rows, indent=1) if args.json else table(rows))
        return 0
    _check_source(args)  # before the heavy imports, so a mistyped path fails at once
    _check_options(args)
    import numpy as np

    from costlaw.analysis.fits import FitOptions, evaluate_groups, header, make_groups, specs, split

    df, runs, source, notes = _rows(args)
    law = _law(args, df, file_laws)
    xcols = _columns(args.x, "--x") if args.x else list(law.variables)
    if len(xcols) != len(law.variables):
        raise CostlawError(f"--x: law {law.name} has {len(law.variables)} variable(s) "
                           f"({', '.join(law.variables)}), got {len(xcols)} column(s); give one column per variable")
    groups = _columns(args.group_by, "--group-by") if args.group_by else []
    for flag, cols, numeric in (("--x", xcols, True), ("--y", [args.y], True), ("--group-by", groups, False),
                                ("--weights", [args.weights] if args.weights else [], True),
                                ("--holdout-by", [args.holdout_by] if args.holdout_by else [], True),
                                ("--bootstrap-by", [args.bootstrap_by] if args.bootstrap_by else [], False)):
        _check_columns(df, cols, flag, numeric)
    points = [_point(s, law) for s in args.predict or []]
    if args.inverse and len(law.variables) != 1:
        raise CostlawError(f"--inverse: law {law.name} has {len(law.variables)} variables; inverse needs one")
    if args.inverse and not law.invertible:
        raise CostlawError(f"--inverse: law {law.name} has no closed-form inverse; use --predict, or a built-in law "
                           "of one variable (gqa-size, power-plus-constant, compute, linear)")
    fix, tie = specs.values(args.fix, "--fix"), specs.ties(args.tie)
    bounds = specs.ranges(args.bounds, "--bounds")
    init = specs.values(args.init, "--init")
    box = specs.ranges(args.start_box, "--start-box", open_ends=False)
    eval_at = specs.values(args.eval_at, "--eval-at") if args.eval_at else None

    derived = {}
    for pt in points:
        derived[f"{args.y}@" + ",".join(f"{c}={v:g}" for c, v in zip(xcols, pt))] = (
            lambda p, pt=pt: float(law.predict(p, np.array([pt]))[0]))
    for target in args.inverse or []:
        derived[f"{xcols[0]}@{args.y}={target:g}"] = lambda p, t=target: law.inverse(p, t, strict=False)
    options = FitOptions(law=law.name, x=tuple(xcols), y=args.y, loss=args.loss, delta=args.delta,
                         starts=args.starts, refine=args.refine, seed=args.seed, bootstrap=args.bootstrap,
                         holdout_largest=args.holdout_largest, holdout_by=args.holdout_by, derived=tuple(derived),
                         residuals=args.residuals, weights=args.weights, fix=fix, tie=tie, bounds=bounds, init=init,
                         start_box=box, random_starts=args.random_starts, method=args.method,
                         bootstrap_by=args.bootstrap_by, holdout_where=args.holdout_where, best_of=args.best_of,
                         best_by=tuple(_columns(args.by, "--by")) if args.by else (), law_sha256=law_sha)
    # Check every group before fitting any, so bad input fails fast with one line.
    parts = make_groups(split(df, groups), options, runs=runs)

    if eval_at is not None:
        fits = evaluate_groups(parts, options, {**fix, **eval_at})
    else:
        fits = _fit(parts, options, derived)
    doc = {**header(options, source), **({"notes": notes} if notes else {}), "candidates": [f.entry for f in fits]}
    done = _write(args, doc, fits, xcols, eval_at is not None)
    if args.json:
        print(json.dumps(doc, indent=1))
        for line in done:
            print(line, file=sys.stderr)
        return 0
    from costlaw.analysis.fits.render import render

    for line in notes:
        print(line)
    for i, entry in enumerate(doc["candidates"]):
        if i or notes:
            print()
        print(render(entry, doc))
    if done:
        print()
    for line in done:
        print(line)
    return 0


def _fit(parts, options, derived):
    from costlaw.analysis.fits import fit_groups
    from costlaw.costmodel.core.progress import Progress

    log = Progress(len(parts) * options.bootstrap, "bootstrap refits", "refits", every_s=None,
                   bar=None if options.bootstrap else False)
    t0 = time.perf_counter()
    say = log.log if len(parts) > 1 and not log.interactive else None
    fits = fit_groups(parts, options, derived=derived, say=say, tick=lambda: log.update(1))
    log.close()
    if say:
        print(f"{len(fits)} groups fitted in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return fits


def _write(args, doc, fits, xcols, evaluated: bool) -> list[str]:
    done = []
    if args.plot:
        from costlaw.fitting.plot import plot_fits

        items = [(f.group.label, f.result, f.group.X, f.group.y, f.boot) for f in fits if f.result is not None]
        if items:
            plot_fits(args.plot, items, x_names=xcols, y_name=args.y)
            done.append(f"plot written to {args.plot}")
    if args.out:
        from costlaw.costmodel.core.files import write_atomic

        write_atomic(Path(args.out), json.dumps(doc, indent=1) + "\n")
        done.append(f"fits written to {args.out}")
    if args.db and evaluated:
        done.append("--eval-at made no fit, so nothing was stored")
    elif args.db and len(args.db) > 1:
        done.append(f"fits not stored: they come from {len(args.db)} results files, and a store keeps fits of its own "
                    "runs (write them with --out)")
    elif args.db:
        from costlaw.analysis.fits import store

        try:
            ids = store(args.db[0], doc, source_query=args.sql)
        except OSError as e:
            raise CostlawError(f"--db: cannot write {args.db[0]}'s fits table ({e}); give a results file you can "
                               "write, or --out FILE instead") from None
        done.append(f"{len(ids)} fit(s) stored in {args.db[0]}'s fits table (costlaw recommend --db and costlaw "
                    "report reuse those of the same runs and options)")
    return done


def _law(args, df, file_laws):
    from costlaw.fitting import get_law, laws

    given = [f for f, v in (("--law", args.law), ("--formula", args.formula)) if v]
    if len(given) > 1:
        raise CostlawError("--formula: give either --law NAME or --formula EXPR, not both")
    if args.formula:
        from costlaw.costmodel.core import expr as E
        from costlaw.fitting.dual import FUNCTIONS
        from costlaw.fitting.formula import formula_law

        names = E.parse(args.formula, "--formula", functions=FUNCTIONS, constants={}).names
        if args.x:
            variables = _columns(args.x, "--x")
            # A column read as a parameter would be fitted as one number: almost certainly a forgotten --x entry.
            clash = [n for n in names if n in df.columns and n not in variables]
            if clash:
                raise CostlawError(f"--formula: {', '.join(clash)} is a data column but not in --x, so it would be "
                                   f"fitted as a parameter; add it to --x, or rename the parameter")
        else:
            variables = [n for n in names if n in df.columns]
            if not variables:
                raise CostlawError(f"--formula: no name in {args.formula!r} is a column ({_cols(df)}); name the data "
                                   "columns in the formula, or give --x")
        if any("," in v or ")" in v for v in variables):
            raise CostlawError("--x: a formula's column names may not hold ',' or ')'; rename the column (--assign)")
        return formula_law(args.formula, variables)
    if args.law:
        return get_law(args.law)
    if len(file_laws) == 1:
        return next(iter(file_laws.values()))
    if file_laws:
        raise CostlawError(f"--law: {args.law_file} defines {len(file_laws)} laws; pick one: "
                           f"{', '.join(sorted(file_laws))}")
    raise CostlawError("--law: required; give one of " + ", ".join(sorted(laws())) + ", or --formula EXPR")


def _check_source(args) -> None:
    from costlaw.options import input_dbs, input_file

    if args.data and args.db:
        raise CostlawError("--db: reads rows from a results file, --data from a table; give one of them")
    if args.db:
        if not args.sql:
            raise CostlawError("--sql: required with --db; give one SELECT returning one row per run with run_id, "
                               "e.g. \"SELECT * FROM run_summary\"")
        input_dbs(args.db)
    elif args.sql:
        raise CostlawError("--sql: queries a results file; give --db RESULTS.duckdb too")
    elif not args.data:
        raise CostlawError("--data: required; give a CSV, Parquet or JSON-lines file of runs, or --db RESULTS.duckdb "
                           "with --sql")
    else:
        input_file(args.data, "--data", "a CSV, Parquet or JSON-lines file of runs", text=False, max_bytes=None)


def _check_options(args) -> None:
    from costlaw.options import DEFAULT_BOOTSTRAP, MAX_BOOTSTRAP, output_file

    asked_bootstrap = args.bootstrap is not None
    if args.bootstrap is None:  # --eval-at fits nothing, so there is nothing to resample
        args.bootstrap = 0 if args.eval_at else DEFAULT_BOOTSTRAP
    if args.bootstrap and not 2 <= args.bootstrap <= MAX_BOOTSTRAP:
        raise CostlawError(f"--bootstrap: must be 0 or 2 to {MAX_BOOTSTRAP:,} resamples, got {args.bootstrap}")
    if args.bootstrap_by and not args.bootstrap:
        raise CostlawError("--bootstrap-by: groups the resamples of --bootstrap K; add --bootstrap K")
    if args.holdout_largest is not None and args.holdout_largest < 1:
        raise CostlawError(f"--holdout-largest: must be >= 1, got {args.holdout_largest}")
    if args.holdout_largest and args.holdout_where:
        raise CostlawError("--holdout-where: give either --holdout-largest K or --holdout-where EXPR, not both")
    # the start grid and each random start cost a law evaluation over every row: beyond these it would not finish
    for flag, value, lo, hi in (("--starts", args.starts, 1, 10**7), ("--refine", args.refine, 1, 10**5),
                                ("--random-starts", args.random_starts, 0, 10**7)):
        if value is not None and not lo <= value <= hi:
            raise CostlawError(f"{flag}: must be {lo} to {hi:,}, got {value}")
    if args.start_box and not args.random_starts:
        raise CostlawError("--start-box: is the box of --random-starts K; add --random-starts K")
    if not args.delta > 0:
        raise CostlawError(f"--delta: must be > 0, got {args.delta}; the convention is 1e-3")
    if bool(args.best_of) != bool(args.by):
        raise CostlawError("--best-of: needs --by COL[,COL] (the groups to pick from), and --by needs --best-of COL")
    if args.eval_at and ((asked_bootstrap and args.bootstrap) or args.holdout_largest or args.holdout_where
                         or args.method != "joint"):
        raise CostlawError("--eval-at: evaluates given parameters without fitting; drop --bootstrap, --holdout-* and "
                           "--method")
    if args.method == "varpro" and (args.fix or args.tie or args.bounds or args.init or args.random_starts):
        raise CostlawError("--method varpro: searches every exponent itself; drop --fix/--tie/--bounds/--init/"
                           "--random-starts, or use --method joint")
    if args.plot:
        plot = output_file(args.plot, "--plot", "the figure")
        if plot.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
            raise CostlawError(f"--plot: {plot.name} needs a .png, .pdf, .svg or .jpg suffix")
    if args.out:
        output_file(args.out, "--out", "the fits document")


def _rows(args):
    """(rows after --assign, --where and --best-of, run_id -> ingest fingerprint or None, where the rows came from,
    notes)."""
    if args.db:
        df, runs = _query(args.db, args.sql)
        names = ", ".join(args.db)
        source = f"store{'s' if len(args.db) > 1 else ''} {names}: {' '.join(args.sql.split())}"
    else:
        df, runs, source = _read(Path(args.data)), None, str(args.data)
    from costlaw.analysis.fits import rows

    for text in args.assign or []:
        df = rows.assign(df, text)
    if args.where is not None:
        df = rows.keep(df, args.where)
    notes = []
    if args.best_of:
        df, notes = rows.best_of(df, args.best_of, _columns(args.by, "--by"))
    return df, runs, source, notes


def _query(dbs, sql: str):
    from costlaw.analysis.store import query_rows
    from costlaw.analysis.store.union import query_stores

    try:
        df = query_stores(dbs, sql)
    except CostlawError as e:
        msg = str(e)
        raise CostlawError("--sql: " + msg.removeprefix("SQL: ") if msg.startswith("SQL: ") else msg) from None
    if "run_id" not in df.columns:
        raise CostlawError(f"--sql: the result has no run_id column (columns are {_cols(df)}); select run_id too, "
                           "so each stored fit names the runs it was fitted on")
    if df.empty:
        raise CostlawError("--sql: the query returned no rows; loosen its WHERE")
    if len(dbs) == 1:
        df = df.drop(columns="store")
    runs = {}
    for db in dbs:
        _, rows = query_rows(db, "SELECT run_id, fingerprint FROM runs")
        runs.update(dict(rows))
    return df, runs


def _read(path: Path):
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True)
        if suffix == ".json":
            return pd.read_json(path, orient="records")
    except Exception as e:  # pandas/pyarrow raise many types for unreadable files
        raise CostlawError(f"--data: cannot read {path.name}: {_one_line(e)}") from None
    raise CostlawError(f"--data: {path.name} is not .csv, .parquet, .jsonl or .json; convert it or rename it")


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
    import math

    try:
        vals = [float(v) for v in spec.split(",")]
    except ValueError:
        raise CostlawError(f"--predict: {spec!r} is not comma-separated numbers") from None
    if not all(math.isfinite(v) for v in vals):
        raise CostlawError(f"--predict: {spec!r} holds a value that is not finite; give finite numbers, e.g. 1e9")
    if len(vals) != len(law.variables):
        raise CostlawError(f"--predict: {spec!r} has {len(vals)} value(s); {law.name} needs one per variable "
                           f"({', '.join(law.variables)})")
    return vals
