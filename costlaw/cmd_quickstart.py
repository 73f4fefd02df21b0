"""`costlaw quickstart`: train a small ladder here, ingest, fit, recommend and write a report (a few minutes)."""

from __future__ import annotations

import json
import sys


def add_arguments(p):
    from costlaw import options

    options.add_root(p, "results root for the runs (DIR/runs/), results.duckdb and report/ (default ./quickstart; "
                        "reused: finished runs are not trained again)", required=False, default="quickstart")
    options.bounded(p.add_argument("--jobs", type=int, help="runs trained at a time (default: one per CPU)"), 1, 1024)
    p.add_argument("--spec", help="a sweep spec to run instead of sweeps/examples/quickstart.toml")
    options.add_bootstrap(p, what="bootstrap resamples of the configs per law")
    options.add_json(p, "print {root, db, report, seconds, steps, target, counts, winners} as JSON at the end (the "
                        "progress goes to stderr)")


def main(args) -> int:
    from costlaw import options
    from costlaw.quickstart import run_quickstart

    root = options.output_dir(args.root, "--root", "the quickstart's runs, results.duckdb and report/")
    if args.spec:
        options.input_file(args.spec, "--spec", "a sweep spec TOML")

    def log(msg: str) -> None:
        print(f"[quickstart] {msg}" if not msg.startswith("  ") else msg, flush=True,
              file=sys.stderr if args.json else sys.stdout)

    res = run_quickstart(root, args.jobs, spec=args.spec, n_boot=args.bootstrap, log=log)
    if args.json:
        rec = res.recommendation
        winners = {}
        for T in getattr(rec, "contexts", []):
            w = rec.winner(T)
            winners[str(T)] = None if w is None else w.label
        print(json.dumps({"root": str(res.out), "db": str(res.db), "report": str(res.report),
                          "seconds": round(res.seconds, 1), "steps": res.step_seconds, "target": res.target,
                          "counts": res.counts, "winners": winners}, indent=1))
    sys.stdout.flush()
    return 0
