"""`costlaw kv-eval BASE_RUN_DIR --policies ... --keep ... --out ROOT`: evaluate KV-cache policies on a trained
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


def _csv(kind):
    def parse(text):
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise CostlawError(f"expected a comma-separated list of {kind.__name__}s, got {text!r}") from None

    return parse


def add_arguments(p):
    p.add_argument("base", metavar="BASE_RUN_DIR", help="a finished dense run directory (its checkpoint is evaluated)")
    p.add_argument("--policies", default="streaming,snapkv,h2o,random,infinipot",
                   help="comma-separated methods: streaming, snapkv, h2o, random, locret, kv_distill, infinipot")
    p.add_argument("--keep", default="1,0.5,0.25,0.1,0.05", help="comma-separated keep ratios in (0, 1]")
    p.add_argument("--policy-run", action="append", default=[], metavar="METHOD=RUN_DIR",
                   help="a trained policy run for locret / kv_distill (repeatable)")
    p.add_argument("--out", required=True, help="results root: written to OUT/runs/<run_id>/")
    p.add_argument("--context", type=int, help="context tokens compressed (default: seq_len - continuation)")
    p.add_argument("--continuation", type=int, help="tokens scored after the context (default: seq_len / 8)")
    p.add_argument("--samples", type=int, default=16, help="val windows scored per policy and keep ratio")
    p.add_argument("--batch", type=int, default=8, help="windows per batch")
    p.add_argument("--retrieval-samples", type=int, default=16, help="passkey probe samples per depth (0 = off)")
    p.add_argument("--decode-tokens", type=int, default=32, help="tokens decoded when timing (0 = no timing)")
    p.add_argument("--device", default="auto", help="cuda | cpu | auto")
    p.add_argument("--json", action="store_true", help="print the summary and rows as JSON")


def main(args) -> int:
    from costlaw.costmodel.core.units import table
    from costlaw.runs.kv.harness import kv_eval_run, parse_policy_runs

    policies = _csv(str)(args.policies)
    keeps = _csv(float)(args.keep)
    for name, v in (("--samples", args.samples), ("--batch", args.batch)):
        if v < 1:
            raise CostlawError(f"{name}: must be >= 1, got {v}")
    for name, v in (("--retrieval-samples", args.retrieval_samples), ("--decode-tokens", args.decode_tokens)):
        if v < 0:
            raise CostlawError(f"{name}: must be >= 0, got {v}")
    out = kv_eval_run(args.base, args.out, policies, keeps, parse_policy_runs(args.policy_run), context=args.context,
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
    print(table(rows))
    return 0
