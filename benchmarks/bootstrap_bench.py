"""Bootstrap benchmark: 1,000 resamples of a 16-point law of three (amplitude, exponent) pairs with a flat objective.

    python benchmarks/bootstrap_bench.py [--bootstrap 1000] [--noise 0.02] [--repeats 3] [--out FILE.json]

The law is L = A/N^alpha + B/D^beta + C/K^gamma (6 parameters, 3 variables) given as a formula, so it is fitted in
log-sum-exp form; 16 points with N, D, K each spanning its range in a seeded random order, and Gaussian noise of
sd `noise` on log L, so the objective is flat (points barely outnumber parameters: 16 for 6). Timed in this
interpreter after a warm-up: the fit, then the bootstrap (resampling the 16 rows, each refit from the full-data
optimum); wall and CPU seconds with the load average, because the reference machine is shared. The budget is 10 s
wall for the bootstrap. Writes a JSON result (atomically) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.fit_bench import cpu_model  # noqa: E402
from costlaw.costmodel.core.files import write_atomic  # noqa: E402
from costlaw.fitting import bootstrap, fit, formula_law  # noqa: E402

FORMULA = "A/N**alpha + B/D**beta + C/K**gamma"
TRUTH = {"A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.36, "C": 1.5, "gamma": 0.2}
BUDGET_S = 10.0


def data(noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 16
    X = np.column_stack([np.geomspace(lo, hi, n)[rng.permutation(n)] for lo, hi in ((1e7, 1e9), (1e9, 1e11),
                                                                                    (1.0, 64.0))])
    law = formula_law(FORMULA, ("N", "D", "K"))
    y = law.predict(TRUTH, X) * np.exp(rng.normal(0.0, noise, n))
    return law, X, y


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bootstrap_bench.json"))
    args = ap.parse_args(argv)
    law, X, y = data(args.noise, args.seed)
    warm = fit(law, X, y)
    bootstrap(law, X, y, warm, n=10, seed=args.seed)

    load_before = os.getloadavg()
    runs = []
    for _ in range(args.repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        res = fit(law, X, y)
        w1, c1 = time.perf_counter(), time.process_time()
        boot = bootstrap(law, X, y, res, n=args.bootstrap, seed=args.seed)
        w2, c2 = time.perf_counter(), time.process_time()
        runs.append({"fit_wall_s": w1 - w0, "fit_cpu_s": c1 - c0, "bootstrap_wall_s": w2 - w1,
                     "bootstrap_cpu_s": c2 - c1})
    median = sorted(runs, key=lambda r: r["bootstrap_wall_s"])[(len(runs) - 1) // 2]
    out = {
        "machine": {"cpu": cpu_model(), "python": platform.python_version(), "numpy": np.__version__,
                    "scipy": scipy.__version__, "loadavg": {"before": [round(v, 2) for v in load_before],
                                                            "after": [round(v, 2) for v in os.getloadavg()]}},
        "law": FORMULA, "truth": TRUTH, "points": len(y), "noise": args.noise, "seed": args.seed,
        "timing": {k: round(v, 3) for k, v in median.items()},
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
        "budget_s": BUDGET_S, "within_budget": median["bootstrap_wall_s"] <= BUDGET_S,
        "fit": {"params": res.params, "objective": res.objective, "success": res.success, "n_at_best": res.n_at_best,
                "n_starts": res.n_starts, "condition": res.condition},
        "bootstrap": {"n": boot.n, "n_used": boot.n_used, "n_failed": boot.n_failed,
                      "n_unidentified": boot.n_unidentified, "warnings": boot.warnings, "stderr": boot.stderr,
                      "ci95": boot.ci95},
    }
    write_atomic(args.out, json.dumps(out, indent=2, default=float) + "\n")
    print(markdown(out))
    return 0 if out["within_budget"] else 1


def markdown(r: dict) -> str:
    t, b = r["timing"], r["bootstrap"]
    lines = [f"Machine: {r['machine']['cpu']}; load average before/after {r['machine']['loadavg']['before'][0]} / "
             f"{r['machine']['loadavg']['after'][0]}.", "",
             "| step | wall s | CPU s |", "|---|---|---|",
             f"| fit, {r['fit']['n_starts']} starts | {t['fit_wall_s']:.2f} | {t['fit_cpu_s']:.2f} |",
             f"| bootstrap, {b['n']} refits (budget {r['budget_s']:.0f} s) | **{t['bootstrap_wall_s']:.2f}** | "
             f"{t['bootstrap_cpu_s']:.2f} |", "",
             f"{b['n_used']} resamples used, {b['n_failed']} did not converge, {b['n_unidentified']} could not "
             "identify the law.", "", "| param | truth | estimate | bootstrap SE | 95% CI |", "|---|---|---|---|---|"]
    for k, v in r["truth"].items():
        lo, hi = b["ci95"][k]
        lines.append(f"| {k} | {v:g} | {r['fit']['params'][k]:.4g} | {b['stderr'][k]:.3g} | [{lo:.4g}, {hi:.4g}] |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
