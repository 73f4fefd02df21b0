"""studies/gqa-tokens/README.md's numbers, re-derived by the commands the README shows, against the numbers it states
(tests/studies/numbers.py says how)."""

from __future__ import annotations

from tests.studies.readme_numbers import Check, Table, measured_row, query, readme, shows
from tests.studies.test_gqa_lr_numbers import LR, LR_RUNS

TOKENS = "gqa-tokens"
TOKENS_RUNS = ('costlaw query --db studies/gqa-tokens/results.duckdb "select n_heads, d_model, n_layers, '
               "params_non_embedding, batch_size, tokens, steps, (select min(step) from steps s where s.run_id = "
               'r.run_id and s.loss < 1.0) as first_below_1, val_loss from runs r order by all"')
TOKENS_LADDER = ('costlaw query --db studies/gqa-heads/results.duckdb "select n_heads, d_model, n_layers, seed, '
                 "total_steps, (select min(step) from steps s where s.run_id = r.run_id and s.loss < 1.0) as "
                 "first_below_1, val_loss from runs r where sweep = 'gqa-heads' and n_heads = n_kv_heads and n_heads "
                 'in (1, 8) and d_model <= 320 order by all"')


def test_gqa_tokens(cli):
    text, c = readme(TOKENS), Check(f"studies/{TOKENS}/README.md")
    runs = query(cli, TOKENS, TOKENS_RUNS)
    ladder = {(r["n_heads"], r["d_model"], r["seed"]): r for r in query(cli, TOKENS, TOKENS_LADDER)}
    shows(LR, LR_RUNS)
    control = {(r["n_heads"], r["d_model"]): r["val_loss"] for r in query(cli, LR, LR_RUNS) if r["lr"] == 0.002}
    r1 = Table(text, "(1,1), d, L", "budget", where=c.where)
    r2 = Table(text, "(n_h, n_kv), d, L", "N", where=c.where)
    lower = []
    for r in runs:
        h, d = r["n_heads"], r["d_model"]
        lad = [ladder[(h, d, s)] for s in (0, 1)]
        per_n = r["tokens"] / r["params_non_embedding"]
        if per_n > 21:  # round 1: 40 or 60 x N
            key = f"{d}, {r['n_layers']}"
            c.equal(f"{key} budget", r1.cell(key, "budget"), f"{round(per_n)} × N")
            c.cell(r1, key, "steps", r["steps"])
            c.cell(r1, key, "first step with training loss < 1.0", r["first_below_1"])
            c.cell(r1, key, "tokens by then", r["first_below_1"] * r["batch_size"] * 2048)
            c.cell(r1, key, "val loss", r["val_loss"])
            c.cell(r1, key, "at 20 × N (ladder seed 0 / 1; gqa-lr control)", lad[0]["val_loss"], lad[1]["val_loss"],
                   control[(h, d)], lad[0]["total_steps"])
            c.phrase(text, f"{d}, {r['n_layers']} | {round(per_n)} × N | {r['steps']:,} | **{r['first_below_1']:,}**")
        else:
            key = f"({h},{h}), {d}, {r['n_layers']}"
            c.cell(r2, key, "N", r["params_non_embedding"])
            c.cell(r2, key, "rows per step", r["batch_size"])
            c.cell(r2, key, "steps", r["steps"])
            c.cell(r2, key, "leaves plateau at step", r["first_below_1"])
            c.cell(r2, key, "val loss", r["val_loss"])
            col = "ladder, 16–32 rows (seed 0 / seed 1)"
            c.cell(r2, key, col, lad[0]["val_loss"], lad[1]["val_loss"], lad[0]["total_steps"])
            c.equal(f"{key} ladder never", "never" in r2.cell(key, col), lad[0]["first_below_1"] is None)
            c.cell(r2, key, "change", *[r["val_loss"] - x["val_loss"] for x in lad])
            lower += [x["val_loss"] - r["val_loss"] for x in lad]
    c.phrase(text, f"ends {min(lower):.2f}–{max(lower):.2f} nats lower")
    c.phrase(measured_row(TOKENS), f"end {min(lower):.2f}–{max(lower):.2f} nats lower")
    c.done()
