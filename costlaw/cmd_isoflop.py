"""`costlaw isoflop`: Chinchilla's Approach 2 from the store's training curves: each run's loss at fixed FLOP budgets
(its curve interpolated at the budget), a parabola in log N per budget, and N*(C), D*(C) power laws with bootstrap
intervals over runs (library: costlaw.analysis.isoflop reads the store, costlaw.fitting.isoflop fits).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.units import si, table

EPILOG = """\
examples:
  # 8 budgets on a log grid over the range at least 3 runs' curves cover; 200 bootstrap resamples of the runs
  costlaw isoflop --db results.duckdb
  # given budgets, one family, a figure and JSON
  costlaw isoflop --db results.duckdb --budgets 1e15,3e15,1e16 --plot isoflop.png --json \\
      --sql "SELECT run_id, params_non_embedding, c_train_flops_per_token FROM runs
             WHERE status = 'completed' AND family = 'gqa' AND n_kv_heads = 1"
"""


def add_arguments(p):
    from costlaw import options
    from costlaw.analysis.isoflop import DEFAULT_SQL

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--db", action="append", required=True,
                   help="a results file (costlaw ingest); repeat to read several as one ladder")
    p.add_argument("--sql", default=DEFAULT_SQL, metavar="SELECT",
                   help=f"the runs: one row per run with run_id, N and FLOPs per token (default \"{DEFAULT_SQL}\")")
    p.add_argument("--n", default="params_non_embedding", metavar="COL", help="the model-size column (default "
                                                                              "params_non_embedding)")
    p.add_argument("--c-per-token", default="c_train_flops_per_token", metavar="COL",
                   help="training FLOPs per token (default c_train_flops_per_token); C = tokens x this")
    p.add_argument("--budgets", metavar="C[,C]", help="FLOP budgets, e.g. 1e15,3e15,1e16 (default: a log grid)")
    options.bounded(p.add_argument("--n-budgets", type=int, default=8, metavar="K",
                                   help="budgets on the default grid (default 8), over the range at least --min-runs "
                                        "curves cover"), None, 10_000)
    options.bounded(p.add_argument("--min-runs", type=int, default=3,
                                   help="runs a budget needs for its parabola (default 3)"), None, 1_000_000)
    options.add_bootstrap(p, what="resamples of the runs for the power laws' intervals")
    options.bounded(p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)"),
                    0, 2**63 - 1)
    p.add_argument("--plot", metavar="FILE.png", help="loss vs N per budget with its parabola; N*(C) and D*(C)")
    options.add_json(p, "print the result as JSON")
    options.add_wide(p)


def main(args) -> int:
    import math

    from costlaw.costmodel.core.units import terminal_width
    from costlaw.options import input_dbs, output_file

    input_dbs(args.db)
    if args.min_runs < 3:
        raise CostlawError(f"--min-runs: a parabola needs 3 runs or more, got {args.min_runs}")
    if args.n_budgets < 2:
        raise CostlawError(f"--n-budgets: the power laws need 2 budgets or more, got {args.n_budgets}")
    if args.bootstrap and args.bootstrap < 2:
        raise CostlawError(f"--bootstrap: need 0 or at least 2 resamples, got {args.bootstrap}")
    if args.plot:
        plot = Path(args.plot)
        if plot.suffix.lower() not in (".png", ".pdf", ".svg"):
            raise CostlawError(f"--plot: {plot.name} needs a .png, .pdf or .svg suffix")
        output_file(plot, "--plot", "the figure")
    budgets = None
    if args.budgets:
        try:
            budgets = [float(b) for b in args.budgets.split(",")]
        except ValueError:
            raise CostlawError(f"--budgets: {args.budgets!r} is not comma-separated numbers, e.g. 1e15,3e15") from None
        if not all(math.isfinite(b) and b > 0 for b in budgets):
            raise CostlawError(f"--budgets: {args.budgets!r} holds a budget that is not a finite number > 0; write "
                               "e.g. 1e15,3e15")
    from costlaw.analysis.isoflop import load_curves
    from costlaw.fitting.isoflop import budget_grid, isoflop

    curves, notes = load_curves(args.db, args.sql, args.n, args.c_per_token)
    if budgets is None:
        budgets = budget_grid(curves, args.n_budgets, args.min_runs)
    res = isoflop(curves, budgets, min_runs=args.min_runs, bootstrap=args.bootstrap, seed=args.seed)
    doc = {"format": "costlaw-isoflop/1", "source": f"{', '.join(args.db)}: {' '.join(args.sql.split())}",
           "notes": notes, **res.to_dict()}
    if args.plot:
        _plot(args.plot, curves, res)
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    for line in notes + res.warnings:
        print(line)
    print(table([{"budget C": si(t["C"]), "runs": t["n_runs"], "skipped": t["n_skipped"],
                  "N*": si(t["N_star"]) if t["N_star"] is not None else "-",
                  "D*": si(t["D_star"]) if t["D_star"] is not None else "-",
                  "loss*": f"{t['loss_star']:.4f}" if t["loss_star"] is not None else "-",
                  "note": t["reason"] or ""} for t in doc["budgets"]], width=None if args.wide else terminal_width()))
    for name, law in (("N*", doc["N_star"]), ("D*", doc["D_star"])):
        ci = law.get("ci95")
        interval = (f" (95% {ci['exponent'][0]:.3f}-{ci['exponent'][1]:.3f}; coefficient {ci['coefficient'][0]:.3g}-"
                    f"{ci['coefficient'][1]:.3g})" if ci else "")
        print(f"{name}(C) = {law['coefficient']:.4g} · C^{law['exponent']:.4f}{interval}")
    print(f"runs {res.n_runs}; budgets skipped where a run's curve does not reach them; bootstrap {res.n_bootstrap} "
          f"resamples of the runs ({res.n_failed} without two usable budgets)")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def _plot(path, curves, res):
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from costlaw.costmodel.core.files import atomic_file

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax, right = fig.subplots(1, 2)
    N = np.array([c.N for c in curves])
    from costlaw.fitting.isoflop import parabola

    for j, t in enumerate(res.budgets):
        have = np.isfinite(res.matrix[:, j])
        colour = f"C{j % 10}"
        ax.scatter(N[have], res.matrix[have, j], s=14, color=colour, label=f"C = {t['C']:.2g}")
        if t["N_star"] is not None and np.isfinite(t["N_star"]) and have.sum() >= 3:
            a, b, c = parabola(np.log(N[have]), res.matrix[have, j])
            grid = np.geomspace(N[have].min(), N[have].max(), 100)
            ax.plot(grid, a * np.log(grid) ** 2 + b * np.log(grid) + c, color=colour, linewidth=1)
            ax.scatter([t["N_star"]], [t["loss_star"]], marker="*", s=80, color=colour, zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("loss at budget")
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3, which="both")
    use = [t for t in res.budgets if t["inside"]]
    C = np.array([t["C"] for t in use])
    grid = np.geomspace(C.min(), C.max(), 100)
    for key, law, colour in (("N_star", res.N_law, "C0"), ("D_star", res.D_law, "C1")):
        right.scatter(C, [t[key] for t in use], color=colour, zorder=3)
        right.plot(grid, law["coefficient"] * grid ** law["exponent"], color=colour,
                   label=f"{key.replace('_star', '*')} = {law['coefficient']:.3g}·C^{law['exponent']:.3f}")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("C (training FLOPs)")
    right.legend(fontsize="small")
    right.grid(alpha=0.3, which="both")
    fig.suptitle("IsoFLOP profiles (Approach 2)")
    FigureCanvasAgg(fig)
    with atomic_file(Path(path)) as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".").lower(), dpi=120)
