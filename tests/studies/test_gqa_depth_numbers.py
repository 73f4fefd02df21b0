"""studies/gqa-depth/README.md's numbers, re-derived by the commands the README shows, against the numbers it states
(tests/studies/numbers.py says how)."""

from __future__ import annotations

from tests.studies.readme_numbers import Check, Table, committed_fits, like, measured_row, query, readme, shows
from tests.studies.test_gqa_heads_steps_numbers import STEPS

DEPTH = "gqa-depth"
DEPTH_RUNS = ('costlaw query --db studies/gqa-depth/results.duckdb "select n_heads, d_model, n_layers, '
              'params_non_embedding, batch_size, total_steps, val_loss from runs order by 1, 2, 3"')
DEPTH_LADDER = ('costlaw query --db studies/gqa-heads-steps/results.duckdb "select n_heads, d_model, n_layers, '
                'params_non_embedding, batch_size, total_steps, val_loss from runs where seed = 0 and '
                'n_heads = n_kv_heads and n_heads in (1, 8) and d_model in (192, 256) order by 1, 2, 3"')
DEPTH_LAW = """python -c "import json; from costlaw.fitting import get_law
N = {1: [1377984, 1722432, 2066880, 2328832, 2910976, 3493120], 8: [2754240, 3442752, 4131264, 4163840, 5204736,
6245632]}
for c in json.load(open('studies/gqa-heads-steps/fits-seed0.json'))['candidates']:
    if c['group']['n_heads'] == c['group']['n_kv_heads'] in N:
        print(c['group'], get_law('gqa-size').predict(c['params'], N[c['group']['n_heads']]).round(3))\""""


def test_gqa_depth(cli):
    from costlaw.fitting import get_law

    text, c = readme(DEPTH), Check(f"studies/{DEPTH}/README.md")
    shows(DEPTH, DEPTH_LAW)
    laws = committed_fits(STEPS, "fits-seed0.json")
    law = get_law("gqa-size")
    t = Table(text, "config", "d", "L", where=c.where)
    rows = [(r, True) for r in query(cli, DEPTH, DEPTH_LADDER)] + [(r, False) for r in query(cli, DEPTH, DEPTH_RUNS)]
    fitted = {}
    for r, ladder in rows:
        h = r["n_heads"]
        key = (f"({h},{h})", str(r["d_model"]), f"{r['n_layers']}" + (" (ladder)" if ladder else ""))
        assert f"{r['params_non_embedding']}" in DEPTH_LAW  # the README's snippet evaluates the law at this N
        pred = float(law.predict(laws[(h, h)]["params"], [r["params_non_embedding"]])[0])
        fitted[(h, r["d_model"], r["n_layers"])] = (r["params_non_embedding"], r["val_loss"], pred)
        c.cell(t, key, "N", r["params_non_embedding"])
        c.cell(t, key, "b", r["batch_size"])
        c.cell(t, key, "steps", r["total_steps"])
        c.cell(t, key, "loss", r["val_loss"])
        c.cell(t, key, "law", pred)
        c.cell(t, key, "loss − law", r["val_loss"] - pred)
    deeper = [v[1] - v[2] for (h, d, L), v in fitted.items() if h == 8 and L > 4]
    c.phrase(text, f"Its four deeper runs land {like('+0.000', min(deeper))} to {like('+0.000', max(deeper))} "
                   "from L(N)")
    (n4, l4, p4), (n6, l6, p6) = fitted[(1, 192, 4)], fitted[(1, 192, 6)]
    c.phrase(text, f"At d 192, L 4 → L 6 lowers the loss by {l4 - l6:.3f} nats for {n6 / n4:.1f} × N. Its law "
                   f"predicts {p4 - p6:.3f} of that")
    c.phrase(text, f"At d 256, L 5 is {fitted[(1, 256, 4)][1] - fitted[(1, 256, 5)][1]:.3f} below L 4")
    row = measured_row(DEPTH)
    c.phrase(row, f"lowers it {l4 - l6:.3f} nats for {n6 / n4:.1f} × N, where its law predicts {p4 - p6:.3f}")
    c.phrase(row, f"(8,8) stays within {max(abs(x) for x in deeper):.3f} of its law")
    c.done()
