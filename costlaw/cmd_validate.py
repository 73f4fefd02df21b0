"""`costlaw validate`: cross-validate a store's laws; the share of left-out runs inside their intervals."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
what it does:
  for each candidate (as costlaw recommend groups the runs), leave out one config at a time (all its seeds;
  --mode config) or the candidate's largest size (--mode largest), refit the law to the rest exactly as
  recommend fits it (config means, bootstrap over configs, run-to-run noise), predict each left-out run with
  its --level interval for a new run and for the law's mean, and report per candidate and overall:
  coverage (share of left-out runs inside the new-run interval; a calibrated interval gives about --level),
  coverage of the mean's interval, mean and worst relative error ((measured - predicted) / predicted; > 0:
  the law under-predicts) and the median interval width. "usable laws" totals the candidates whose law,
  fitted to all their runs, passes recommend's guards (the ones it may pick).
  Folds that leave fewer than 4 sizes are skipped and listed.
  --mode context tests the assumption behind reusing a law at another context instead: for every pretraining
  run with a same-architecture extension to a longer context in the store, the candidate's gap to the reference
  (--reference, default the multi-head pair with the most extensions) at both contexts, per width and seed;
  whether the gaps widen, by how much against the val sets' error and the spread over widths and seeds
  (analysis/validate/context.py). recommend falls back to laws at another context when the asked one has too few
  sizes and says so; this says how far to trust that. Its --figure draws each pair's gap after extension against
  its gap before, with the line y = x (gap unchanged) and the sign test in the title.
  --mode rerun compares the same runs trained twice (one spec, seed and root submitted again: --db FIRST
  --db RERUN): per run id completed in both, the val losses' difference; one run's noise at a fixed seed (sd of
  the differences / sqrt 2) against the val sets' error; and when the training losses parted (the first logged
  step where their difference, averaged over --window logged steps, exceeds --threshold nats; both runs read
  the same batches, so a batch's own noise cancels). Its --figure draws each run's training-loss difference over
  its steps (analysis/validate/rerun.py).

examples:
  costlaw validate --db studies/gqa-heads-steps/results.duckdb --level 0.9 --json
  costlaw validate --db a.duckdb --db b.duckdb --mode largest --figure cv.png
  costlaw validate --db a.duckdb --law gqa-size-shape     # the shape-aware law, for comparison
  costlaw validate --db studies/long-context/results.duckdb --mode context
  costlaw validate --db studies/long-context/ladder.duckdb --mode context --figure ctx.png
  costlaw validate --db studies/long-context/ladder.duckdb --db studies/long-context/ladder-rerun.duckdb --mode rerun
"""


def add_arguments(p):
    from costlaw import options

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--db", action="append", required=True,
                   help="a results file (repeat to read several as one)")
    p.add_argument("--level", type=float, default=0.9, help="the intervals' level (default 0.9)")
    p.add_argument("--mode", choices=("config", "largest", "context", "rerun"), default="config",
                   help="leave out each config (default) or each candidate's largest size; context: does each "
                        "candidate's gap to the reference carry over from pretraining to extension; rerun: the "
                        "same runs in two stores, how far a run's loss moves at a fixed seed (see below)")
    p.add_argument("--reference", help="--mode context: the GQA pair the gaps are taken to, e.g. 8,8 (default: the "
                                       "multi-head pair with the most extensions)")
    p.add_argument("--threshold", type=float,
                   help="--mode rerun: nats of training-loss difference that count as parted (default 0.02)")
    options.bounded(p.add_argument("--window", type=int,
                                   help="--mode rerun: logged steps averaged before comparing (default 5)"), 1)
    options.add_bootstrap(p, what="bootstrap resamples of the configs per fit")
    options.bounded(p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)"),
                    0, 2**63 - 1)
    p.add_argument("--noise", choices=("constant", "size"), default="constant",
                   help="seed noise constant in N (default, as recommend) or log-linear in N")
    p.add_argument("--lack-of-fit", action="store_true",
                   help="add the config means' scatter beyond seed noise to the noise (off by default, as recommend)")
    p.add_argument("--law", choices=("gqa-size", "gqa-size-shape"), default="gqa-size",
                   help="gqa-size (recommend's) or gqa-size-shape: (a/N)^b (d/L)^g + E")
    p.add_argument("--families", default="gqa,hybrid,compressed", help="comma-separated: gqa,hybrid,compressed")
    options.bounded(p.add_argument("--train-context", type=int,
                                   help="runs trained at this seq_len (default: the most common)"), 1)
    p.add_argument("--sweep", help="only runs of this sweep")
    p.add_argument("--json", action="store_true", help="one JSON object (coverage, per candidate, every prediction)")
    p.add_argument("--figure", help="also draw measured vs predicted with the intervals (PNG + SVG); with --mode "
                                    "context, each gap to the reference after extension vs before")
    options.add_wide(p)


def log(msg: str) -> None:
    print(f"[validate] {msg}", file=sys.stderr, flush=True)


def main(args) -> int:
    from costlaw.analysis.recommend.candidates import FAMILIES
    from costlaw.analysis.recommend.intervals import check_level
    from costlaw.analysis.validate import validate_stores
    from costlaw.analysis.validate.render import render_text
    from costlaw.costmodel.core.errors import CostlawError
    from costlaw.costmodel.core.units import table_width, terminal_width
    from costlaw.options import input_dbs, output_file

    check_level(args.level)
    input_dbs(args.db)
    for flag, value in (("--threshold", args.threshold), ("--window", args.window)):
        if value is not None and args.mode != "rerun":
            raise CostlawError(f"{flag}: only --mode rerun reads it; add --mode rerun or drop {flag}")
    if args.mode == "rerun":
        return _rerun(args)
    if args.mode == "context":
        return _context(args)
    if args.reference is not None:
        raise CostlawError("--reference: only --mode context reads it; add --mode context or drop --reference")
    if args.figure:
        output_file(args.figure, "--figure", "the figure")
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise CostlawError(f"--families: unknown family {bad[0] if bad else '(none)'!r}; "
                           f"choose from {', '.join(FAMILIES)}")
    v = validate_stores(args.db, sweep=args.sweep, mode=args.mode, level=args.level, n_boot=args.bootstrap,
                        seed=args.seed, noise=args.noise, lack_of_fit=args.lack_of_fit, law=args.law,
                        families=families,
                        train_context=args.train_context, progress=None if args.json else log)
    figure = None
    if args.figure:
        from costlaw.analysis.validate.figure import validation_figure

        figure = [str(p) for p in validation_figure(v, args.figure)]
    if args.json:
        doc = v.to_json()
        doc["figure"] = figure
        print(json.dumps(doc, indent=2))
    else:
        with table_width(None if args.wide else terminal_width()):
            print(render_text(v))
        if figure:
            print(f"wrote {figure[0]} and {figure[1]}")
    return 0



def _context(args) -> int:
    from costlaw.analysis.validate import context

    return _show(args, lambda: context.check_stores(args.db, sweep=args.sweep, reference=args.reference),
                 "context_figure", context.render_text)


def _rerun(args) -> int:
    from costlaw.analysis.validate import rerun
    from costlaw.costmodel.core.errors import CostlawError

    if args.reference is not None:
        raise CostlawError("--reference: only --mode context reads it; drop --reference")
    return _show(args, lambda: rerun.check_rerun(args.db, threshold=0.02 if args.threshold is None else args.threshold,
                                                 window=5 if args.window is None else args.window),
                 "rerun_figure", rerun.render_text)


def _show(args, check, figure_fn: str, render) -> int:
    """--mode context and rerun: the output path checked first, then the result of `check()` as JSON or text, and
    its figure (analysis.validate.figure.<figure_fn>) with --figure."""
    from costlaw.costmodel.core.units import table_width, terminal_width
    from costlaw.options import output_file

    if args.figure:
        output_file(args.figure, "--figure", "the figure")
    result = check()
    figure = None
    if args.figure:
        from costlaw.analysis.validate import figure as figures

        figure = [str(p) for p in getattr(figures, figure_fn)(result, args.figure)]
    if args.json:
        print(json.dumps({**result.to_json(), "figure": figure}, indent=2))
    else:
        with table_width(None if args.wide else terminal_width()):
            print(render(result))
        if figure:
            print(f"wrote {figure[0]} and {figure[1]}")
    return 0
