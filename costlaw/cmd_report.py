"""`costlaw report`: an HTML + Markdown report of a results file, or of several read as one (fits, recommendation,
cross-validation, figures, environment)."""

from __future__ import annotations

import sys


def add_arguments(p):
    from costlaw import options

    p.add_argument("--db", action="append", required=True,
                   help="a results file (costlaw ingest); repeat to report several as one")
    p.add_argument("--out", required=True, help="directory for index.html, report.md, figures/, fits.json")
    options.bounded(p.add_argument("--target-loss", type=float,
                                   help="the recommendation's target loss (default: the lowest loss every fitted "
                                        "candidate reached)"), 0, above=True)
    p.add_argument("--context", action="append",
                   help="contexts for the recommendation and the cost bars (default 8K,16K,32K,64K,128K)")
    p.add_argument("--fits", help="use this fits JSON (e.g. an earlier report's fits.json) instead of the store's")
    p.add_argument("--refit", action="store_true",
                   help="fit every law again, even those the store's fits table holds for the same runs and options "
                        "(by default those are reused, and new fits are stored there)")
    p.add_argument("--standard", default="d/d_h,8", help="baseline config at the same loss (see costlaw recommend)")
    p.add_argument("--candidates", default="all", help="candidates to compare (see costlaw recommend)")
    options.add_bootstrap(p, what="bootstrap resamples of the configs per law")
    p.add_argument("--level", type=float, default=0.9, help="the intervals' level (default 0.9; see costlaw recommend)")
    p.add_argument("--allow-weak-laws", action="store_true", help="as costlaw recommend: let weak laws win")
    p.add_argument("--allow-outside-envelope", action="store_true",
                   help="as costlaw recommend: let configs outside their trained shapes win")
    p.add_argument("--no-validate", action="store_true",
                   help="skip the cross-validation section (leave each config out; costlaw validate)")
    options.bounded(p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)"),
                    0, 2**63 - 1)
    p.add_argument("--dtype", default="bf16", help="bytes of weights and KV cache: bf16 | fp16 | fp32 | fp8")
    p.add_argument("--sweep", help="only this sweep's runs (a results file that also holds other studies)")
    options.add_json(p, "print what was written as JSON")


def log(msg: str) -> None:
    print(f"[report] {msg}", file=sys.stderr, flush=True)


def main(args) -> int:
    from costlaw.analysis.objective import Objective
    from costlaw.analysis.recommend import load_fits
    from costlaw.analysis.recommend.candidates import fit_status_line
    from costlaw.analysis.recommend.intervals import check_level
    from costlaw.analysis.report import build_report
    from costlaw.analysis.report.build import dumps_json
    from costlaw.cmd_recommend import parse_contexts
    from costlaw.costmodel.core.errors import CostlawError
    from costlaw.options import input_dbs, input_file, output_dir

    check_level(args.level)
    if args.refit and args.fits:
        raise CostlawError("--refit: refits the laws from --db's runs; --fits reads them from a file; drop one")
    contexts = parse_contexts(args.context) if args.context else None
    input_dbs(args.db)
    if args.fits:
        input_file(args.fits, "--fits", "a fits JSON (format costlaw-fits/1)")
    output_dir(args.out, "--out", "the report (index.html, report.md, figures/, fits.json)")
    fits = load_fits(args.fits) if args.fits else None
    res = build_report(args.db, args.out, target=args.target_loss, contexts=contexts, fits=fits,
                       objective=Objective(dtype=args.dtype), standard=args.standard, n_boot=args.bootstrap,
                       seed=args.seed, candidates=args.candidates, progress=None if args.json else log,
                       sweep=args.sweep, refit=args.refit, level=args.level, allow_weak=args.allow_weak_laws,
                       allow_outside=args.allow_outside_envelope, validate=not args.no_validate)
    if args.json:
        print(dumps_json(res))
        return 0
    line = fit_status_line(res.fit_status)
    if line:
        print(line)
    print(f"wrote {res.html} ({len(res.figures)} figures embedded)")
    print(f"wrote {res.markdown} (figures under {res.out / 'figures'})")
    if res.fits:
        print(f"wrote {res.fits}")
    for s in res.skipped:
        print(f"figure not drawn: {s}")
    if res.validation is not None:
        o = res.validation.overall()
        print(f"cross-validation: {100 * o['coverage']:.0f}% of {o['runs']} left-out runs inside their "
              f"{100 * args.level:g}% new-run interval")
    elif res.validation_note:
        print(f"cross-validation: {res.validation_note}")
    return 0
