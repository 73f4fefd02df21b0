"""studies/pilot/README.md's numbers, re-derived by the commands the README shows, against the numbers it states
(tests/studies/numbers.py says how)."""

from __future__ import annotations

import json
import re

from tests.studies.readme_numbers import STUDIES, Check, Table, measured_row, query, readme, text_of

PILOT_SUMMARY = 'costlaw query --db studies/pilot/results.duckdb "select * from run_summary"'
PILOT_TIMES = ('costlaw query --db studies/pilot/results.duckdb "select run_id, d_model, n_kv_heads, wall_s, '
               'compile_s, train_s, tokens_per_s from runs order by run_id"')


def test_pilot(cli):
    text, c = readme("pilot"), Check("studies/pilot/README.md")
    t = Table(text, "d", "heads (n_h, n_kv)", where=c.where)
    for r in query(cli, "pilot", PILOT_SUMMARY):
        key = (str(r["d_model"]), f"{r['n_heads']}, {r['n_kv_heads']}")
        c.cell(t, key, "N non-emb.", r["params_non_embedding"])
        c.cell(t, key, "tokens", r["tokens"])
        c.cell(t, key, "final train loss", r["final_loss"])
        c.cell(t, key, "val loss (nats/byte)", r["val_loss"])
    # the packed round is the store's; its sweep wall is the log's last line
    runs = query(cli, "pilot", PILOT_TIMES)
    packed = Table(text, "", "sweep wall time", where=c.where)
    c.cell(packed, "four packed (`--runs-per-gpu 4`)", "per-run wall (s)", *[r["wall_s"] for r in runs])
    c.cell(packed, "four packed (`--runs-per-gpu 4`)", "compile (s)", *[r["compile_s"] for r in runs])
    wall = re.search(r"local: 4 runs in ([\d.]+) s", text_of(STUDIES / "pilot/packed.log"))[1]
    c.cell(packed, "four packed (`--runs-per-gpu 4`)", "sweep wall time", float(wall))
    c.phrase(text, "grep 'runs in' studies/pilot/packed.log")
    tok = sorted(r["tokens_per_s"] for r in runs)
    c.phrase(text, f"{tok[0] / 1e6:.2f}–{tok[-1] / 1e6:.2f}M tok/s each when packed")
    corpus = json.loads(text_of(STUDIES / "pilot/corpus.json"))
    ct = Table(text, "field", "value", where=c.where)
    c.cell(ct, "files", "value", corpus["files"])
    c.cell(ct, "documents", "value", corpus["train docs"], corpus["val docs"])
    c.cell(ct, "tokens", "value", corpus["train tokens"], corpus["val tokens"])
    c.cell(ct, "prepared in", "value", corpus["prepare s"])
    c.equal("corpus_id", ct.cell("corpus_id", "value"), corpus["corpus_id"])
    c.phrase(measured_row("pilot"), f"{float(wall):.0f} s packed")
    c.done()
