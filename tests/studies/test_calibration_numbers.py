"""studies/calibration/README.md's numbers, re-derived by the commands the README shows, against the numbers it states
(tests/studies/numbers.py says how)."""

from __future__ import annotations

import csv
import io
import json
import shutil

from tests.studies.readme_numbers import STUDIES, Check, Table, argv, measured_row, readme, shows, text_of

CALIBRATION = "calibration"
CALIBRATE = "costlaw calibrate studies/calibration/measurements.json --out studies/calibration"
CAL_RECOMMEND = ("costlaw recommend --db /tmp/gqa-heads.duckdb --sweep gqa-heads --target-loss 0.9 --context 32K "
                 "--gpu H100 --latency-target-ms 1.45 --calibration studies/calibration/calibration.json")


def test_calibration(cli, tmp_path):
    """The analysis table and the laws' numbers from `costlaw calibrate` on the committed measurements; the
    recommend example on a copy of the gqa-heads file."""
    text, c = readme(CALIBRATION), Check(f"studies/{CALIBRATION}/README.md")
    shows(CALIBRATION, CALIBRATE)
    words = argv(CALIBRATE)
    words[words.index("--out") + 1] = str(tmp_path)
    cli(words)
    md = text_of(tmp_path / "calibration.md")
    full = Table(md, "family", "T", "KV measured", where="calibration.md")
    rows = {(r[0], r[1]): r for r in full.rows}
    raw = {(r["family"], int(r["context"])): r for r in csv.DictReader(io.StringIO(
        text_of(tmp_path / "measurements.csv")))}
    t = Table(text, "family", "T", where=c.where)
    for fam in ("gqa", "hybrid", "compressed"):
        for ctx in ("1K", "8K", "32K", "64K"):
            r, m, key = rows[(fam, ctx)], raw[(fam, int(ctx[:-1]) * 1024)], (fam, ctx)
            c.cell(t, key, "KV MiB (measured = analytic)", float(m["kv_bytes_measured"]) / 2 ** 20,
                   float(m["kv_bytes_analytic"]) / 2 ** 20)
            c.cell(t, key, "peak / M_infer", float(m["peak_bytes"]) / float(m["m_infer_bytes_analytic"]))
            c.cell(t, key, "decode ms/token (roofline)", float(m["decode_s_per_token"]) * 1e3, float(r[10]))
            c.cell(t, key, "prefill ms (roofline)", float(m["prefill_s"]) * 1e3, float(r[14]))
    c.equal("KV exact in every row", {r[4] for r in full.rows}, {"yes"})
    c.phrase(text, f"in all {len(full.rows)} rows")
    ratio = [float(r[8]) for r in full.rows]
    c.phrase(text, f"Total memory is {min(ratio):.1f}–{max(ratio):.1f}× M_infer")
    cal = json.loads(text_of(tmp_path / "calibration.json"))["gpus"]["H100-SXM"]["families"]
    laws = {(r[0], r[1]): r for r in Table(md, "family", "y", "a", where="calibration.md").rows}
    c.phrase(text, "slopes of " + ", ".join(
        f"{float(laws[(f, 'peak_bytes')][3]) / 1e3:.1f} KB{'/token' if f == 'gqa' else ''} ({f})"
        for f in ("gqa", "hybrid")) + f" and {float(laws[('compressed', 'peak_bytes')][3]) / 1e3:.1f} KB (compressed)")
    c.phrase(text, "The KV slopes are " + ", ".join(
        f"{float(laws[(f, 'kv_bytes_measured')][3]) / 1e3:.1f}" for f in ("gqa", "hybrid"))
        + f" and {float(laws[('compressed', 'kv_bytes_measured')][3]) / 1e3:.1f} KB/token")
    dec = {f: laws[(f, "decode_s_per_token")] for f in ("gqa", "hybrid")}
    c.phrase(text, f"R² {float(dec['gqa'][4]):.3f} (gqa) and {float(dec['hybrid'][4]):.2f} (hybrid)")
    c.phrase(text, f"{float(dec['gqa'][3]) * 1e9:.1f} ns for gqa and {float(dec['hybrid'][3]) * 1e9:.1f} ns for hybrid")
    g, h, k = cal["gqa"], cal["hybrid"], cal["compressed"]
    c.phrase(text, f"a fixed {g['decode']['overhead_s'] * 1e3:.2f} ms (gqa) or "
                   f"{h['decode']['overhead_s'] * 1e3:.2f} ms (hybrid) per step plus bytes read at "
                   f"{g['decode']['bytes_per_s'] / 1e12:.2f} or {h['decode']['bytes_per_s'] / 1e12:.2f} TB/s")
    c.phrase(text, f"The implied rates are {g['decode']['flops_per_s'] / 1e12:.0f} TFLOP/s (gqa), "
                   f"{h['decode']['flops_per_s'] / 1e12:.0f} TFLOP/s (hybrid")
    c.phrase(text, f"and {k['decode']['flops_per_s'] / 1e12:.0f} TFLOP/s (compressed)")
    c.phrase(text, f"(R² {g['fit']['prefill_r2']:.3f} gqa, {h['fit']['prefill_r2']:.3f} hybrid, "
                   f"{k['fit']['prefill_r2']:.3f} compressed)")
    snap = [float(r[9]) for r in full.rows if r[0] == "compressed"]
    c.phrase(text, f"{min(snap):.1f}–{max(snap):.1f} ms per token")
    graph = [float(r[9]) for r in full.rows if r[0] in ("gqa", "hybrid")]
    roof = [float(r[9]) / float(r[10]) for r in full.rows if r[0] in ("gqa", "hybrid")]
    pre = {(f, x): float(raw[(f, x)]["prefill_s"]) * 1e3 / float(rows[(f, f"{x // 1024}K")][14])
           for f in ("gqa", "hybrid", "compressed") for x in (1024, 65536)}
    c.phrase(text, f"It is {min(v for (f, x), v in pre.items() if x == 1024):.0f}–"
                   f"{max(v for (f, x), v in pre.items() if x == 1024):.0f}× the roofline at 1K")
    c.phrase(text, f"and {min(v for (f, x), v in pre.items() if x == 65536):.1f}–"
                   f"{max(v for (f, x), v in pre.items() if x == 65536):.1f}× at 64K")
    def over(col):  # gqa over hybrid at 64K
        return float(raw[("gqa", 65536)][col]) / float(raw[("hybrid", 65536)][col])

    c.phrase(text, f"at 64K the hybrid decodes {over('decode_s_per_token'):.2f}× faster than gqa, with "
                   f"{over('kv_bytes_measured'):.1f}× fewer KV bytes")
    c.phrase(text, f"At 64K the hybrid prefills {over('prefill_s'):.2f}× faster than gqa")
    # decode before and after the graph
    eager = json.loads(text_of(STUDIES / CALIBRATION / "measurements_eager_decode.json"))["rows"]
    gt = Table(text, "family", "eager ms/token, 1K → 64K", where=c.where)
    for fam in ("gqa", "hybrid"):
        e = {r["context"]: r["decode_s"] / r["decode_tokens"] * 1e3 for r in eager if r["family"] == fam}
        gr = {x: float(raw[(fam, x)]["decode_s_per_token"]) * 1e3 for x in e}
        up = [e[x] / gr[x] for x in e]
        c.cell(gt, fam, "eager ms/token, 1K → 64K", min(e.values()), max(e.values()))
        c.cell(gt, fam, "graph ms/token, 1K → 64K", min(gr.values()), max(gr.values()))
        c.cell(gt, fam, "speed-up", min(up), max(up))
    row = measured_row(CALIBRATION)
    c.phrase(row, f"peak {min(ratio):.1f}–{max(ratio):.1f}× M_infer")
    c.phrase(row, f"graph decode {min(graph):.1f}–{max(graph):.1f} ms/token, linear in T "
                  f"(R² {float(dec['gqa'][4]):.3f} gqa), {min(roof):.0f}–{max(roof):.0f}× the roofline")
    c.phrase(row, f"prefill {h['decode']['flops_per_s'] / 1e12:.0f}–{g['decode']['flops_per_s'] / 1e12:.0f} TFLOP/s")

    # the recommend example, on a copy of the gqa-heads file (recommend caches its fits in the file it reads)
    shows(CALIBRATION, CAL_RECOMMEND)
    db = tmp_path / "gqa-heads.duckdb"
    shutil.copyfile(STUDIES / "gqa-heads/results.duckdb", db)
    rec = json.loads(cli(argv(CAL_RECOMMEND, **{"/tmp/gqa-heads.duckdb": str(db)}) + ["--json"]))
    best = rec["by_context"][0]
    cfg, price = best["winner_config"], best["winner_prices"]
    c.phrase(text, f"{price['decode_ms']:.1f} ms per token for the winner, ({best['winner']}) at "
                   f"{price['params_non_embedding'] / 1e6:.1f} M (d {cfg['d_model']}, L {cfg['n_layers']})")
    dropped = sorted(x["label"] for x in rec["candidates"] if "latency" in x["prices"][0]["violations"])
    c.phrase(text, "A 1.45 ms target drops " + " and ".join(f"({x})" for x in dropped))
    roofline = json.loads(cli(argv(CAL_RECOMMEND, **{"/tmp/gqa-heads.duckdb": str(db)})[:-4] + ["--json"]))
    c.phrase(text, f"against {roofline['by_context'][0]['winner_prices']['decode_ms']:.4f} ms from the roofline")
    c.done()
