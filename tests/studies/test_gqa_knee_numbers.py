"""studies/gqa-knee/README.md's numbers, re-derived by the commands the README shows, against the numbers it states
(tests/studies/numbers.py says how)."""

from __future__ import annotations

from tests.studies.readme_numbers import Check, Table, measured_row, query, readme

KNEE = "gqa-knee"
KNEE_RUNS = ('costlaw query --db studies/gqa-knee/results.duckdb "select n_heads, d_model, n_layers, seed, tokens, '
             "steps, params_non_embedding, val_loss, val_loss - (select avg(loss) from (select loss from steps s "
             'where s.run_id = r.run_id order by step desc limit 20)) as above_train from runs r order by all"')
KNEE_LADDER = [
    ('costlaw query --db studies/gqa-aspect/results.duckdb "select n_heads, d_model, n_layers, seed, tokens, val_loss '
     'from runs where d_model = 192 and n_heads = n_kv_heads and n_heads in (1, 8) and seed > 0 order by all"'),
    ('costlaw query --db studies/gqa-heads-steps/results.duckdb "select n_heads, d_model, n_layers, seed, tokens, '
     'val_loss from runs where d_model = 256 and n_heads = n_kv_heads and n_heads in (1, 8) and seed > 0 '
     'order by all"'),
]


def test_gqa_knee(cli):
    text, c = readme(KNEE), Check(f"studies/{KNEE}/README.md")
    runs = query(cli, KNEE, KNEE_RUNS)
    ladder = [r for cmd in KNEE_LADDER for r in query(cli, KNEE, cmd)]
    loss, n_of = {}, {}
    for r in runs:
        n_of[(r["n_heads"], r["d_model"])] = r["params_non_embedding"]
        loss[(r["n_heads"], r["d_model"], r["seed"], round(r["tokens"] / r["params_non_embedding"]))] = r["val_loss"]
    for r in ladder:
        loss[(r["n_heads"], r["d_model"], r["seed"], 20)] = r["val_loss"]
    t = Table(text, "config", "N", where=c.where)
    for (h, d), n in n_of.items():
        key = next(row[0] for row in t.rows if row[0].startswith(f"({h},{h}) d {d} "))
        seeds = (1, 2) if h == 1 else (1,)
        c.cell(t, key, "N", n)
        for x, col in ((20, "20 × N (the ladder)"), (40, "40 × N"), (80, "80 × N")):
            c.cell(t, key, col, *[loss[(h, d, s, x)] for s in seeds])
        for x in (40, 80):
            c.cell(t, key, f"gain 20 → {x}", *[loss[(h, d, s, 20)] - loss[(h, d, s, x)] for s in seeds])
    up = [loss[(1, 192, s, 80)] - loss[(1, 192, s, 40)] for s in (1, 2)]
    c.phrase(text, f"80 × N ends above 40 × N on both seeds, by {up[0]:.3f} and {up[1]:.3f}")
    c.phrase(text, f"Its two seeds, {abs(loss[(1, 256, 1, 20)] - loss[(1, 256, 2, 20)]):.3f} apart at 20 × N, land "
                   f"{abs(loss[(1, 256, 1, 80)] - loss[(1, 256, 2, 80)]):.3f} apart at 80 × N")
    above = [r["above_train"] for r in runs if r["n_heads"] == 1 and r["d_model"] == 192]
    rest = [r["above_train"] for r in runs if not (r["n_heads"] == 1 and r["d_model"] == 192)]
    c.phrase(text, f"The d 192 (1,1) runs end {min(above):.2f}–{max(above):.2f} nats above their final training loss")
    c.phrase(text, f"this study's other runs end {min(rest):.2f}–{max(rest):.2f} above theirs")
    g = {(h, d, x): sorted(loss[(h, d, s, 20)] - loss[(h, d, s, x)] for s in ((1, 2) if h == 1 else (1,)))
         for h in (1, 8) for d in (192, 256) for x in (40, 80)}
    row = measured_row(KNEE)
    c.phrase(row, f"{len(runs)} runs")
    c.phrase(row, f"lower (1,1) by {g[(1, 256, 40)][0]:.2f}–{g[(1, 256, 40)][1]:.2f} (2×) and "
                  f"{g[(1, 256, 80)][0]:.2f}–{g[(1, 256, 80)][1]:.2f} (4×) nats, against {g[(8, 256, 40)][0]:.3f} and "
                  f"{g[(8, 256, 80)][0]:.3f} for (8,8)")
    c.phrase(row, f"2× lowers (1,1) by {g[(1, 192, 40)][0]:.2f}–{g[(1, 192, 40)][1]:.2f}")
    c.done()
