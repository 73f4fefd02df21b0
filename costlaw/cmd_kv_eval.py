"""`costlaw kv-eval BASE_RUN_DIR --policies ... --keep ... --root ROOT`: evaluate KV-cache policies on a trained
dense run, across keep ratios, into a new run directory ROOT/runs/<run_id>/ (stage "compress").

For every policy and keep ratio: continuation NLL with the context compressed and its increase over the full
cache, KL to the full cache's next-token distribution, the passkey probe through the compressed decode path,
measured KV bytes next to costmodel's, peak memory, prefill and decode speed (runs/kv/harness.py says how).
Rows are `kv_policy` evals in evals.jsonl, so `costlaw ingest ROOT` loads them (view kv_policy_evals).
Trained policies (locret, kv_distill) need their policy run: `--policy-run locret=RUN_DIR`, a run with
`train.trainable = "policy"` whose `train.init_from` is this base run. Checkpoints (the base's, the policy
runs') are read safely and only when their header names the expected run (runs/checkpoint.py); a refusal is a
one-line error before the output directory is written. The output directory is locked while it is written
(trainer.lock, as a trainer locks its run).
"""

from __future__ import annotations

import json

from costlaw.costmodel.core.errors import CostlawError


def _csv(kind, flag: str, example: str):
    def parse(text):
        try:
            values = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise CostlawError(f"{flag}: {text!r} is not a comma-separated list of {kind.__name__}s; write e.g. "
                               f"{example}") from None
        if not values:
            raise CostlawError(f"{flag}: empty; write e.g. {example}")
        return values

    return parse


def add_arguments(p):
    from costlaw import options

    p.add_argument("base", metavar="BASE_RUN_DIR", help="a finished dense run directory (its checkpoint is evaluated)")
    p.add_argument("--policies", default="streaming,snapkv,h2o,random,infinipot",
                   help="comma-separated methods: streaming, snapkv, h2o, random, locret, kv_distill, infinipot")
    p.add_argument("--keep", default="1,0.5,0.25,0.1,0.05", help="comma-separated keep ratios in (0, 1]")
    p.add_argument("--policy-run", action="append", default=[], metavar="METHOD=RUN_DIR",
                   help="a trained policy run for locret / kv_distill (repeatable)")
    options.add_root(p, "results root: written to DIR/runs/<run_id>/")
    options.bounded(p.add_argument("--context", type=int,
                                   help="context tokens compressed (default: seq_len - continuation)"), 1)
    options.bounded(p.add_argument("--continuation", type=int,
                                   help="tokens scored after the context (default: seq_len / 8)"), 1)
    options.bounded(p.add_argument("--samples", type=int, default=16,
                                   help="val windows scored per policy and keep ratio"), 1, 1_000_000)
    options.bounded(p.add_argument("--batch", type=int, default=8, help="windows per batch"), 1, 65_536)
    options.bounded(p.add_argument("--retrieval-samples", type=int, default=16,
                                   help="passkey probe samples per depth (0 = off)"), 0, 1_000_000)
    options.bounded(p.add_argument("--decode-tokens", type=int, default=32,
                                   help="tokens decoded when timing (0 = no timing)"), 0, 1_000_000)
    p.add_argument("--device", default="auto", help="cuda | cpu | auto")
    options.add_json(p, "print the summary and rows as JSON")
    options.add_wide(p)


def main(args) -> int:
    import math

    from costlaw.costmodel.core.units import table, terminal_width
    from costlaw.options import input_dir, output_dir
    from costlaw.runs.kv.harness import kv_eval_run, parse_policy_runs

    policies = _csv(str, "--policies", "snapkv,h2o")(args.policies)
    keeps = _csv(float, "--keep", "1,0.5,0.25")(args.keep)
    bad = [k for k in keeps if not (math.isfinite(k) and 0 < k <= 1)]
    if bad:
        raise CostlawError(f"--keep: {bad[0]} is not a keep ratio in (0, 1]; write e.g. 1,0.5,0.25")
    input_dir(args.base, "BASE_RUN_DIR", "a finished run directory (config.json, DONE, checkpoint.pt)")
    root = output_dir(args.root, "--root", "the results root (written to DIR/runs/<run_id>/)")
    out = kv_eval_run(args.base, root, policies, keeps, parse_policy_runs(args.policy_run), context=args.context,
                      continuation=args.continuation, samples=args.samples, batch=args.batch,
                      retrieval_samples=args.retrieval_samples, decode_tokens=args.decode_tokens, device=args.device)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    rows = []
    for r in out["rows"]:
        m = r["metrics"]
        rows.append({"policy": r["tags"]["policy"], "keep": r["tags"].get("keep"), "NLL": m["nll"],
                     "ΔNLL": m["delta_nll"], "KL": m["kl"], "retrieval": m.get("retrieval_accuracy"),
                     "KV bytes": m["kv_bytes"], "analytic": m["kv_bytes_analytic"], "prefill s": m.get("prefill_s"),
                     "decode tok/s": m.get("decode_tokens_per_s")})
    print(f"kv-eval {out['run_id']} of base {out['base_run_id']} -> {out['run_dir']}")
    print(table(rows, width=None if args.wide else terminal_width()))
    return 0
