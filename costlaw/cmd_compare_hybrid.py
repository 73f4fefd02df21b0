"""`costlaw compare-hybrid`: each hybrid extension in a results file next to its dense twin (LongGen's
comparison): loss, loss by position, retrieval, and measured speedups against costmodel's ideal ones."""

from __future__ import annotations

import argparse
import json

EPILOG = """\
pairs: every completed hybrid run started from another run (base_run_id) is paired with the completed run of
  the same base_run_id and seq_len whose layers are all full and whose model is otherwise the same (the
  hybrid's seed picks among several). Both must be measured on one GPU type.

output (--out DIR):
  hybrid.json   the numbers (format costlaw-hybrid/1)
  hybrid.md     per pair: loss and retrieval, loss by position, speed vs ideal, KV cache bytes
  hybrid.png    loss by position, its difference, measured vs ideal speedups (+ .svg)

example:
  costlaw compare-hybrid --db studies/hybrid-extend/results.duckdb --out studies/hybrid-extend
"""


def add_arguments(p):
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--db", required=True, help="a results file written by costlaw ingest")
    p.add_argument("--out", required=True, help="directory for hybrid.json, hybrid.md and hybrid.png (+ .svg)")
    p.add_argument("--json", action="store_true", help="print the comparison (as in hybrid.json) instead of "
                                                       "the summary")


def _x(v) -> str:
    return "n/a" if v is None else f"{v:.2f}×"


def _summary(i: int, p: dict) -> list[str]:
    """A pair in three lines: which runs, the loss, and the speedups against their ideals."""
    val, tr = p["val_loss"], p["train"]
    delta = "n/a" if val["delta"] is None else f"{val['delta']:+.4f}"
    lines = [f"pair {i}: hybrid {p['hybrid']['run_id']} ({p['hybrid']['label']}) vs dense {p['dense']['run_id']} "
             f"at T = {p['seq_len']:,} on {p['gpu'] or 'an unknown device'}",
             f"  val loss: hybrid − dense = {delta} nats/token; train speedup {_x(tr['measured'])} "
             f"(ideal {_x(tr['ideal'])})"]
    for inf in p["inference"]:
        pf, dc = inf["prefill"], inf["decode"]
        lines.append(f"  at {inf['context']:,}: prefill {_x(pf['measured'])} (ideal {_x(pf['ideal'])}), decode "
                     f"{_x(dc['measured'])} (ideal {_x(dc['ideal_flops'])} by FLOPs, {_x(dc['ideal_bytes'])} by bytes)")
    return lines


def main(args) -> int:
    from costlaw.analysis.hybrid import write_outputs
    from costlaw.options import input_dbs, output_dir

    input_dbs(args.db)
    output_dir(args.out, "--out", "the comparison's files")
    res = write_outputs(args.db, args.out)
    if args.json:
        print(json.dumps(res.result, indent=1))
        return 0
    for i, p in enumerate(res.result["pairs"], 1):
        print("\n".join(_summary(i, p)))
    for path in res.written:
        print(f"wrote {path}")
    return 0
