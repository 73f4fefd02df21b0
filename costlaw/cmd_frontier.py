"""`costlaw frontier`: loss vs inference memory and FLOPs at each context, per family, with Pareto sets."""

from __future__ import annotations

import json


def add_arguments(p):
    from costlaw import options

    p.add_argument("--db", required=True, help="a results file (costlaw ingest)")
    p.add_argument("--context", action="append", required=True,
                   help="context length(s) T to price every run at: 8192, 8K, 128K (repeat or comma-separate)")
    p.add_argument("--dtype", default="bf16", help="bytes of weights and KV cache: bf16 | fp16 | fp32 | fp8")
    p.add_argument("--sweep", help="only runs of this sweep")
    p.add_argument("--all-points", action="store_true", help="list every point, not only the Pareto sets")
    options.add_json(p, "one JSON object: points and Pareto sets")
    options.add_wide(p)
    p.add_argument("--plot", help="write the frontier figure here (PNG and SVG, one pair per context: "
                                  "FILE for one context, FILE-<T>.png for several)")


def main(args) -> int:
    from pathlib import Path

    from costlaw.analysis.frontier import COSTS, pareto_sets, points
    from costlaw.cmd_recommend import parse_contexts
    from costlaw.costmodel.core.units import binary_bytes, si, table, terminal_width
    from costlaw.costmodel.costs import dtype_bytes
    from costlaw.options import input_dbs, output_file

    contexts = parse_contexts(args.context)
    dtype_bytes(args.dtype)
    input_dbs(args.db)
    if args.plot:
        output_file(args.plot, "--plot", "the frontier figure")
    width = None if args.wide else terminal_width()
    df = points(args.db, contexts, args.dtype, args.sweep)
    sets = pareto_sets(df)
    plots = []
    if args.plot:
        from costlaw.analysis.figures import frontier as frontier_fig

        p = Path(args.plot)
        for T in contexts:
            target = p if len(contexts) == 1 else p.with_name(f"{p.stem}-{T}{p.suffix or '.png'}")
            plots += [str(x) for x in frontier_fig(df[df["context"] == T], target, context=T)]
    if args.json:
        cols = ["run_id", "label", "family", "context", "loss", "delta_nll", "n_params", "d_model", "n_layers",
                "n_heads", "n_kv_heads", "m_infer_bytes", "kv_cache_bytes", "c_infer_flops_per_token",
                "pareto_memory", "pareto_flops", "pareto_memory_all", "pareto_flops_all"]
        pts = json.loads(df[cols].to_json(orient="records"))
        print(json.dumps({"contexts": contexts, "dtype": args.dtype, "points": pts, "pareto": sets,
                          "notes": df.attrs.get("notes", []), "plots": plots}, indent=2))
        return 0
    n_runs = df["run_id"].nunique()
    print(f"{n_runs} runs, {len(df)} points over {len(contexts)} context(s) (runs + measured KV policies), "
          f"dtype {args.dtype}")
    for n in df.attrs.get("notes", []):
        print(f"note: {n}")
    for T in contexts:
        g = df[df["context"] == T]
        for name, col in COSTS.items():
            print(f"\n== context {T}: loss vs {'M_infer' if name == 'memory' else 'C_infer'} "
                  f"({'bytes' if name == 'memory' else 'FLOPs/token'})")
            sel = g if args.all_points else g[g[f"pareto_{name}"] | g[f"pareto_{name}_all"]]
            rows = []
            for r in sel.sort_values(["family", col]).itertuples():
                cost = getattr(r, col)
                rows.append({"family": r.family, "config": r.label, "N": si(r.n_params), "L x d": f"{r.n_layers}x"
                             f"{r.d_model}", "loss": round(r.loss, 4),
                             "cost": binary_bytes(cost) if name == "memory" else si(cost),
                             "pareto (family)": "yes" if getattr(r, f"pareto_{name}") else "",
                             "pareto (all)": "yes" if getattr(r, f"pareto_{name}_all") else ""})
            print(table(rows, width=width))
    for p in plots:
        print(f"wrote {p}")
    return 0
