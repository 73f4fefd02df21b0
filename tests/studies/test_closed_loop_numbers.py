"""studies/closed-loop/README.md's and studies/closed-loop-2/README.md's numbers, re-derived by the commands
each README shows, against the numbers it states (tests/studies/numbers.py says how)."""

from __future__ import annotations

import json
import re
import shutil

from tests.studies.readme_numbers import STUDIES, Check, Table, argv, close, measured_row, query, readme, shows, text_of

# ---------------------------------------------------------------------------------------------- closed-loop
CLOSED_COPY = "cp studies/gqa-heads/results.duckdb /tmp/gqa-heads.duckdb"
CLOSED_RECOMMEND = ("costlaw recommend --db /tmp/gqa-heads.duckdb --sweep gqa-heads --target-loss 0.9 --context 32K "
                    "--memory-budget 64MiB --bootstrap 200 --seed 0")
CLOSED_VIEW = 'costlaw query --db studies/gqa-heads/results.duckdb "select * from closed_loop"'
CLOSED_TRAINED = """python -c "from costlaw.analysis.recommend.fromstore import fit_store
fs = fit_store('/tmp/gqa-heads.duckdb', sweep='gqa-heads', n_boot=200, seed=0)
iv = next(c for c in fs.candidates if c.label == '8,1').interval(7192640, 0.9)
print(round(iv.point, 4), iv.text())\""""


def _span(lo, hi, digits=4):
    return f"{lo:.{digits}f}–{hi:.{digits}f}"


def test_closed_loop(cli, tmp_path):
    """Today's recommendation from the gqa-heads file (on a copy: recommend caches its fits in the file), the
    trained config's prediction by the same laws, and the recorded one of 2026-11-23 beside the measured run."""
    from costlaw.analysis.recommend.fromstore import fit_store

    study, text, c = "closed-loop", readme("closed-loop"), Check("studies/closed-loop/README.md")
    for command in (CLOSED_COPY, CLOSED_RECOMMEND, CLOSED_TRAINED):
        shows(study, command)
    db = tmp_path / "gqa-heads.duckdb"
    shutil.copyfile(STUDIES / "gqa-heads/results.duckdb", db)
    rec = json.loads(cli(argv(CLOSED_RECOMMEND, **{"/tmp/gqa-heads.duckdb": str(db)}) + ["--json"]))
    m = re.search(r"(\d+) completed runs \((\d+) configs\)", rec["source"])
    c.phrase(text, f"**{m[1]} runs, {m[2]} configs**")
    best = rec["by_context"][0]
    cand = {x["label"]: x for x in rec["candidates"]}
    win, cfg = cand[best["winner"]], best["winner_config"]
    t = Table(text, "", "config", where=c.where)
    c.equal("winner", t.cell("today's winner", "config"),
            f"({best['winner']}) d {cfg['d_model']}, L {cfg['n_layers']}")
    iv = best["predicted_loss_interval"]
    c.cell(t, "today's winner", "N", best["winner_prices"]["params_non_embedding"])
    c.cell(t, "today's winner", "predicted", best["predicted_loss"])
    c.cell(t, "today's winner", "90% for a new run", iv["new_run"]["lo"], iv["new_run"]["hi"])
    c.cell(t, "today's winner", "90% for the mean", iv["mean"]["lo"], iv["mean"]["hi"])
    c.phrase(text, f"(8,1) has {win['n_points']} configs (d 128–640) and {win['n_runs']} runs")
    c.phrase(text, f"N* = {win['n_star'] / 1e6:.2f} M, {best['extrapolation']:.2f}× the largest (8,1) run "
                   f"({win['n_max'] / 1e6:.2f} M at d 640)")
    c.phrase(text, f"M_infer at 32K is {best['winner_prices']['m_infer_bytes'] / 2 ** 20:.1f} MiB and C_infer "
                   f"{best['winner_prices']['c_infer_flops_per_token'] / 1e6:.0f} MFLOP per token")
    c.phrase(text, f"needs {best['standard_prices']['m_infer_bytes'] / 2 ** 20:.0f} MiB")
    c.phrase(text, f"a seed sd of {iv['new_run']['noise_sd_log']:.4f} in log loss, "
                   f"{iv['new_run']['noise_df']:.0f} degrees of freedom")
    c.phrase(text, f"trained depths ({win['envelope']['depth'][0]}–{win['envelope']['depth'][1]}) and d/L "
                   f"({win['envelope']['ratio'][0]:.0f}–{win['envelope']['ratio'][1]:.0f})")
    weak = sorted(x["label"] for x in rec["candidates"] if x.get("weak"))
    c.equal("weak laws", weak, ["1,1", "2,2", "8,8"])

    # the trained config: the same laws (reused from the copy's fits table) at its N
    old = json.loads(text_of(STUDIES / study / "recommendation.json"))["by_context"][0]
    n_trained = old["winner_prices"]["params_non_embedding"]
    fs = fit_store(str(db), sweep="gqa-heads", n_boot=200, seed=0)
    assert fs.fit_status["reused"] == ["8,8", "8,2", "8,1", "4,4", "2,2", "1,1"]
    tiv = next(x for x in fs.candidates if x.label == "8,1").interval(n_trained, 0.9)
    c.cell(t, "the trained config", "N", n_trained)
    c.cell(t, "the trained config", "predicted", tiv.point)
    c.cell(t, "the trained config", "90% for a new run", tiv.lo, tiv.hi)
    c.cell(t, "the trained config", "90% for the mean", tiv.mean_lo, tiv.mean_hi)

    # the recorded prediction and the measured run (the committed file's closed_loop view)
    (row,) = query(cli, study, CLOSED_VIEW)
    measured = row["loss"]
    c.cell(t, "the trained config", "measured", measured)
    c.equal("inside the new-run interval", t.cell("the trained config", "in the new-run interval").strip("*"),
            "yes" if tiv.lo <= measured <= tiv.hi else "no")
    c.equal("inside the mean's", t.cell("the trained config", "in the mean's").strip("*"),
            "yes" if tiv.mean_lo <= measured <= tiv.mean_hi else "no")
    c.phrase(text, f"0.8796, is {tiv.point - measured:.4f} ({(tiv.point - measured) / tiv.point:.1%}) below "
                   f"today's prediction")
    c.phrase(text, f"{tiv.mean_lo - measured:.4f} below the mean's")
    h = Table(text, "candidate", "context", where=c.where)
    c.cell(h, "8,1", "predicted", row["predicted_loss"])
    c.cell(h, "8,1", "95% interval", row["predicted_lo"], row["predicted_hi"])
    c.cell(h, "8,1", "tokens", row["tokens"])
    c.cell(h, "8,1", "measured val loss", measured)
    c.cell(h, "8,1", "error", row["error"], row["rel_error"])
    c.equal("recorded run", h.cell("8,1", "run"), row["run_id"])
    c.equal("recorded inside", h.cell("8,1", "inside").strip("*"), "yes" if row["inside"] else "no")
    assert close(row["predicted_loss"], old["predicted_loss"])
    c.phrase(text, f"predicted {old['predicted_loss']:.4f} (95% {_span(*old['predicted_loss_ci95'])})")
    c.phrase(text, f"N = {n_trained:,}")
    row_main = measured_row(study)
    for phrase in (f"predicted {old['predicted_loss']:.4f} (95% {_span(*old['predicted_loss_ci95'])})",
                   f"measured {measured:.4f}", f"d {cfg['d_model']} L {cfg['n_layers']}",
                   f"{best['predicted_loss']:.4f}", f"{tiv.point:.4f}", f"new run {_span(tiv.lo, tiv.hi)}",
                   f"mean {_span(tiv.mean_lo, tiv.mean_hi)}"):
        c.phrase(row_main, phrase)
    c.done()


# ---------------------------------------------------------------------------------------------- closed-loop-2
LOOP2 = "closed-loop-2"
LOOP2_TABLE = 'costlaw query --db studies/closed-loop-2/results.duckdb "select * from closed_loop order by predicted"'


def test_closed_loop_2(cli):
    text, c = readme(LOOP2), Check(f"studies/{LOOP2}/README.md")
    rows = query(cli, LOOP2, LOOP2_TABLE)
    assert len(rows) == 10 and all(r["measured"] is not None and r["seed"] == 3 for r in rows)
    t = Table(text, "candidate", "context", where=c.where)
    assert [r[0] for r in t.rows] == [r["candidate"] for r in rows]
    for i, (r, cells) in enumerate(zip(rows, t.rows)):
        key = tuple(cells[:3])
        c.cell(t, key, "predicted", r["predicted"])
        c.cell(t, key, "90% new run", r["lower"], r["upper"])
        c.cell(t, key, "90% mean", r["mean_lo"], r["mean_hi"])
        c.cell(t, key, "measured", r["measured"])
        c.equal(f"row {i + 1} inside", cells[t.col("inside")], "yes" if r["inside"] else "no")
        c.equal(f"row {i + 1} inside mean", cells[t.col("inside mean")], "yes" if r["inside_mean"] else "no")
    inside, inside_mean = sum(r["inside"] for r in rows), sum(r["inside_mean"] for r in rows)
    err = [r["measured"] - r["predicted"] for r in rows]
    rel = [r["rel_error"] for r in rows]
    worst = max(err, key=abs)
    row = measured_row(LOOP2)
    words = ["Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten"]
    c.equal("runs inside their 90% new-run interval", inside, 10)  # the README's "All ten" and the row's "10 of 10"
    c.phrase(text, "All ten measured losses landed inside their 90% prediction interval for a new run")
    c.phrase(row, f"{inside} of 10 inside their 90% interval for a new run")
    c.phrase(text, f"{words[inside_mean]} of ten landed inside the interval of the mean")
    c.phrase(text, f"mean {sum(err) / 10:+.4f} nats ({sum(rel) / 10:+.1%}), mean |error| "
                   f"{sum(map(abs, err)) / 10:.4f}")
    c.phrase(row, f"{inside_mean} of 10 inside the mean's; error mean {sum(err) / 10:+.4f} nats "
                  f"({sum(rel) / 10:+.1%}), worst {worst:+.4f}")
    c.done()
