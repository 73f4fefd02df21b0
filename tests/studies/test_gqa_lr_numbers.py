"""studies/gqa-lr/README.md's numbers, re-derived by the commands the README shows, against the numbers it states
(tests/studies/numbers.py says how)."""

from __future__ import annotations

from tests.studies.readme_numbers import Check, Table, query, readme

LR = "gqa-lr"
LR_RUNS = ('costlaw query --db studies/gqa-lr/results.duckdb "select n_heads, d_model, n_layers, lr, '
           "params_non_embedding, val_loss, (select min(step) from steps s where s.run_id = r.run_id and "
           's.loss < 1.0) as first_below_1 from runs r order by 1, 2, 4"')
LR_LADDER = ('costlaw query --db studies/gqa-heads/results.duckdb "select n_heads, d_model, n_layers, seed, val_loss '
             "from runs where sweep = 'gqa-heads' and n_heads = n_kv_heads and n_heads in (1, 8) and d_model <= 384 "
             'order by all"')


def test_gqa_lr(cli):
    import statistics

    text, c = readme(LR), Check(f"studies/{LR}/README.md")
    runs = query(cli, LR, LR_RUNS)
    ladder = {(r["n_heads"], r["d_model"], r["seed"]): r["val_loss"] for r in query(cli, LR, LR_LADDER)}
    t = Table(text, "(n_h, n_kv), d, L", "N", where=c.where)
    loss = {}
    for r in runs:
        h, d = r["n_heads"], r["d_model"]
        loss[(h, d, r["lr"])] = r["val_loss"]
        key = f"({h},{h}), {d}, {r['n_layers']}"
        col = {0.001: "LR 1e-3", 0.002: "LR 2e-3 (control)", 0.004: "LR 4e-3"}[r["lr"]]
        c.cell(t, key, "N", r["params_non_embedding"])
        cell = t.cell(key, col)
        c.cell(t, key, col, r["val_loss"], r["first_below_1"])
        if r["first_below_1"] is None:
            c.equal(f"{key} {col} never leaves", "never" in cell, True)
        c.cell(t, key, "gqa-heads seed 0 / seed 1 (LR 2e-3)", ladder[(h, d, 0)], ladder[(h, d, 1)])
    gain = [loss[(1, d, 0.002)] - loss[(1, d, 0.001)] for d in (256, 320)]
    c.phrase(text, f"The lowest (1,1) losses, at 1e-3, are {min(gain):.3f}–{max(gain):.3f} below the control")
    m = {d: statistics.mean([ladder[(1, d, 0)], ladder[(1, d, 1)]]) for d in (256, 320, 384)}
    c.phrase(text, f"fall {m[256] - m[320]:.2f} from d 256 to d 320 ({m[256]:.3f} → {m[320]:.3f}), then "
                   f"{m[320] - m[384]:.2f} to d 384 ({m[384]:.3f})")
    lo = [loss[(8, d, 0.001)] - loss[(8, d, 0.002)] for d in (192, 256)]
    hi = [loss[(8, d, 0.004)] - loss[(8, d, 0.002)] for d in (192, 256)]
    c.phrase(text, f"{min(lo):.2f}–{max(lo):.2f} below 1e-3 and {min(hi):.2f}–{max(hi):.2f} below 4e-3")
    rerun = [abs(loss[(h, d, 0.002)] - ladder[(h, d, 0)]) for h, d in ((1, 256), (1, 320), (8, 192), (8, 256))]
    c.phrase(text, f"It lands {min(rerun):.4f} to {max(rerun):.3f} from the ladder's seed-0 values")
    c.phrase(text, f"(8,8) d 256 {loss[(8, 256, 0.002)]:.5f} against {ladder[(8, 256, 0)]:.5f}")
    c.done()
