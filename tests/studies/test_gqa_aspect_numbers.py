"""studies/gqa-aspect/README.md's numbers, re-derived by the commands the README shows, against the numbers it states
(tests/studies/numbers.py says how)."""

from __future__ import annotations

import json

from tests.studies.readme_numbers import (
    CANDIDATES,
    LAW,
    STUDIES,
    Check,
    Table,
    by_group,
    check_fits_file,
    check_law_table,
    committed_fits,
    fits_of,
    held_out,
    label,
    ladder_rows,
    like,
    measured_row,
    query,
    readme,
    shows,
)
from tests.studies.test_gqa_heads_steps_numbers import STEPS

ASPECT = "gqa-aspect"
ASPECT_RUNS = ('costlaw query --db studies/gqa-aspect/results.duckdb "select n_heads, n_kv_heads, d_model, n_layers, '
               'seed, gpu, tokens, val_loss from runs order by all"')
ASPECT_FITS = {
    "fits.json": f"costlaw fit --data studies/gqa-aspect/ladder.parquet {LAW} --bootstrap 1000 --holdout-largest 1 "
                 "--seed 0 --out studies/gqa-aspect/fits.json",
    "fits-seed0.json": f'costlaw fit --data studies/gqa-aspect/ladder.parquet {LAW} --where "seed == 0" '
                       "--bootstrap 1000 --holdout-largest 1 --seed 0 --out studies/gqa-aspect/fits-seed0.json",
    "fits-seed1.json": f'costlaw fit --data studies/gqa-aspect/ladder.parquet {LAW} --where "seed == 1" '
                       "--bootstrap 0 --holdout-largest 1 --seed 0 --out studies/gqa-aspect/fits-seed1.json",
    "fits-seed2.json": f'costlaw fit --data studies/gqa-aspect/ladder.parquet {LAW} --where "seed == 2" '
                       "--bootstrap 0 --holdout-largest 1 --seed 0 --out studies/gqa-aspect/fits-seed2.json",
    "fits-seedmean.json": f"costlaw fit --data studies/gqa-aspect/ladder-seedmean.parquet {LAW} --bootstrap 1000 "
                          "--holdout-largest 1 --seed 0 --out studies/gqa-aspect/fits-seedmean.json",
}
ASPECT_EXPORTS: list[str] = []


def test_gqa_aspect_ladder_files_are_its_query():
    """ladder.parquet and ladder-seedmean.parquet are what `python studies/gqa-aspect/ladder.py` writes from the
    two committed stores (its queries, run here in memory)."""
    import importlib.util

    import duckdb

    shows(ASPECT, "python studies/gqa-aspect/ladder.py")
    spec = importlib.util.spec_from_file_location("aspect_ladder", STUDIES / ASPECT / "ladder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    con = duckdb.connect()
    con.execute(f"attach '{STUDIES / ASPECT / 'results.duckdb'}' as a (read_only)")
    con.execute(f"attach '{STUDIES / STEPS / 'results.duckdb'}' as s (read_only)")
    con.execute(f"create temp table ladder as {mod.QUERY}")
    for name, sql in (("ladder.parquet", "select * from ladder"), ("ladder-seedmean.parquet", mod.MEAN)):
        derived = con.execute(sql).df()
        committed = con.execute(f"select * from '{STUDIES / ASPECT / name}'").df()
        assert derived.equals(committed), name


def test_gqa_aspect(cli):
    import statistics

    text, c = readme(ASPECT), Check(f"studies/{ASPECT}/README.md")
    runs = query(cli, ASPECT, ASPECT_RUNS)
    t = Table(text, "d, L", "8,8", where=c.where)
    by_d = ladder_rows(runs)
    for d, row in by_d.items():
        key = next(r[0] for r in t.rows if r[0].split(",")[0] == str(d))
        for cand in CANDIDATES:
            c.cell(t, key, cand, *row[cand])
    for d in (128, 192):
        gaps = [abs(v[1] - v[0]) for v in by_d[d].values()]
        c.phrase(text, f"{statistics.median(gaps):.3f} {'nats ' if d == 128 else ''}at d {d}")
    gaps = {(d, cand): abs(v[1] - v[0]) for d, row in by_d.items() for cand, v in row.items()}
    c.phrase(text, f"by up to {max(gaps.values()):.3f}")

    docs = fits_of(cli, ASPECT, ASPECT_FITS, {})
    files = {name: check_fits_file(c, doc, STUDIES / ASPECT / name) for name, doc in docs.items()}
    every = by_group(docs["fits.json"], "n_heads", "n_kv_heads")
    ladder = json.loads(cli(["query", "--db", f"studies/{STEPS}/results.duckdb", "--format", "json",
                             "select seed, val_loss from runs where d_model = 640"]))
    seeds = {round(r["val_loss"], 12): r["seed"] for r in ladder}
    check_law_table(c, text, every, files["fits.json"], seeds, "predicted", ceiling=True)
    r2 = Table(text, "(n_h, n_kv)", "every run", where=c.where)
    old_every, old_mean = committed_fits(STEPS, "fits.json"), committed_fits(STEPS, "fits-seedmean.json")
    for name, column in (("fits.json", "every run"), ("fits-seed0.json", "seed 0"), ("fits-seed1.json", "seed 1"),
                         ("fits-seed2.json", "seed 2"), ("fits-seedmean.json", "seed means")):
        groups = by_group(docs[name], "n_heads", "n_kv_heads")
        for cand in CANDIDATES:
            g = tuple(int(x) for x in cand.split(","))
            if g in groups:
                c.cell(r2, cand, column, groups[g]["r2"])
            else:
                c.equal(f"{cand} {column}", r2.cell(cand, column), "—")
    for g in every:
        c.cell(r2, label(g), "every run, old ladder", old_every[g]["r2"])
        c.cell(r2, label(g), "seed means, old ladder", old_mean[g]["r2"])
    four = [every[g]["r2"] for g in [(8, 8), (8, 2), (8, 1), (4, 4)]]
    olds = [old_every[g]["r2"] for g in [(8, 8), (8, 2), (8, 1), (4, 4)]]
    c.phrase(text, f"now reach {min(four):.3f}–{max(four):.3f}, up from {min(olds):.3f}–{max(olds):.3f} on the "
                   "old ladder")
    c.phrase(text, f"their ceilings were {old_every[(8, 2)]['r2_ceiling']:.4f} and "
                   f"{old_every[(4, 4)]['r2_ceiling']:.4f}. Here they are {every[(8, 2)]['r2_ceiling']:.4f} and "
                   f"{every[(4, 4)]['r2_ceiling']:.4f}")
    errs = [abs(h[3]) for g in [(8, 8), (8, 2), (8, 1), (4, 4)] for h in held_out(every[g], seeds)]
    c.phrase(text, f"Their d 640 predictions from d ≤ 512 are within {100 * max(errs):.1f}%")
    old_errs = [abs(h[3]) for g in [(8, 8), (8, 2), (8, 1), (4, 4)] for h in held_out(old_every[g], seeds)]
    c.phrase(text, f"the old ladder's were off by up to {100 * max(old_errs):.1f}%")
    seedmean = by_group(docs["fits-seedmean.json"], "n_heads", "n_kv_heads")
    e11 = sorted(h[3] for h in held_out(every[(1, 1)], seeds))
    c.phrase(text, f"R² is {every[(1, 1)]['r2']:.3f} on every run, {seedmean[(1, 1)]['r2']:.3f} on the "
                   "three-seed means")
    c.phrase(text, f"Leave-largest-out misses d 640 by {like('−0.0%', e11[-1])} to {like('−0.0%', e11[0])}")
    row = measured_row(ASPECT)
    c.phrase(row, f"{len(runs)} new runs")
    c.phrase(row, f"{sum(f['n_points'] for f in every.values())} runs fitted")
    for g in [(8, 8), (8, 1), (4, 4), (8, 2)]:
        c.phrase(row, f"({label(g)}) {every[g]['r2']:.3f}")
    c.phrase(row, f"within {100 * max(errs):.1f}% for those four")
    c.phrase(row, f"{min(olds):.3f}–{max(olds):.3f} on the old ladder")
    c.phrase(row, f"(2,2) {every[(2, 2)]['r2']:.3f} on every run ({seedmean[(2, 2)]['r2']:.3f} on seed means)")
    c.phrase(row, f"(1,1) {every[(1, 1)]['r2']:.3f} ({seedmean[(1, 1)]['r2']:.3f})")
    c.done()
