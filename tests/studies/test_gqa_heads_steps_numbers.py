"""studies/gqa-heads-steps/README.md's numbers, re-derived by the commands the README shows, against the numbers it
states (tests/studies/numbers.py says how)."""

from __future__ import annotations

import json

from tests.studies.readme_numbers import (
    CANDIDATES,
    LAW,
    STUDIES,
    Check,
    Table,
    argv,
    by_group,
    check_fits_file,
    check_law_table,
    export,
    fit,
    fits_of,
    heads,
    held_out,
    label,
    ladder_rows,
    like,
    measured_row,
    query,
    readme,
    shows,
)
from tests.studies.test_gqa_heads_numbers import HEADS_RUNS

STEPS = "gqa-heads-steps"
STEPS_RUNS = ('costlaw query --db studies/gqa-heads-steps/results.duckdb "select n_heads, n_kv_heads, d_model, '
              'n_layers, seed, batch_size, gpu, tokens, val_loss, cost_context, c_infer_flops_per_token, m_infer_bytes '
              'from runs order by all"')
STEPS_EXPORT = ('costlaw query --db studies/gqa-heads-steps/results.duckdb --format parquet --out '
                '/tmp/gqa-heads-steps.parquet "select n_heads, n_kv_heads, d_model, n_layers, seed, '
                'params_non_embedding as N, val_loss as loss from runs"')
STEPS_MEANS = ('costlaw query --db studies/gqa-heads-steps/results.duckdb --format parquet --out '
               '/tmp/gqa-heads-steps-seedmean.parquet "select n_heads, n_kv_heads, d_model, n_layers, '
               'any_value(params_non_embedding) as N, avg(val_loss) as loss, count(*) as seeds from runs group by all"')

STEPS_FITS = {
    "fits.json": f"costlaw fit --data /tmp/gqa-heads-steps.parquet {LAW} --bootstrap 1000 --holdout-largest 1 --seed 0 "
                 "--out studies/gqa-heads-steps/fits.json",
    "fits-seed0.json": f'costlaw fit --data /tmp/gqa-heads-steps.parquet {LAW} --where "seed == 0" --bootstrap 1000 '
                       "--holdout-largest 1 --seed 0 --out studies/gqa-heads-steps/fits-seed0.json",
    "fits-seed1.json": f'costlaw fit --data /tmp/gqa-heads-steps.parquet {LAW} --where "seed == 1" '
                       "--bootstrap 0 --holdout-largest 1 --seed 0 --out studies/gqa-heads-steps/fits-seed1.json",
    "fits-seed2.json": f'costlaw fit --data /tmp/gqa-heads-steps.parquet {LAW} --where "seed == 2" '
                       "--bootstrap 0 --holdout-largest 1 --seed 0 --out studies/gqa-heads-steps/fits-seed2.json",
    "fits-seedmean.json": f"costlaw fit --data /tmp/gqa-heads-steps-seedmean.parquet {LAW} --bootstrap 1000 "
                          "--holdout-largest 1 --seed 0 --out studies/gqa-heads-steps/fits-seedmean.json",
}
STEPS_EXPORTS = [STEPS_EXPORT, STEPS_MEANS]
STEPS_HEADS = ('costlaw fit --data /tmp/gqa-heads-steps.parquet --law power-plus-constant --x n_heads '
               '--where "n_heads == n_kv_heads and d_model == 512"')


def test_gqa_heads_steps(cli, tmp_path):
    import statistics

    text, c = readme(STEPS), Check(f"studies/{STEPS}/README.md")
    runs = query(cli, STEPS, STEPS_RUNS)
    c.phrase(text, f"`results.duckdb` holds {len(runs)} runs")
    # validation loss by size and seed
    t = Table(text, "d, L", "b", where=c.where)
    by_d = ladder_rows(runs)
    for d, row in by_d.items():
        key = next(r[0] for r in t.rows if r[0].split(",")[0] == str(d))
        for cand in CANDIDATES:
            c.cell(t, key, cand, *row[cand])
        batches = sorted({r["batch_size"] for r in runs if r["d_model"] == d})
        c.equal(f"d {d} batch", t.cell(key, "b"), "/".join(map(str, batches)))
    # seed spread: seeds 0 and 1 of each config
    pairs = {(d, cand): abs(v[1] - v[0]) for d, row in by_d.items() for cand, v in row.items()}
    spread = list(pairs.values())
    worst = max(pairs, key=pairs.get)
    c.phrase(text, f"Across the {len(pairs)} configs, seeds 0 and 1 differ by a median of "
                   f"{statistics.median(spread):.3f} nats, and by up to {max(spread):.3f} (({worst[1]}) at "
                   f"d {worst[0]})")
    for d in (128, 256, 384, 512, 640):
        c.phrase(text, f"{statistics.median(v for (dd, _), v in pairs.items() if dd == d):.3f} at d {d}")

    # the fits: parameters, R², ceilings and held-out errors by the README's commands (no bootstrap), the
    # committed files against them, the intervals from the committed files
    paths = {"/tmp/gqa-heads-steps.parquet": str(export(cli, STEPS, STEPS_EXPORT, tmp_path / "runs.parquet")),
             "/tmp/gqa-heads-steps-seedmean.parquet": str(export(cli, STEPS, STEPS_MEANS, tmp_path / "mean.parquet"))}
    docs = fits_of(cli, STEPS, STEPS_FITS, paths)
    files = {name: check_fits_file(c, doc, STEPS_DIR / name) for name, doc in docs.items()}
    every = by_group(docs["fits.json"], "n_heads", "n_kv_heads")
    seeds = {round(r["val_loss"], 12): r["seed"] for r in runs if r["d_model"] == 640}
    check_law_table(c, text, every, files["fits.json"], seeds, "predicted from d ≤ 512")
    r2 = Table(text, "(n_h, n_kv)", "every run", where=c.where)
    for name, column in (("fits.json", "every run"), ("fits-seed0.json", "seed 0 (`fits-seed0.json`)"),
                         ("fits-seed1.json", "seed 1"), ("fits-seed2.json", "seed 2"),
                         ("fits-seedmean.json", "seed means (`fits-seedmean.json`)")):
        groups = by_group(docs[name], "n_heads", "n_kv_heads")
        for cand in CANDIDATES:
            g = tuple(int(x) for x in cand.split(","))
            if g in groups:
                c.cell(r2, cand, column, groups[g]["r2"])
            else:
                c.equal(f"{cand} {column}", r2.cell(cand, column), "—")
    for g, f in every.items():
        c.cell(r2, label(g), "ceiling", f["r2_ceiling"])
    means = by_group(docs["fits-seedmean.json"], "n_heads", "n_kv_heads")
    mean_err = {g: like("+0.0%", f["holdout"]["rows"][0]["rel_error"]) for g, f in means.items()}
    c.phrase(text, "On the seed means: " + ", ".join(f"{mean_err[g]} ({label(g)})" for g in
                                                     [(8, 8), (8, 2), (8, 1), (4, 4), (2, 2)])
             + f" and {mean_err[(1, 1)]} (1,1)")
    # l(n_h) at d 512
    (nh,) = fit(cli, STEPS, STEPS_HEADS, **paths)["candidates"]
    p = nh["params"]
    c.phrase(text, f"{p['a']:.3f} · n_h^{like('−0.000', p['b'])} + {p['c']:.3f}, R² {nh['r2']:.3f}, on "
                   f"{nh['n_points']} runs")
    c.phrase(text, f"Its ceiling is {nh['r2_ceiling']:.3f}")
    # against gqa-heads' seed-0 runs of the same configs
    shows(STEPS, HEADS_RUNS)
    old = {(r["d_model"], heads(r)): r["val_loss"] for r in json.loads(cli(argv(HEADS_RUNS) + ["--format", "json"]))
           if r["seed"] == 0}
    drop = [old[(d, cand)] - v[0] for d, row in by_d.items() if d <= 512 for cand, v in row.items()]
    c.phrase(text, f"same config ({len(drop)} pairs), by {min(drop):.3f}–{max(drop):.3f} nats")
    # (1,1)'s three-seed means, size to size
    m11 = [statistics.mean(by_d[d]["1,1"]) for d in sorted(by_d)]
    c.phrase(text, "Its three-seed mean falls " + ", ".join(f"{a - b:.2f}" for a, b in zip(m11, m11[1:-1]))
             + f" and {m11[-2] - m11[-1]:.2f} nats from each size to the next")
    row = measured_row(STEPS)
    c.phrase(row, f"{len(runs)} runs")
    c.phrase(row, f"every seed-0 point below the old ladder's, by {min(drop):.3f}–{max(drop):.3f} nats")
    for g in [(8, 1), (8, 8), (8, 2), (2, 2), (4, 4)]:
        c.phrase(row, f"({label(g)}) {by_group(docs['fits-seed0.json'], 'n_heads', 'n_kv_heads')[g]['r2']:.3f}")
    for g in [(8, 8), (8, 1), (2, 2)]:
        c.phrase(row, f"({label(g)}) {every[g]['r2']:.3f}")
    c.phrase(row, f"caps R² at {every[(8, 2)]['r2_ceiling']:.5f} and {every[(4, 4)]['r2_ceiling']:.4f}")
    errs = sorted(h[3] for g, f in every.items() if g != (1, 1) for h in held_out(f, seeds))
    e11 = sorted(h[3] for h in held_out(every[(1, 1)], seeds))
    c.phrase(row, f"(every-run fit): {like('−0.0%', errs[0])} to {like('+0.0%', errs[-1])}; (1,1) "
                  f"{like('−0.0%', e11[-1])} to {like('−0.0%', e11[0])}")
    c.done()


STEPS_DIR = STUDIES / STEPS
