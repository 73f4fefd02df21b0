"""studies/compressed/README.md's numbers, re-derived by the commands the README shows, against the numbers it states
(tests/studies/numbers.py says how)."""

from __future__ import annotations

import json

from tests.studies.readme_numbers import REPO, STUDIES, Check, Table, like, readme, shows, text_of

COMPRESSED = "compressed"
COMPRESSED_TABLE = """python -c "import pandas as pd; d = pd.read_parquet('studies/compressed/kv_policies.parquet')
print(d.pivot(index='policy', columns='keep', values='delta_nll').round(4))
print(d.pivot(index='policy', columns='keep', values='retrieval_accuracy').round(2))
print((d.kv_bytes == d.kv_bytes_analytic).sum(), 'of', len(d), 'rows: measured KV bytes = costmodel')\""""


def test_compressed():
    import pandas as pd

    text, c = readme(COMPRESSED), Check(f"studies/{COMPRESSED}/README.md")
    shows(COMPRESSED, COMPRESSED_TABLE)
    d = pd.read_parquet(STUDIES / COMPRESSED / "kv_policies.parquet")
    t = Table(text, "policy", "keep 1", where=c.where)
    for r in d.itertuples():
        c.cell(t, r.policy, f"keep {r.keep:g}", r.delta_nll)
    c.phrase(text, f"in all {len(d)} rows")
    c.equal("measured KV bytes = costmodel", int((d.kv_bytes == d.kv_bytes_analytic).sum()), len(d))
    dn = d.pivot(index="policy", columns="keep", values="delta_nll")
    below1 = dn.drop(columns=1.0)
    c.equal("every policy beats random below keep 1",
            bool((below1.drop(index="random") < below1.loc["random"]).all().all()), True)
    c.phrase(text, f"InfiniPot loses least ({like('+0.000', dn.loc['infinipot', 0.5])}, "
                   f"{like('+0.000', dn.loc['infinipot', 0.25])})")
    c.phrase(text, f"StreamingLLM loses least ({like('+0.000', dn.loc['streaming', 0.1])}, "
                   f"{like('+0.000', dn.loc['streaming', 0.05])})")
    for keep in (0.5, 0.25):
        c.equal(f"least at keep {keep}", dn[keep].idxmin(), "infinipot")
    for keep in (0.1, 0.05):
        c.equal(f"least at keep {keep}", dn[keep].idxmin(), "streaming")
    # retrieval: the second table, and the reversal the findings state
    rt = Table(text[text.index("## Passkey retrieval"):], "policy", "keep 1", where=c.where)
    for r in d.itertuples():
        c.cell(rt, r.policy, f"keep {r.keep:g}", r.retrieval_accuracy)
    ra = d.pivot(index="policy", columns="keep", values="retrieval_accuracy")
    bench = json.loads(text_of(REPO / "benchmarks/results/kv_h100/kv_bench.json"))
    n = 3 * bench["args"]["retrieval_samples"]
    c.phrase(text, f"Accuracy over {n} passkey prompts per cell ({bench['args']['retrieval_samples']} at each")
    c.equal("retrieval granularity", bool(((ra * n).round(6) % 1 == 0).all().all()), True)
    for keep in (0.5, 0.25, 0.1):
        c.equal(f"best retrieval at keep {keep}", ra[keep].idxmax(), "snapkv")
    c.equal("snapkv at keep 0.5", ra.loc["snapkv", 0.5], 1.0)
    c.phrase(text, f"best at\n  0.25 ({ra.loc['snapkv', 0.25]:.2f}) and 0.1 ({ra.loc['snapkv', 0.1]:.2f})")
    c.phrase(text, f"InfiniPot is second ({ra.loc['infinipot', 0.5]:.2f} at 0.5)")
    c.equal("infinipot second at 0.5", ra[0.5].drop("snapkv").idxmax(), "infinipot")
    for p in ("streaming", "h2o", "kv_distill"):
        c.equal(f"{p} retrieves a third at 0.5", round(ra.loc[p, 0.5], 2), 0.33)
    c.equal("locret 0 below keep 1", float(ra.loc["locret"].drop(1.0).max()), 0.0)
    c.phrase(text, f"below random eviction ({ra.loc['random', 0.5]:.2f} at keep 0.5)")
    c.phrase(text, f"Validation loss {bench['phases']['base']['val_loss']:.3f} nats/byte")
    c.done()
