"""`costlaw quickstart`: train a small ladder here, ingest, fit, recommend and write a report (a few minutes)."""

from __future__ import annotations

import sys


def add_arguments(p):
    p.add_argument("--out", default="quickstart",
                   help="directory for the runs, results.duckdb and report/ (default ./quickstart; reused: finished "
                        "runs are not trained again)")
    p.add_argument("--jobs", type=int, help="runs trained at a time (default: one per CPU)")
    p.add_argument("--spec", help="a sweep spec to run instead of sweeps/examples/quickstart.toml")
    p.add_argument("--bootstrap", type=int, default=50, help="bootstrap resamples per law (default 50)")


def main(args) -> int:
    from costlaw.costmodel.core.errors import CostlawError
    from costlaw.quickstart import run_quickstart

    if args.bootstrap < 0:
        raise CostlawError(f"--bootstrap: must be >= 0, got {args.bootstrap}")

    def log(msg: str) -> None:
        print(f"[quickstart] {msg}" if not msg.startswith("  ") else msg, flush=True)

    run_quickstart(args.out, args.jobs, spec=args.spec, n_boot=args.bootstrap, log=log)
    sys.stdout.flush()
    return 0
