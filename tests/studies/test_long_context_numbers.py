"""studies/long-context/README.md's numbers, re-derived by the commands the README shows, against the numbers it states
(tests/studies/numbers.py says how)."""

from __future__ import annotations

import json
import math
import re

import numpy as np

from tests.studies.readme_numbers import Check, Table, measured_row, query, readme
from tests.studies.test_noise_floor_numbers import NOISE, NOISE_RUNS

LONG = "long-context"
LONG_RUNS = ('costlaw query --db studies/long-context/results.duckdb "select stage, d_model, n_layers, n_heads, '
             "n_kv_heads, params_non_embedding as N, seq_len, tokens, val_loss, (select value from evals e where "
             "e.run_id = r.run_id and e.eval = 'val_loss' and e.metric = 'loss_se') as val_loss_se, (select "
             "avg(accuracy) from retrieval t where t.run_id = r.run_id) as retrieval, wall_s from runs r order by "
             'stage desc, d_model, n_heads, n_kv_heads desc"')


def test_long_context(cli):
    text, c = readme(LONG), Check(f"studies/{LONG}/README.md")
    runs = query(cli, LONG, LONG_RUNS)
    assert len(runs) == 16 and {r["seq_len"] for r in runs if r["stage"] == "extend"} == {16384}
    loss = {(r["stage"], r["d_model"], r["n_heads"], r["n_kv_heads"]): r["val_loss"] for r in runs}
    t = Table(text, "config", "N", where=c.where)
    changes = []
    for r in (r for r in runs if r["stage"] == "pretrain"):
        d, h, k = r["d_model"], r["n_heads"], r["n_kv_heads"]
        key = f"({h},{k}) d {d} L {r['n_layers']}"
        c.cell(t, key, "N", r["N"])
        c.cell(t, key, "val loss at 2K (pretrain)", loss[("pretrain", d, h, k)])
        c.cell(t, key, "val loss at 16K (extended)", loss[("extend", d, h, k)])
        if h != k:
            gap = [loss[(s, d, h, k)] - loss[(s, d, 8, 8)] for s in ("pretrain", "extend")]
            c.cell(t, key, "− default at 2K", gap[0])
            c.cell(t, key, "− default at 16K", gap[1])
            c.cell(t, key, "change", gap[1] - gap[0])
            changes.append(gap)
    assert len(changes) == 6
    widen = [abs(b) - abs(a) for a, b in changes if (a > 0) == (b > 0)]
    c.equal("comparisons whose gap keeps its sign and widens", sum(w > 0 for w in widen), 6)
    c.phrase(text, f"by {min(widen):.4f}–{max(widen):.4f} nats")
    c.phrase(measured_row(LONG),
             f"all {len(widen)} gaps to the default widen, by {min(widen):.4f}–{max(widen):.4f} nats")
    se = {s: [r["val_loss_se"] for r in runs if r["stage"] == s] for s in ("pretrain", "extend")}
    c.phrase(text, f"The 16K val set's own error is {min(se['extend']):.4f}–{max(se['extend']):.4f}")
    c.phrase(text, f"({min(se['pretrain']):.4f}–{max(se['pretrain']):.4f} here)")
    c.equal("passkey accuracy", {r["retrieval"] for r in runs}, {0.0})
    o = json.loads(cli(["validate", "--db", "studies/long-context/results.duckdb", "--mode", "context",
                        "--json"]))["overall"]
    c.phrase(text, f"the gap widened in {o['widened']} of {o['n']} pairs (sign test p {o['sign_test_p']:.2g}), by "
                   f"{o['mean']:+.4f} nats on average. The pairs share {o['clusters']} reference runs (the default at "
                   f"d 192 and at d 256), whose pairs widened on average in {o['clusters_widened']} (sign test p "
                   f"{o['cluster_sign_test_p']:.3g}), and the standard error is {o['se_mean']:.4f}: the larger of the "
                   f"spread over pairs ({o['sd'] / math.sqrt(o['n']):.4f}), the val sets' error "
                   f"({o['val_se_mean']:.4f}) and the cluster-robust error over those references "
                   f"({o['se_mean_clustered']:.4f}, from two clusters")
    c.phrase(text, "The invariance holds within two standard errors." if o["holds"] else
             "The invariance does not hold within two standard errors.")
    twin = query(cli, NOISE, NOISE_RUNS)
    nf = next(r["val_loss"] for r in twin if r["seed"] == 0 and r["packing"] == "uniform")
    c.phrase(text, f"{loss[('pretrain', 256, 8, 2)]:.4f} here, {nf:.4f} there, a difference of "
                   f"{abs(nf - loss[('pretrain', 256, 8, 2)]):.4f}")
    c.done()


LADDER_RUNS = ('costlaw query --db studies/long-context/ladder.duckdb "select stage, family, d_model, n_layers, '
               "n_heads, n_kv_heads, params_non_embedding as N, status, val_loss, (select value from evals e where "
               "e.run_id = r.run_id and e.eval = 'val_loss' and e.metric = 'loss_se') as val_loss_se, (select "
               "avg(accuracy) from retrieval t where t.run_id = r.run_id) as retrieval, wall_s from runs r where "
               "stage != 'compress' order by d_model, n_heads desc, n_kv_heads desc, stage desc, family\"")
LADDER_PAIRS = [(8, 8), (8, 2), (8, 1), (16, 2), (4, 4), (4, 1)]


def context_overall(cli, store: str) -> tuple[str, ...]:
    """`costlaw validate --mode context` on studies/long-context/<store>.duckdb: its overall line's pairs, gaps
    widened, sign-test p, mean change and se, as printed."""
    out = cli(["validate", "--db", f"studies/long-context/{store}.duckdb", "--mode", "context"])
    overall = next(ln for ln in out.splitlines() if ln.startswith("overall:"))
    return re.search(r"(\d+) pairs; the gap widened .* in (\d+) \(sign test p ([\d.]+)\), "
                     r"by ([+-][\d.]+) on average \(se ([\d.]+)\)", overall).groups()


def test_long_context_round2(cli):
    """Round 2's first GPU attempt: its table, the invariance test, retrieval, hybrid and SnapKV numbers."""
    text, c = readme(LONG), Check(f"studies/{LONG}/README.md")
    runs = query(cli, LONG, LADDER_RUNS)
    by = {(r["stage"], r["family"], r["d_model"], r["n_heads"], r["n_kv_heads"]): r for r in runs}
    done = [r for r in runs if r["status"] == "completed"]
    c.equal("finished runs", len(runs), 46)
    c.equal("completed pretrain / extend, failed", (sum(r["stage"] == "pretrain" for r in done),
            sum(r["stage"] == "extend" for r in done), sum(r["status"] == "failed" for r in runs)), (21, 18, 7))
    t = Table(text, "config", "N", "val loss at 2K", where=c.where)

    def loss(r):
        return None if r is None else r["val_loss"] if r["status"] == "completed" else "OOM"

    for d, L in ((128, 2), (160, 3), (192, 3), (256, 4)):
        for h, k in LADDER_PAIRS:
            key = f"({h},{k}) d {d} L {L}"
            pre, dense, hyb = (by.get((s, f, d, h, k)) for s, f in
                               (("pretrain", "gqa"), ("extend", "gqa"), ("extend", "hybrid")))
            for col, r in (("val loss at 2K", pre), ("at 16K, dense", dense), ("at 16K, hybrid", hyb)):
                v = loss(r)
                if isinstance(v, float):
                    c.cell(t, key, col, v)
                else:
                    c.equal(f"{key} / {col}", t.cell(key, col), v or "lost")
            if pre:
                c.cell(t, key, "N", pre["N"])
                c.cell(t, key, "passkey at 2K", pre["retrieval"])
            if dense and dense["status"] == "completed":
                c.cell(t, key, "passkey at 16K (dense)", dense["retrieval"])
    se = {s: [r["val_loss_se"] for r in done if r["stage"] == s] for s in ("pretrain", "extend")}
    c.phrase(text, f"{min(se['pretrain']):.4f}–{max(se['pretrain']):.4f} at 2K (4,096 rows) and "
                   f"{min(se['extend']):.4f}–{max(se['extend']):.4f} at 16K (1,024 rows)")
    for d, h, k in ((192, 8, 8), (256, 8, 8), (256, 8, 1), (256, 4, 4)):
        hv, dv = by[("extend", "hybrid", d, h, k)]["val_loss"], by[("extend", "gqa", d, h, k)]["val_loss"]
        c.phrase(text, f"({h},{k}) d {d}: {hv:.4f} against {dv:.4f} ({hv - dv:+.4f})".replace("-", "−"))
    pairs, widened, p, mean, err = context_overall(cli, "ladder")
    c.phrase(text, f"widened in **{widened} of {pairs}** pairs (sign test p {p}), by **{mean} nats** on average "
                   f"(se {err})")
    kv = json.loads(cli(["query", "--db", "studies/long-context/ladder.duckdb", "select d_model, n_heads, n_kv_heads, "
                         "keep, delta_nll, retrieval_accuracy from kv_policy_evals where policy = 'snapkv'",
                         "--format", "json"]))
    c.equal("SnapKV rows", len(kv), 30)
    dn = {(r["d_model"], r["n_heads"], r["n_kv_heads"], r["keep"]): r for r in kv}
    for d in (160, 192, 256):
        c.phrase(text, " / ".join(f"{dn[(d, 8, 8, k)]['delta_nll']:+.4f}" for k in (0.5, 0.25, 0.1)) + f" at d {d}")
    c.phrase(text, " / ".join(f"{dn[(256, 8, 8, k)]['retrieval_accuracy']:.2f}" for k in (0.5, 0.25, 0.1))
             + " passkey accuracy under SnapKV")
    few = [r["delta_nll"] for r in kv if r["n_heads"] == 8 and r["n_kv_heads"] in (1, 2)]
    c.phrase(text, f"(8,2) and (8,1) at most {max(few):+.4f}")
    c.done()


RERUN_RUNS = LADDER_RUNS.replace("ladder.duckdb", "ladder-rerun.duckdb")


def test_long_context_rerun(cli):
    """Round 2's second attempt, the same seed trained again: the table of both attempts, the noise of one run,
    the invariance test on the rerun alone, the (16,2) extensions and the count of runs at 16K."""
    text, c = readme(LONG), Check(f"studies/{LONG}/README.md")
    first = {(r["stage"], r["family"], r["d_model"], r["n_heads"], r["n_kv_heads"]): r
             for r in query(cli, LONG, LADDER_RUNS)}
    again = query(cli, LONG, RERUN_RUNS)
    c.equal("completed pretrain / extend", (sum(r["stage"] == "pretrain" for r in again),
                                            sum(r["stage"] == "extend" for r in again)), (15, 9))
    t = Table(text, "config", "stage", "first attempt", where=c.where)
    diffs = {"pretrain": [], "extend": []}
    pairs = 0
    for r in again:
        a = first.get((r["stage"], r["family"], r["d_model"], r["n_heads"], r["n_kv_heads"]))
        if r["status"] != "completed" or a is None or a["status"] != "completed":
            continue
        pairs += 1
        stage = "pretrain" if r["stage"] == "pretrain" else \
            f"extend, {'dense' if r['family'] == 'gqa' else 'hybrid'}"
        key = (f"({r['n_heads']},{r['n_kv_heads']}) d {r['d_model']} L {r['n_layers']}", stage)
        c.cell(t, key, "first attempt", a["val_loss"])
        c.cell(t, key, "second", r["val_loss"])
        c.cell(t, key, "difference", r["val_loss"] - a["val_loss"])
        diffs[r["stage"]].append(r["val_loss"] - a["val_loss"])
    c.equal("table rows", len(t.rows), pairs)
    every = np.array(diffs["pretrain"] + diffs["extend"])
    c.phrase(text, f"{len(every)} runs completed in both attempts ({len(diffs['pretrain'])} pretrains, "
                   f"{len(diffs['extend'])} extensions)")
    c.phrase(text, f"**{np.median(np.abs(every)):.4f} in the median**")
    c.phrase(text, f"up to **{np.abs(every).max():.4f}**")
    c.phrase(text, f"the differences have sd {every.std(ddof=1):.4f}")
    c.phrase(text, f"**one run's own noise is sd {every.std(ddof=1) / np.sqrt(2):.4f} nats**")
    for s, n in (("pretrain", "15 pretrains"), ("extend", "6 extensions")):
        c.phrase(text, f"{np.std(diffs[s], ddof=1) / np.sqrt(2):.4f} over the {n}")
    rr = json.loads(cli(["validate", "--db", "studies/long-context/ladder.duckdb", "--db",
                         "studies/long-context/ladder-rerun.duckdb", "--mode", "rerun", "--json"]))
    c.equal("--mode rerun's noise = the table's", round(rr["overall"]["run_noise_sd"], 4),
            round(every.std(ddof=1) / np.sqrt(2), 4))
    c.phrase(text, f"That is {rr['overall']['noise_over_val_se']:.1f} times the median run's val-set sampling error")
    pre = rr["stages"]["pretrain"]
    at = pre["median_train_diff_at_share"]
    c.phrase(text, f"**{at['0.25']:.4f} nats in the median at a quarter of the steps**, {at['0.5']:.4f} at half, "
                   f"{at['0.75']:.4f} at three quarters and {at['1.0']:.4f} at the end")
    c.phrase(text, f"**{pre['parted']} of the {pre['n']} parted** by more than {rr['threshold']} nats, **at "
                   f"{pre['median_parted_share']:.2f} of their steps in the median**; "
                   f"{pre['n'] - pre['parted']} never did")
    ext = [q for q in rr["pairs"] if q["stage"] == "extend"]
    c.phrase(text, f"The {len(ext)} extensions start from their pretrain's two different checkpoints, and "
                   f"{sum(q['parted_at'] == 50 for q in ext)} of them are apart at their first logged step")
    worst = {q["label"].split(" T ")[0]: q for q in rr["pairs"]}["pretrain gqa (8,2) d 160 L 3"]
    c.phrase(text, f"(8,2) d 160 parted at step {worst['parted_at']:,} of {worst['steps']:,} and ended "
                   f"{worst['train_diff_at_share']['1.0']:.4f} apart in training loss")
    n, widened, p, mean, err = context_overall(cli, "ladder-rerun")
    c.phrase(text, f"pairs {n} extensions: the gap widened in **{widened} of {n}** (sign test p {p}), by "
                   f"**{mean} nats** on average (se {err},")
    changes = []
    for db in ("ladder", "ladder-rerun"):
        doc = json.loads(cli(["validate", "--db", f"studies/long-context/{db}.duckdb", "--mode", "context", "--json"]))
        changes.append({(s["candidate"], s["d_model"]): s["change"] for s in doc["shifts"]})
        if db == "ladder":
            o = doc["overall"]
            c.phrase(text, f"Its se ({o['se_mean']:.4f} for the first attempt's {o['mean']:+.4f}) is the spread of the "
                           f"{o['n']} changes over widths and candidates (sd {o['sd']:.4f} / √{o['n']})")
            c.phrase(text, f"the {o['n']} pairs share {o['clusters']} reference runs, whose pairs widened on average "
                           f"in {o['clusters_widened']} (sign test p {o['cluster_sign_test_p']:.3g}; cluster-robust se "
                           f"{o['se_mean_clustered']:.4f}, below the spread's, so the se stays {o['se_mean']:.4f})")
            c.phrase(measured_row(LONG), f"the first attempt's {o['widened']} of {o['n']} are "
                                         f"{o['clusters_widened']} of {o['clusters']} (sign test p "
                                         f"{o['cluster_sign_test_p']:.3g})")
        else:
            o = doc["overall"]
            c.phrase(text, f"cluster-robust over the {o['clusters']} reference runs they share, "
                           f"{o['clusters_widened']} of which saw its pairs widen on average")
            c.phrase(measured_row(LONG), f"the rerun's own test says {o['widened']} of {o['n']} ({o['mean']:+.4f}, "
                                         f"se {o['se_mean']:.4f})")
    both = sorted(set(changes[0]) & set(changes[1]), key=lambda k: (k[0] != "8,2", k[1]))
    c.equal("changes measured twice", len(both), 3)
    for (cand, d) in both:
        c.phrase(text, f"({cand}) d {d} {changes[0][(cand, d)]:+.4f} then {changes[1][(cand, d)]:+.4f}")
    rms = math.sqrt(sum((changes[1][k] - changes[0][k]) ** 2 for k in both) / len(both))
    c.phrase(text, f"**One change's own noise is about sd {rms / math.sqrt(2):.4f}**")
    kv = json.loads(cli(["query", "--db", "studies/long-context/ladder-rerun.duckdb", "select d_model, n_heads, "
                         "keep, delta_nll, retrieval_accuracy from kv_policy_evals where n_heads = 16 order by "
                         "d_model, keep desc", "--format", "json"]))
    for d in (160, 192):
        rows = [r for r in kv if r["d_model"] == d]
        c.phrase(text, " / ".join(f"{r['delta_nll']:+.4f}" for r in rows) + f" (d {d})")
    by = {(r["stage"], r["family"], r["d_model"], r["n_heads"]): r for r in again}
    dense = [by[("extend", "gqa", d, 16)]["val_loss"] for d in (160, 192)]
    hyb = [by[("extend", "hybrid", d, 16)]["val_loss"] for d in (160, 192)]
    c.phrase(text, f"dense {dense[0]:.4f} and {dense[1]:.4f}, hybrid (a third of the layers full) {hyb[0]:.4f} and "
                   f"{hyb[1]:.4f} (hybrid − dense {hyb[0] - dense[0]:+.4f} and {hyb[1] - dense[1]:+.4f})")
    ids = set()
    counts = []
    for db in ("results", "ladder", "ladder-rerun"):
        rows = json.loads(cli(["query", "--db", f"studies/long-context/{db}.duckdb", "select run_id from runs "
                               "where status = 'completed' and seq_len >= 16384", "--format", "json"]))
        counts.append(len({r["run_id"] for r in rows} - ids))
        ids |= {r["run_id"] for r in rows}
    c.phrase(text, f"{counts[0]} (`results.duckdb`) + {counts[1]} (`ladder.duckdb`) + {counts[2]} new in "
                   f"`ladder-rerun.duckdb`")
    c.phrase(text, f"= **{len(ids)}** of the 60 asked for")
    c.done()
