"""studies/hybrid-extend/README.md's numbers, re-derived by the commands the README shows, against the numbers it states
(tests/studies/numbers.py says how)."""

from __future__ import annotations

import json

from tests.studies.readme_numbers import REPO, Check, Table, argv, measured_row, numbers, readme, shows, text_of

HYBRID = "hybrid-extend"
HYBRID_COMPARE = "costlaw compare-hybrid --db studies/hybrid-extend/results.duckdb --out studies/hybrid-extend"


def test_hybrid_extend(cli, tmp_path):
    """The results table is compare-hybrid's output on the committed store (tests/analysis/test_hybrid.py checks
    that the committed hybrid.json is that output); the re-measured table is benchmarks/runs.md's."""
    text, c = readme(HYBRID), Check(f"studies/{HYBRID}/README.md")
    shows(HYBRID, HYBRID_COMPARE)
    words = argv(HYBRID_COMPARE)
    words[words.index("--out") + 1] = str(tmp_path)
    cli(words)
    (p,) = json.loads((tmp_path / "hybrid.json").read_text())["pairs"]
    t = Table(text, "", "dense (6/6 full)", where=c.where)
    v = p["val_loss"]
    c.cell(t, "val loss at 16K (nats/byte)", "dense (6/6 full)", v["dense"])
    c.cell(t, "val loss at 16K (nats/byte)", "hybrid (2/6 full)", v["hybrid"])
    c.cell(t, "val loss at 16K (nats/byte)", "hybrid vs dense", v["delta"])
    key = "passkey at 16K, depth 0.1 / 0.5 / 0.9 (16 each)"
    for side, col in (("dense", "dense (6/6 full)"), ("hybrid", "hybrid (2/6 full)")):
        c.cell(t, key, col, *[r[side] * r[f"samples_{side}"] for r in p["retrieval"]])
    tr = p["train"]
    key = "train tokens/s at 16K (steady state)"
    c.cell(t, key, "dense (6/6 full)", tr["dense_tokens_per_s"])
    c.cell(t, key, "hybrid (2/6 full)", tr["hybrid_tokens_per_s"])
    c.cell(t, key, "hybrid vs dense", tr["measured"])
    c.cell(t, key, "costmodel ideal", tr["ideal"])
    c.cell(t, key, "share of ideal", tr["share"])
    inf = {i["context"]: i for i in p["inference"]}
    for ctx, key in ((16384, "prefill, 16,352 tokens"), (32768, "prefill, 32,736 tokens")):
        f = inf[ctx]["prefill"]
        c.cell(t, key, "dense (6/6 full)", f["dense_s"] * 1e3)
        c.cell(t, key, "hybrid (2/6 full)", f["hybrid_s"] * 1e3)
        c.cell(t, key, "hybrid vs dense", f["measured"])
        c.cell(t, key, "costmodel ideal", f["ideal"])
        c.cell(t, key, "share of ideal", f["share"])
    for ctx, key in ((16384, "decode tokens/s at 16K (batch 1)"), (32768, "decode tokens/s at 32K")):
        f = inf[ctx]["decode"]
        c.cell(t, key, "dense (6/6 full)", f["dense_tokens_per_s"])
        c.cell(t, key, "hybrid (2/6 full)", f["hybrid_tokens_per_s"])
        c.cell(t, key, "hybrid vs dense", f["measured"])
        c.cell(t, key, "costmodel ideal", f["ideal_flops"], f["ideal_bytes"])
        c.cell(t, key, "share of ideal", f["share_flops"], f["share_bytes"])
    key = "KV cache at 16K / 32K, measured = analytic"
    kv = [inf[x]["kv"] for x in (16384, 32768)]
    c.cell(t, key, "dense (6/6 full)", *[k["dense"]["measured"] / 2 ** 20 for k in kv])
    c.cell(t, key, "hybrid (2/6 full)", *[k["hybrid"]["measured"] / 2 ** 20 for k in kv])
    c.cell(t, key, "hybrid vs dense", *[k["hybrid_over_dense"]["measured"] for k in kv])
    c.equal("KV exact", all(k[s]["exact"] for k in kv for s in ("dense", "hybrid")), True)
    gaps = [abs(b["delta"]) for b in p["position_loss"]]
    c.phrase(text, f"Loss by position differs by at most {max(gaps):.4f} nats in any of the {len(gaps)} buckets")
    c.phrase(text, f"`compile_s` {p['hybrid']['compile_s']:.1f} s")
    # the re-measured speed: benchmarks/runs.md's table, as it is there
    bench = Table(text_of(REPO / "benchmarks/runs.md"), "", "x (dense)", "x-hybrid", where="benchmarks/runs.md")
    again = Table(text, "", "dense", "hybrid", "hybrid vs dense", where=c.where)
    for mine, theirs in (("train tok/s at 16K", "train tok/s"),
                         ("decode tok/s at 16K, batch 1", "decode, batch 1, at 16K"),
                         ("prefill, 16,352 tokens, batch 1", "prefill, batch 1, 16,352 tokens")):
        c.equal(mine, [numbers(x) for x in again.row(mine)[1:4]], [numbers(x) for x in bench.row(theirs)[1:4]])
    row = measured_row(HYBRID)
    c.phrase(row, f"{v['hybrid']:.4f} vs {v['dense']:.4f}; {tr['measured']:.2f}× (ideal {tr['ideal']:.2f}×) in the "
                  "study")
    c.phrase(row, f"{numbers(bench.row('train tok/s')[3])[0]} re-measured")
    c.done()
