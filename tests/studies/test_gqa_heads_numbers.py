"""studies/gqa-heads/README.md's numbers, re-derived by the commands the README shows, against the numbers it states
(tests/studies/numbers.py says how)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.studies.readme_numbers import (
    CANDIDATES,
    LAW,
    STUDIES,
    Check,
    Table,
    by_group,
    check_fits_file,
    export,
    fit,
    fits_of,
    heads,
    held_out,
    label,
    measured_row,
    query,
    readme,
    shows,
)

HEADS = "gqa-heads"
HEADS_RUNS = ("costlaw query --db studies/gqa-heads/results.duckdb "
              "\"select * from run_summary where sweep = 'gqa-heads'\"")
HEADS_EXPORT = ("costlaw query --db studies/gqa-heads/results.duckdb --format parquet --out /tmp/gqa-heads.parquet "
                "\"select n_heads, n_kv_heads, d_model, n_layers, seed, params_non_embedding as N, val_loss as loss "
                "from runs where sweep = 'gqa-heads'\"")
HEADS_MEANS = ("costlaw query --db studies/gqa-heads/results.duckdb --format parquet --out "
               "/tmp/gqa-heads-seedmean.parquet \"select n_heads, n_kv_heads, d_model, n_layers, "
               "any_value(params_non_embedding) as N, avg(val_loss) as loss, count(*) as seeds from runs "
               "where sweep = 'gqa-heads' group by all\"")
HEADS_EXPORTS = [HEADS_EXPORT, HEADS_MEANS]
HEADS_FITS = {"fits.json": f"costlaw fit --data /tmp/gqa-heads.parquet {LAW} --bootstrap 1000 --holdout-largest 1 "
                           "--seed 0 --out studies/gqa-heads/fits.json"}
HEADS_FIT_MEANS = f"costlaw fit --data /tmp/gqa-heads-seedmean.parquet {LAW}"
HEADS_NH = ('costlaw fit --data /tmp/gqa-heads.parquet --law power-plus-constant --x n_heads '
            '--group-by d_model,n_layers --where "n_heads == n_kv_heads and d_model <= 512"')
HEADS_PLATEAU = ('costlaw query --db studies/gqa-heads/results.duckdb "select n_heads, n_kv_heads, d_model, n_layers, '
                 "seed, total_steps, (select min(step) from steps s where s.run_id = r.run_id and s.loss < 1.0) as "
                 "first_below_1, (select avg(loss) from steps s where s.run_id = r.run_id and s.step between 2000 and "
                 "2350) as mean_2000_2350, val_loss from runs r where sweep = 'gqa-heads' and d_model >= 192 order by "
                 'all"')
HEADS_FIXED_N = """python -c "import json; from costlaw.fitting import get_law
for c in json.load(open('studies/gqa-heads/fits.json'))['candidates']:
    print(c['group'], get_law('gqa-size').predict(c['params'], [1e6, 3e6, 8e6, 15e6, 30e6]).round(3))\""""
HEADS_ROUNDS = """costlaw query --db studies/gqa-heads/results.duckdb "select case
when seed = 0 and d_model <= 320 then 'r1' when seed = 0 and d_model = 384 and n_heads = 8 then 'r2'
when seed = 0 and d_model = 384 then 'r3'
when seed = 0 and d_model = 512 and (n_heads = 1 or n_kv_heads = 8) then 'r4a'
when seed = 0 and d_model = 512 and n_heads = 8 then 'r4b' when seed = 0 and d_model = 512 then 'r4c'
when seed = 1 and d_model = 512 then 'r5' when n_layers = 7 then 'r8'
when seed = 0 and d_model = 640 then 'r6a–e' when d_model = 640 then 'r7'
when n_heads = n_kv_heads and n_heads in (1, 8) then 'r9' when n_heads = 8 then 'r10' else 'r11' end as round,
count(*) as runs, sum(c_train_flops_per_token * tokens) / 1e15 as training_pflop, sum(wall_s) as run_wall,
sum(train_s - compile_s) as steps_after_compile, sum(compile_s) as compile, sum(wall_s - train_s) as other
from runs where sweep = 'gqa-heads' group by all order by min(created)\""""


def round_row(table: Table, name: str) -> str:
    """The first cell of the row of round `name` ("r6a–e (H200)", "r1 (d ≤ 320, 6 per GPU)" ...)."""
    found = [r[0] for r in table.rows if r[0].split(" ")[0] == name]
    assert len(found) == 1, (name, found)
    return found[0]


def test_gqa_heads(cli, tmp_path):
    import statistics

    from costlaw.fitting import get_law

    text, c = readme(HEADS), Check(f"studies/{HEADS}/README.md")
    runs = query(cli, HEADS, HEADS_RUNS)
    c.phrase(text, f"lists the {len(runs)} ladder runs")
    # validation loss (and N) by shape and seed
    t = Table(text, "d, L", "8,8", where=c.where)
    for r in runs:
        d, L, s = r["d_model"], r["n_layers"], r["seed"]
        key = f"{d}, {L}" + (", seed 1" if s else "") + (" (H200)" if r["gpu"] == "NVIDIA H200" and d < 640 else "")
        if d == 640:
            key = f"{d}, {L}" + (", seed 1" if s else "") + " (H200)"
        c.cell(t, key, heads(r), r["val_loss"], None if s else r["params_non_embedding"])
    pairs = {}
    for r in runs:
        pairs.setdefault((r["d_model"], heads(r)), {})[r["seed"]] = r["val_loss"]
    small = [abs(v[1] - v[0]) for (d, _), v in pairs.items() if d <= 384]
    c.phrase(text, f"At d 128–384 the two seeds differ by {min(small):.3f}–{max(small):.3f} (median "
                   f"{statistics.median(small):.3f} over the {len(small)} pairs")

    paths = {p: str(export(cli, HEADS, cmd, tmp_path / Path(p).name))
             for p, cmd in (("/tmp/gqa-heads.parquet", HEADS_EXPORT), ("/tmp/gqa-heads-seedmean.parquet", HEADS_MEANS))}
    docs = fits_of(cli, HEADS, HEADS_FITS, paths)
    files = {name: check_fits_file(c, doc, STUDIES / HEADS / name) for name, doc in docs.items()}
    every = by_group(docs["fits.json"], "n_heads", "n_kv_heads")
    means = by_group(fit(cli, HEADS, HEADS_FIT_MEANS, **paths), "n_heads", "n_kv_heads")
    seeds = {round(r["val_loss"], 12): r["seed"] for r in runs if r["d_model"] == 640}
    ft = Table(text, "(n_h, n_kv)", "runs", "a", "b", where=c.where)
    for g, f in every.items():
        key, p, ci = label(g), f["params"], files["fits.json"][g]["ci95"]
        c.cell(ft, key, "runs", f["n_points"])
        for k in ("a", "b", "E"):
            c.cell(ft, key, k, p[k])
        c.cell(ft, key, "E 95%", *ci["E"])
        c.cell(ft, key, "b 95%", *ci["b"])
        c.cell(ft, key, "R²", f["r2"])
        c.cell(ft, key, "R², seed means", means[g]["r2"])
        c.cell(ft, key, "ceiling", f["r2_ceiling"])
        ho = held_out(f, seeds)
        c.cell(ft, key, "leave-largest-out: N", f["holdout"]["rows"][0]["x"]["N"])
        c.cell(ft, key, "measured", *[h[1] for h in ho])
        c.cell(ft, key, "predicted", ho[0][2])
        c.cell(ft, key, "rel. error", *[h[3] for h in ho])
    clear = sorted(((f["r2"], g) for g, f in every.items() if f["r2"] >= 0.98), reverse=True)
    c.phrase(text, "**Fitted to every run, three of six candidates clear it**: "
             + ", ".join(f"({label(g)}) {r:.3f}" for r, g in clear))
    c.phrase(text, "**Fitted to the seed means, four clear it**: " + ", ".join(
        f"({label(g)}) {r:.3f}" for r, g in sorted(((m["r2"], g) for g, m in means.items() if m["r2"] >= 0.98),
                                                   reverse=True)))

    h22 = held_out(every[(2, 2)], seeds)[0]
    c.phrase(text, f"(2,2)'s d 640 run is {h22[1] - h22[2]:.3f} nats above its prediction")
    c.phrase(text, "the bootstrap bounds E away from 0 for " + ", ".join(
        f"({label(g)}) ({files['fits.json'][g]['ci95']['E'][0]:.2f}–{files['fits.json'][g]['ci95']['E'][1]:.2f})"
        for g in [(8, 2), (8, 1), (4, 4)]) + " and, loosely, (8,8) ("
        f"{files['fits.json'][(8, 8)]['ci95']['E'][0]:.2f}–{files['fits.json'][(8, 8)]['ci95']['E'][1]:.2f})")
    lo = [h[3] for g in [(8, 2), (8, 1), (4, 4)] for h in held_out(every[g], seeds)]
    c.phrase(text, f"within {100 * max(map(abs, lo)):.1f}% for (8,2), (8,1) and (4,4)")
    noise = [(2, 2), (8, 1), (4, 4)]
    c.phrase(text, "noise allows (" + ", ".join(f"{every[g]['r2']:.3f} of {every[g]['r2_ceiling']:.3f}" for g in noise)
             + f"), and the law fits their seed means at {min(means[g]['r2'] for g in noise):.3f}–"
               f"{max(means[g]['r2'] for g in noise):.3f}")

    # the plateau: first logged step below 1.0, the mean over steps 2,000-2,350
    pl = {(r["n_heads"], r["n_kv_heads"], r["d_model"], r["seed"]): r for r in query(cli, HEADS, HEADS_PLATEAU)}
    pt = Table(text, "(n_h, n_kv)", "d 320", where=c.where)
    for cand in CANDIDATES:
        g = tuple(int(x) for x in cand.split(","))
        for d in (320, 384, 512, 640):
            r = pl[(*g, d, 0)]
            cell = pt.cell(cand, f"d {d}" + (" (H200)" if d == 640 else ""))
            if r["first_below_1"] is None:
                c.equal(f"{cand} d {d}", cell.replace("**", ""), f"never (of {r['total_steps']:,})")
            else:
                c.cell(pt, cand, f"d {d}" + (" (H200)" if d == 640 else ""), r["first_below_1"])
        c.cell(pt, cand, "steps in the d 512 run", pl[(*g, 512, 0)]["total_steps"])
        c.cell(pt, cand, "steps in the d 640 run", pl[(*g, 640, 0)]["total_steps"])
    st = Table(text, "(n_h, n_kv), size", "seed", where=c.where)
    for row in st.rows:
        cand, d = re.fullmatch(r"(\d,\d), d (\d+)", row[0]).groups()
        r = pl[(*map(int, cand.split(",")), int(d), int(row[1]))]
        key = (row[0], row[1])
        col = "first step with training loss < 1.0"
        if r["first_below_1"] is None:
            c.equal(f"{key} {col}", row[2], "never")
        else:
            c.cell(st, key, col, r["first_below_1"])
        if r["mean_2000_2350"] is None:
            c.equal(f"{key} mean", row[3], "—")
        else:
            c.cell(st, key, "mean loss, steps 2,000–2,350", r["mean_2000_2350"])
        c.cell(st, key, "val loss", r["val_loss"])

    # the laws at a fixed N (from the committed fits file, as the README's snippet reads it)
    shows(HEADS, HEADS_FIXED_N)
    law = get_law("gqa-size")
    nt = Table(text, "N", "8,8", where=c.where)
    for g, f in files["fits.json"].items():
        for n, v in zip(("1 M", "3 M", "8 M", "15 M", "30 M"), law.predict(f["params"], [1e6, 3e6, 8e6, 15e6, 30e6])):
            c.cell(nt, n, label(g), v)

    # l(n_h) at each shape
    lt = Table(text, "d, L", "runs", "a", where=c.where)
    for f in fit(cli, HEADS, HEADS_NH, **paths)["candidates"]:
        key, p = f"{f['group']['d_model']}, {f['group']['n_layers']}", f["params"]
        c.cell(lt, key, "runs", f["n_points"])
        for k in ("a", "b", "c"):
            c.cell(lt, key, k, p[k])
        c.cell(lt, key, "R²", f["r2"])

    # the rounds: runs and training PFLOP, and the share of run wall in training steps
    rounds = {r["round"]: r for r in query(cli, HEADS, HEADS_ROUNDS)}
    rt = Table(text, "round", "`--where`", where=c.where)
    for name, r in rounds.items():
        key = round_row(rt, name)
        c.cell(rt, key, "runs", r["runs"])
        c.cell(rt, key, "training PFLOP", r["training_pflop"])
    share = Table(text, "round", "runs", "run wall (s)", where=c.where)
    merged = dict(rounds)
    merged["r4a–c"] = {k: sum(rounds[f"r4{x}"][k] for x in "abc") for k in rounds["r1"] if k != "round"}
    for name in ("r1", "r2", "r3", "r4a–c", "r5", "r6a–e", "r7", "r8", "r9", "r10", "r11"):
        r, key = merged[name], round_row(share, name)
        c.cell(share, key, "runs", r["runs"])
        c.cell(share, key, "run wall (s)", r["run_wall"])
        c.cell(share, key, "steps after compile", r["steps_after_compile"])
        c.cell(share, key, "compile", r["compile"])
        c.cell(share, key, "start-up, eval, I/O", r["other"])
        c.cell(share, key, "step share", r["steps_after_compile"] / r["run_wall"])

    row = measured_row(HEADS)
    c.phrase(row, f"{len(runs)} runs")
    for g in [(8, 2), (8, 1), (4, 4)]:
        c.phrase(row, f"({label(g)}) {every[g]['r2']:.3f}")
    c.phrase(row, f"(2,2) {every[(2, 2)]['r2']:.3f} ({means[(2, 2)]['r2']:.3f} on seed means), (8,8) "
                  f"{every[(8, 8)]['r2']:.3f}, (1,1) {every[(1, 1)]['r2']:.3f}")
    worst = max(abs(h[3]) for g in [(8, 2), (8, 1), (4, 4)] for h in held_out(every[g], seeds))
    c.phrase(row, f"within {100 * worst:.1f}% for (8,2), (8,1), (4,4)")
    c.phrase(row, f"seed spread median {statistics.median(small):.3f}, up to {max(small):.3f} nats at d ≤ 384")
    c.done()
