"""Every study's headline numbers, re-derived from its committed store or files by the commands its README shows,
against the numbers its README states (and the main README's "Measured" row that cites it).

How it cannot drift: each command below must appear in the study's README (`shows`), the test runs that command
(through costlaw.cli.main, in this process, with --format json / --json added), and compares the result with
the cells of the README's own tables (`Table`, `Check.cell`) and with the summary lines it quotes (`Check.phrase`),
formatted as the README writes them (digits, sign, thousands separators, M / K / % / ×). A README edited without
its store, or a store or code change that moves a number, fails here with every mismatch listed. Numbers a README
copies from another committed file (a benchmark's table, a measurements file) are compared with that file.

Commands that would write (a fit or recommend given one --db caches its fits in that file) run on a copy in
tmp_path, as the READMEs say. Numbers that depend on bootstrap draws are read from the committed fits files,
which the slow test regenerates with the README's command.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
STUDIES = REPO / "studies"
MINUS = "\u2212"


# ---------------------------------------------------------------------------------------------- the README side
def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def flat(text: str) -> str:
    """One line: backslash continuations joined, whitespace collapsed (commands wrap in the READMEs)."""
    return " ".join(text.replace("\\\n", " ").split())


def readme(study: str) -> str:
    return text_of(STUDIES / study / "README.md")


def shows(study: str, command: str) -> None:
    """The README shows this command (whitespace and line continuations aside)."""
    if flat(command) not in flat(readme(study)):
        pytest.fail(f"studies/{study}/README.md does not show: {command}", pytrace=False)


def measured_row(study: str) -> str:
    """The main README's "Measured" table row that cites studies/<study>/README.md."""
    rows = [ln for ln in text_of(REPO / "README.md").splitlines()
            if ln.startswith("|") and f"`studies/{study}/README.md`" in ln]
    assert len(rows) == 1, f"README.md: {len(rows)} Measured rows cite studies/{study}/README.md"
    return rows[0]


NUMBER = re.compile(r"(?<![\w.])[+\u2212-]?\d[\d,]*(?:\.\d+)?(?:e[+-]\d+)?(?: ?M\b| ?K\b|%|×)?")


def numbers(cell: str) -> list[str]:
    """The numbers written in a cell, in order ("1.209 / 1.192", "0.43–0.97", "+4.0%", "1.59 M")."""
    return [m.group(0) for m in NUMBER.finditer(cell.replace("**", ""))]


def like(written: str, value: float) -> str:
    """`value` written as `written` is: same decimals (or significand digits), sign style, thousands separators and
    unit. " M" and " K" divide by 1e6 and 1e3, "%" multiplies by 100. A value that rounds to zero keeps the README's
    sign."""
    m = re.fullmatch(r"(?P<sign>[+\u2212-]?)(?P<int>[\d,]+)(?:\.(?P<frac>\d+))?(?P<exp>e[+-]\d+)?(?P<unit>.*)",
                     written)
    assert m, written
    unit = m["unit"]
    v = float(value) / {"M": 1e6, "K": 1e3}.get(unit.strip(), 1.0) * (100 if unit == "%" else 1)
    decimals = len(m["frac"] or "")
    body = (f"{abs(v):.{decimals}e}" if m["exp"] else f"{abs(v):,.{decimals}f}" if "," in m["int"]
            else f"{abs(v):.{decimals}f}")
    if float(body.replace(",", "")) == 0:
        sign = m["sign"]
    elif v < 0:
        sign = m["sign"] if m["sign"] in (MINUS, "-") else MINUS
    else:
        sign = "+" if m["sign"] else ""
    return f"{sign}{body}{unit}"


class Table:
    """A markdown table of a README: the first one whose header row starts with `header` cells."""

    def __init__(self, text: str, *header: str, where: str = ""):
        self.where = where
        lines = [ln.strip() for ln in text.splitlines()]
        for i, ln in enumerate(lines):
            cells = self._cells(ln) if ln.startswith("|") else None
            if cells and tuple(cells[:len(header)]) == header and (i == 0 or not lines[i - 1].startswith("|")):
                self.header = cells
                self.rows = []
                for body in lines[i + 2:]:
                    if not body.startswith("|"):
                        break
                    self.rows.append(self._cells(body))
                return
        raise AssertionError(f"{where}: no table with header {header}")

    @staticmethod
    def _cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    def col(self, name: str) -> int:
        return self.header.index(name)

    def row(self, *key: str) -> list[str]:
        found = [r for r in self.rows if tuple(r[:len(key)]) == key]
        assert len(found) == 1, f"{self.where}: {len(found)} rows start with {key}"
        return found[0]

    def cell(self, key, column: str) -> str:
        return self.row(*((key,) if isinstance(key, str) else key))[self.col(column)]


class Check:
    """Collects every mismatch between the README's cells and the derived values, then fails once."""

    def __init__(self, where: str):
        self.where = where
        self.bad: list[str] = []

    def cell(self, table: Table, key, column: str, *values) -> None:
        """The cell's numbers, in order, are `values` (None: not checked) written as the cell writes them."""
        try:
            written = numbers(table.cell(key, column))
        except (AssertionError, ValueError) as e:
            self.bad.append(f"{key} / {column}: {e}")
            return
        if len(written) < len([v for v in values if v is not None]):
            self.bad.append(f"{key} / {column}: the README writes {written}, derived {values}")
            return
        for w, v in zip(written, values):
            if v is not None and like(w, v) != w:
                self.bad.append(f"{key} / {column}: the README writes {w}, derived {like(w, v)} ({v!r})")

    def equal(self, what: str, written, derived) -> None:
        if written != derived:
            self.bad.append(f"{what}: the README writes {written!r}, derived {derived!r}")

    def phrase(self, text: str, phrase: str) -> None:
        if flat(phrase) not in flat(text):
            self.bad.append(f"does not say {phrase!r}")

    def done(self) -> None:
        if self.bad:
            pytest.fail(f"{self.where}: {len(self.bad)} mismatches:\n  " + "\n  ".join(self.bad), pytrace=False)


# ---------------------------------------------------------------------------------------------- the store side
@pytest.fixture
def cli(capsys, monkeypatch):
    """`costlaw ARGS` in this process from the checkout's root (the READMEs' paths are relative to it)."""
    from costlaw.cli import main

    monkeypatch.chdir(REPO)

    def run(args):
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert rc == 0, f"costlaw {' '.join(map(str, args))}: exit {rc}: {err}"
        return out

    return run


def argv(command: str, **paths) -> list[str]:
    """A README command as arguments for costlaw.cli.main (without "costlaw"); `paths` replaces paths in it."""
    words = shlex.split(flat(command))
    assert words[0] == "costlaw", command
    return [paths.get(w, w) for w in words[1:]]


def query(cli, study: str, command: str) -> list[dict]:
    """Rows of a `costlaw query` command the README shows."""
    shows(study, command)
    return json.loads(cli(argv(command) + ["--format", "json"]))


def fit(cli, study: str, command: str, *, bootstrap: int | None = 0, **paths) -> dict:
    """The fits document of a `costlaw fit` command the README shows, run without --out and, by default, with
    --bootstrap 0 (point estimates, R², ceilings and held-out predictions do not depend on it)."""
    shows(study, command)
    args = argv(command, **paths)
    if "--out" in args:
        i = args.index("--out")
        del args[i:i + 2]
    if bootstrap is not None:
        if "--bootstrap" in args:
            args[args.index("--bootstrap") + 1] = str(bootstrap)
        else:
            args += ["--bootstrap", str(bootstrap)]
    if "--json" not in args:
        args.append("--json")
    return json.loads(cli(args))


def by_group(doc: dict, *keys: str) -> dict:
    return {tuple(c["group"][k] for k in keys): c for c in doc["candidates"]}


def heads(row: dict) -> str:
    return f"{row['n_heads']},{row['n_kv_heads']}"


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


# ---------------------------------------------------------------------------------------------- pilot
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


# ---------------------------------------------------------------------------------------------- the GQA ladders
CANDIDATES = ("8,8", "8,2", "8,1", "4,4", "2,2", "1,1")


def ladder_rows(rows: list[dict]) -> dict:
    """(d_model, n_layers of the row's non-(8,8) configs) -> candidate -> [val loss by seed]."""
    out: dict = {}
    for r in sorted(rows, key=lambda r: r["seed"]):
        out.setdefault(r["d_model"], {}).setdefault(heads(r), []).append(r["val_loss"])
    return out


def check_fits_file(c: Check, doc: dict, path: Path) -> dict:
    """The committed fits file holds what the command fits today (parameters, R², ceiling, held-out
    predictions; its bootstrap intervals are the slow test's); returns the file's groups."""
    committed = json.loads(text_of(path))
    c.equal(f"{path.name} format", committed.get("format"), "costlaw-fits/1")
    mine, theirs = by_group(doc, "n_heads", "n_kv_heads"), by_group(committed, "n_heads", "n_kv_heads")
    c.equal(f"{path.name} groups", sorted(theirs), sorted(mine))
    for g, f in mine.items():
        o = theirs.get(g)
        if o is None:
            continue
        pairs = [(f"params {k}", f["params"][k], o["params"][k]) for k in f["params"]]
        pairs += [("r2", f["r2"], o["r2"]), ("r2_ceiling", f.get("r2_ceiling") or 0, o.get("r2_ceiling") or 0)]
        pairs += [("held-out prediction", a["y_pred"], b["y_pred"])
                  for a, b in zip((f.get("holdout") or {}).get("rows", []), (o.get("holdout") or {}).get("rows", []))]
        for what, a, b in pairs:
            if not close(a, b, 1e-5):
                c.bad.append(f"{path.name} {g} {what}: committed {b!r}, the command gives {a!r}")
    return theirs


def held_out(fit: dict, seeds_by_loss: dict) -> list[tuple[int, float, float, float]]:
    """(seed, measured, predicted, rel. error) of each held-out row, by seed."""
    rows = [(seeds_by_loss[round(r["y_true"], 12)], r["y_true"], r["y_pred"], r["rel_error"])
            for r in fit["holdout"]["rows"]]
    return sorted(rows)


def label(g: tuple) -> str:
    return f"{g[0]},{g[1]}"


# ---------------------------------------------------------------------------------------------- gqa-heads-steps
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
LAW = "--law gqa-size --x N --group-by n_heads,n_kv_heads"
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


def export(cli, study: str, command: str, path: Path) -> Path:
    """Run a README's `costlaw query --format parquet --out /tmp/X` with the file in tmp_path instead."""
    shows(study, command)
    words = argv(command)
    words[words.index("--out") + 1] = str(path)
    cli(words)
    return path


def fits_of(cli, study: str, commands: dict, paths: dict) -> dict:
    return {name: fit(cli, study, cmd, **paths) for name, cmd in commands.items()}


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
    ft = Table(text, "(n_h, n_kv)", "runs", "a", where=c.where)
    for g, f in every.items():
        key, ci = label(g), files["fits.json"][g]["ci95"]
        c.cell(ft, key, "runs", f["n_points"])
        c.cell(ft, key, "a", f["params"]["a"])
        c.cell(ft, key, "b (95%)", f["params"]["b"], *ci["b"])
        c.cell(ft, key, "E (95%)", f["params"]["E"], *ci["E"])
        c.cell(ft, key, "R²", f["r2"])
        ho = held_out(f, seeds)
        c.cell(ft, key, "d 640: measured", *[h[1] for h in ho])
        c.cell(ft, key, "predicted from d ≤ 512", ho[0][2])
        c.cell(ft, key, "error", *[h[3] for h in ho])
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


# ---------------------------------------------------------------------------------------------- gqa-aspect
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


def committed_fits(study: str, name: str) -> dict:
    return by_group(json.loads(text_of(STUDIES / study / name)), "n_heads", "n_kv_heads")


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
    ft = Table(text, "(n_h, n_kv)", "runs", "a", where=c.where)
    for g, f in every.items():
        key, ci = label(g), files["fits.json"][g]["ci95"]
        c.cell(ft, key, "runs", f["n_points"])
        c.cell(ft, key, "a", f["params"]["a"])
        c.cell(ft, key, "b (95%)", f["params"]["b"], *ci["b"])
        c.cell(ft, key, "E (95%)", f["params"]["E"], *ci["E"])
        c.cell(ft, key, "R²", f["r2"])
        c.cell(ft, key, "ceiling", f["r2_ceiling"])
        ho = held_out(f, seeds)
        c.cell(ft, key, "d 640: measured", *[h[1] for h in ho])
        c.cell(ft, key, "predicted", ho[0][2])
        c.cell(ft, key, "error", *[h[3] for h in ho])
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


# ---------------------------------------------------------------------------------------------- gqa-heads
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


# ---------------------------------------------------------------------------------------------- gqa-depth
DEPTH = "gqa-depth"
DEPTH_RUNS = ('costlaw query --db studies/gqa-depth/results.duckdb "select n_heads, d_model, n_layers, '
              'params_non_embedding, batch_size, total_steps, val_loss from runs order by 1, 2, 3"')
DEPTH_LADDER = ('costlaw query --db studies/gqa-heads-steps/results.duckdb "select n_heads, d_model, n_layers, '
                'params_non_embedding, batch_size, total_steps, val_loss from runs where seed = 0 and '
                'n_heads = n_kv_heads and n_heads in (1, 8) and d_model in (192, 256) order by 1, 2, 3"')
DEPTH_LAW = """python -c "import json; from costlaw.fitting import get_law
N = {1: [1377984, 1722432, 2066880, 2328832, 2910976, 3493120], 8: [2754240, 3442752, 4131264, 4163840, 5204736,
6245632]}
for c in json.load(open('studies/gqa-heads-steps/fits-seed0.json'))['candidates']:
    if c['group']['n_heads'] == c['group']['n_kv_heads'] in N:
        print(c['group'], get_law('gqa-size').predict(c['params'], N[c['group']['n_heads']]).round(3))\""""


def test_gqa_depth(cli):
    from costlaw.fitting import get_law

    text, c = readme(DEPTH), Check(f"studies/{DEPTH}/README.md")
    shows(DEPTH, DEPTH_LAW)
    laws = committed_fits(STEPS, "fits-seed0.json")
    law = get_law("gqa-size")
    t = Table(text, "config", "d", "L", where=c.where)
    rows = [(r, True) for r in query(cli, DEPTH, DEPTH_LADDER)] + [(r, False) for r in query(cli, DEPTH, DEPTH_RUNS)]
    fitted = {}
    for r, ladder in rows:
        h = r["n_heads"]
        key = (f"({h},{h})", str(r["d_model"]), f"{r['n_layers']}" + (" (ladder)" if ladder else ""))
        assert f"{r['params_non_embedding']}" in DEPTH_LAW  # the README's snippet evaluates the law at this N
        pred = float(law.predict(laws[(h, h)]["params"], [r["params_non_embedding"]])[0])
        fitted[(h, r["d_model"], r["n_layers"])] = (r["params_non_embedding"], r["val_loss"], pred)
        c.cell(t, key, "N", r["params_non_embedding"])
        c.cell(t, key, "b", r["batch_size"])
        c.cell(t, key, "steps", r["total_steps"])
        c.cell(t, key, "loss", r["val_loss"])
        c.cell(t, key, "law", pred)
        c.cell(t, key, "loss − law", r["val_loss"] - pred)
    deeper = [v[1] - v[2] for (h, d, L), v in fitted.items() if h == 8 and L > 4]
    c.phrase(text, f"Its four deeper runs land {like('+0.000', min(deeper))} to {like('+0.000', max(deeper))} "
                   "from L(N)")
    (n4, l4, p4), (n6, l6, p6) = fitted[(1, 192, 4)], fitted[(1, 192, 6)]
    c.phrase(text, f"At d 192, L 4 → L 6 lowers the loss by {l4 - l6:.3f} nats for {n6 / n4:.1f} × N. Its law "
                   f"predicts {p4 - p6:.3f} of that")
    c.phrase(text, f"At d 256, L 5 is {fitted[(1, 256, 4)][1] - fitted[(1, 256, 5)][1]:.3f} below L 4")
    row = measured_row(DEPTH)
    c.phrase(row, f"lowers it {l4 - l6:.3f} nats for {n6 / n4:.1f} × N, where its law predicts {p4 - p6:.3f}")
    c.phrase(row, f"(8,8) stays within {max(abs(x) for x in deeper):.3f} of its law")
    c.done()


# ---------------------------------------------------------------------------------------------- gqa-knee
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


# ---------------------------------------------------------------------------------------------- gqa-lr
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


# ---------------------------------------------------------------------------------------------- gqa-tokens
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


# ---------------------------------------------------------------------------------------------- hybrid-extend
HYBRID = "hybrid-extend"
HYBRID_COMPARE = "costlaw compare-hybrid --db studies/hybrid-extend/results.duckdb --out studies/hybrid-extend"


def test_hybrid_extend(cli, tmp_path):
    """The results table is compare-hybrid's output on the committed store (tests/analysis/test_hybrid.py checks
    that the committed hybrid.json is that output); the re-measured table is benchmarks/runs.md's."""
    text, c = readme(HYBRID), Check(f"studies/{HYBRID}/README.md")
    shows(HYBRID, HYBRID_COMPARE)
    words = argv(HYBRID_COMPARE)
    words[words.index("--out") + 1] = str(tmp_path)
    cli(words)
    (p,) = json.loads((tmp_path / "hybrid.json").read_text())["pairs"]
    t = Table(text, "", "dense (6/6 full)", where=c.where)
    v = p["val_loss"]
    c.cell(t, "val loss at 16K (nats/byte)", "dense (6/6 full)", v["dense"])
    c.cell(t, "val loss at 16K (nats/byte)", "hybrid (2/6 full)", v["hybrid"])
    c.cell(t, "val loss at 16K (nats/byte)", "hybrid vs dense", v["delta"])
    key = "passkey at 16K, depth 0.1 / 0.5 / 0.9 (16 each)"
    for side, col in (("dense", "dense (6/6 full)"), ("hybrid", "hybrid (2/6 full)")):
        c.cell(t, key, col, *[r[side] * r[f"samples_{side}"] for r in p["retrieval"]])
    tr = p["train"]
    key = "train tokens/s at 16K (steady state)"
    c.cell(t, key, "dense (6/6 full)", tr["dense_tokens_per_s"])
    c.cell(t, key, "hybrid (2/6 full)", tr["hybrid_tokens_per_s"])
    c.cell(t, key, "hybrid vs dense", tr["measured"])
    c.cell(t, key, "costmodel ideal", tr["ideal"])
    c.cell(t, key, "share of ideal", tr["share"])
    inf = {i["context"]: i for i in p["inference"]}
    for ctx, key in ((16384, "prefill, 16,352 tokens"), (32768, "prefill, 32,736 tokens")):
        f = inf[ctx]["prefill"]
        c.cell(t, key, "dense (6/6 full)", f["dense_s"] * 1e3)
        c.cell(t, key, "hybrid (2/6 full)", f["hybrid_s"] * 1e3)
        c.cell(t, key, "hybrid vs dense", f["measured"])
        c.cell(t, key, "costmodel ideal", f["ideal"])
        c.cell(t, key, "share of ideal", f["share"])
    for ctx, key in ((16384, "decode tokens/s at 16K (batch 1)"), (32768, "decode tokens/s at 32K")):
        f = inf[ctx]["decode"]
        c.cell(t, key, "dense (6/6 full)", f["dense_tokens_per_s"])
        c.cell(t, key, "hybrid (2/6 full)", f["hybrid_tokens_per_s"])
        c.cell(t, key, "hybrid vs dense", f["measured"])
        c.cell(t, key, "costmodel ideal", f["ideal_flops"], f["ideal_bytes"])
        c.cell(t, key, "share of ideal", f["share_flops"], f["share_bytes"])
    key = "KV cache at 16K / 32K, measured = analytic"
    kv = [inf[x]["kv"] for x in (16384, 32768)]
    c.cell(t, key, "dense (6/6 full)", *[k["dense"]["measured"] / 2 ** 20 for k in kv])
    c.cell(t, key, "hybrid (2/6 full)", *[k["hybrid"]["measured"] / 2 ** 20 for k in kv])
    c.cell(t, key, "hybrid vs dense", *[k["hybrid_over_dense"]["measured"] for k in kv])
    c.equal("KV exact", all(k[s]["exact"] for k in kv for s in ("dense", "hybrid")), True)
    gaps = [abs(b["delta"]) for b in p["position_loss"]]
    c.phrase(text, f"Loss by position differs by at most {max(gaps):.4f} nats in any of the {len(gaps)} buckets")
    c.phrase(text, f"`compile_s` {p['hybrid']['compile_s']:.1f} s")
    # the re-measured speed: benchmarks/runs.md's table, as it is there
    bench = Table(text_of(REPO / "benchmarks/runs.md"), "", "x (dense)", "x-hybrid", where="benchmarks/runs.md")
    again = Table(text, "", "dense", "hybrid", "hybrid vs dense", where=c.where)
    for mine, theirs in (("train tok/s at 16K", "train tok/s"),
                         ("decode tok/s at 16K, batch 1", "decode, batch 1, at 16K"),
                         ("prefill, 16,352 tokens, batch 1", "prefill, batch 1, 16,352 tokens")):
        c.equal(mine, [numbers(x) for x in again.row(mine)[1:4]], [numbers(x) for x in bench.row(theirs)[1:4]])
    row = measured_row(HYBRID)
    c.phrase(row, f"{v['hybrid']:.4f} vs {v['dense']:.4f}; {tr['measured']:.2f}× (ideal {tr['ideal']:.2f}×) in the "
                  "study")
    c.phrase(row, f"{numbers(bench.row('train tok/s')[3])[0]} re-measured")
    c.done()


# ---------------------------------------------------------------------------------------------- compressed
COMPRESSED = "compressed"
COMPRESSED_TABLE = """python -c "import pandas as pd; d = pd.read_parquet('studies/compressed/kv_policies.parquet')
print(d.pivot(index='policy', columns='keep', values='delta_nll').round(4))
print(d.pivot(index='policy', columns='keep', values='retrieval_accuracy').round(2))
print((d.kv_bytes == d.kv_bytes_analytic).sum(), 'of', len(d), 'rows: measured KV bytes = costmodel')\""""


def test_compressed():
    import pandas as pd

    text, c = readme(COMPRESSED), Check(f"studies/{COMPRESSED}/README.md")
    shows(COMPRESSED, COMPRESSED_TABLE)
    d = pd.read_parquet(STUDIES / COMPRESSED / "kv_policies.parquet")
    t = Table(text, "policy", "keep 1", where=c.where)
    for r in d.itertuples():
        c.cell(t, r.policy, f"keep {r.keep:g}", r.delta_nll)
    c.phrase(text, f"in all {len(d)} rows")
    c.equal("measured KV bytes = costmodel", int((d.kv_bytes == d.kv_bytes_analytic).sum()), len(d))
    dn = d.pivot(index="policy", columns="keep", values="delta_nll")
    below1 = dn.drop(columns=1.0)
    c.equal("every policy beats random below keep 1",
            bool((below1.drop(index="random") < below1.loc["random"]).all().all()), True)
    c.phrase(text, f"InfiniPot loses least ({like('+0.000', dn.loc['infinipot', 0.5])}, "
                   f"{like('+0.000', dn.loc['infinipot', 0.25])})")
    c.phrase(text, f"StreamingLLM loses least ({like('+0.000', dn.loc['streaming', 0.1])}, "
                   f"{like('+0.000', dn.loc['streaming', 0.05])})")
    for keep in (0.5, 0.25):
        c.equal(f"least at keep {keep}", dn[keep].idxmin(), "infinipot")
    for keep in (0.1, 0.05):
        c.equal(f"least at keep {keep}", dn[keep].idxmin(), "streaming")
    # retrieval: the second table, and the reversal the findings state
    rt = Table(text[text.index("## Passkey retrieval"):], "policy", "keep 1", where=c.where)
    for r in d.itertuples():
        c.cell(rt, r.policy, f"keep {r.keep:g}", r.retrieval_accuracy)
    ra = d.pivot(index="policy", columns="keep", values="retrieval_accuracy")
    bench = json.loads(text_of(REPO / "benchmarks/results/kv_h100/kv_bench.json"))
    n = 3 * bench["args"]["retrieval_samples"]
    c.phrase(text, f"Accuracy over {n} passkey prompts per cell ({bench['args']['retrieval_samples']} at each")
    c.equal("retrieval granularity", bool(((ra * n).round(6) % 1 == 0).all().all()), True)
    for keep in (0.5, 0.25, 0.1):
        c.equal(f"best retrieval at keep {keep}", ra[keep].idxmax(), "snapkv")
    c.equal("snapkv at keep 0.5", ra.loc["snapkv", 0.5], 1.0)
    c.phrase(text, f"best at\n  0.25 ({ra.loc['snapkv', 0.25]:.2f}) and 0.1 ({ra.loc['snapkv', 0.1]:.2f})")
    c.phrase(text, f"InfiniPot is second ({ra.loc['infinipot', 0.5]:.2f} at 0.5)")
    c.equal("infinipot second at 0.5", ra[0.5].drop("snapkv").idxmax(), "infinipot")
    for p in ("streaming", "h2o", "kv_distill"):
        c.equal(f"{p} retrieves a third at 0.5", round(ra.loc[p, 0.5], 2), 0.33)
    c.equal("locret 0 below keep 1", float(ra.loc["locret"].drop(1.0).max()), 0.0)
    c.phrase(text, f"below random eviction ({ra.loc['random', 0.5]:.2f} at keep 0.5)")
    c.phrase(text, f"Validation loss {bench['phases']['base']['val_loss']:.3f} nats/byte")
    c.done()


# ---------------------------------------------------------------------------------------------- calibration
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


# ---------------------------------------------------------------------------------------------- noise-floor
NOISE = "noise-floor"
NOISE_RUNS = ('costlaw query --db studies/noise-floor/results.duckdb "select r.seed, '
              "json_extract_string(r.config_json, '$.config.data.long_docs') as long_docs, r.packing, r.val_loss, "
              "e.value as val_loss_se, r.final_loss, r.epochs, r.tokens_per_s, r.wall_s from runs r join evals e "
              "using (run_id) where e.eval = 'val_loss' and e.metric = 'loss_se' order by 2 desc, 3, 1\"")


def noise_mode(row: dict) -> str:
    return "files" if row["long_docs"] == "false" else "uniform" if row["packing"] == "uniform" else "dirs"


def test_noise_floor(cli):
    import statistics

    from scipy import stats

    text, c = readme(NOISE), Check(f"studies/{NOISE}/README.md")
    runs = query(cli, NOISE, NOISE_RUNS)
    assert len(runs) == 18
    by = {m: sorted((r for r in runs if noise_mode(r) == m), key=lambda r: r["seed"])
          for m in ("dirs", "files", "uniform")}
    t = Table(text, "mode", "val loss, seeds 0–5", where=c.where)
    loss = {m: [r["val_loss"] for r in rs] for m, rs in by.items()}
    for m, rs in by.items():
        x, n = loss[m], len(loss[m])
        assert [r["seed"] for r in rs] == list(range(6))
        sd = statistics.stdev(x)
        c.cell(t, m, "val loss, seeds 0–5", *x)
        c.cell(t, m, "mean", statistics.mean(x))
        c.cell(t, m, "sd", sd)
        c.cell(t, m, "sd, 90% interval", sd * ((n - 1) / stats.chi2.ppf(0.95, n - 1)) ** 0.5,
               sd * ((n - 1) / stats.chi2.ppf(0.05, n - 1)) ** 0.5)
        c.cell(t, m, "max − min", max(x) - min(x))
        se = [r["val_loss_se"] for r in rs]
        c.cell(t, m, "val set's own error (loss_se)", min(se), max(se))

    def ftest(a, b):
        f = statistics.variance(loss[a]) / statistics.variance(loss[b])
        return f, 2 * min(stats.f.cdf(f, 5, 5), stats.f.sf(f, 5, 5))

    f, p = ftest("dirs", "uniform")
    sd = {m: statistics.stdev(x) for m, x in loss.items()}
    mean = {m: statistics.mean(x) for m, x in loss.items()}
    c.phrase(text, f"seed sd {sd['uniform']:.4f} nats, against {sd['dirs']:.4f} for today's directory documents")
    c.phrase(text, f"variance ratio {f:.2f}, F test with 5 and 5 degrees of freedom p = {p:.3f}; Levene's test "
                   f"about the median p = {stats.levene(loss['dirs'], loss['uniform']).pvalue:.3f}")
    c.phrase(text, f"(F p = {ftest('dirs', 'files')[1]:.3f} against dirs, {ftest('uniform', 'files')[1]:.3f} "
                   "against uniform)")
    c.phrase(text, f"{mean['uniform']:.4f} against {mean['dirs']:.4f}**, {mean['dirs'] - mean['uniform']:.4f} nats "
                   f"lower on the mean (Welch p = "
                   f"{stats.ttest_ind(loss['dirs'], loss['uniform'], equal_var=False).pvalue:.4f})")
    assert max(loss["uniform"]) < min(loss["dirs"])  # "Every uniform seed is below every dirs seed."
    gap = {m: [r["final_loss"] - r["val_loss"] for r in rs] for m, rs in by.items()}

    def signed(v):
        return f"{v:+.3f}".replace("-", MINUS)

    c.phrase(text, f"{signed(min(gap['dirs']))} to {signed(max(gap['dirs']))} across the six dirs seeds (sd "
                   f"{statistics.stdev(gap['dirs']):.3f}), against {signed(min(gap['uniform']))} to "
                   f"{signed(max(gap['uniform']))} (sd {statistics.stdev(gap['uniform']):.3f})")
    se = [r["val_loss_se"] for r in runs]
    c.phrase(text, f"{min(se):.4f}–{max(se):.4f} nats over the 18 runs")
    epochs = {round(r["epochs"], 3) for r in runs}
    c.phrase(text, f"These runs took {min(epochs):.3f} of one")
    c.phrase(text, f"about {sd['uniform']:.3f} nats")
    row = measured_row(NOISE)
    c.phrase(row, f"{sd['uniform']:.3f} with uniform windows, {sd['files']:.3f} with file documents, "
                  f"{sd['dirs']:.3f} with directory documents")
    c.phrase(row, f"{mean['dirs'] - mean['uniform']:.3f} lower")
    c.phrase(row, f"{min(se):.4f}–{max(se):.4f}")
    c.done()


# ---------------------------------------------------------------------------------------------- long-context
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
                   f"**{mean} nats** on average (se {err})")
    changes = []
    for db in ("ladder", "ladder-rerun"):
        doc = json.loads(cli(["validate", "--db", f"studies/long-context/{db}.duckdb", "--mode", "context", "--json"]))
        changes.append({(s["candidate"], s["d_model"]): s["change"] for s in doc["shifts"]})
        if db == "ladder":
            o = doc["overall"]
            c.phrase(text, f"Its se ({o['se_mean']:.4f} for the first attempt's {o['mean']:+.4f}) is the spread of the "
                           f"{o['n']} changes over widths and candidates (sd {o['sd']:.4f} / √{o['n']})")
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


# ---------------------------------------------------------------------------------------------- the fits files
@pytest.mark.slow
@pytest.mark.parametrize("study, exports, command", [
    (STEPS, [STEPS_EXPORT], STEPS_FITS["fits.json"]),
    (ASPECT, [], ASPECT_FITS["fits.json"]),
    (HEADS, [HEADS_EXPORT], HEADS_FITS["fits.json"]),
], ids=[STEPS, ASPECT, HEADS])
def test_fits_file_is_its_command(cli, tmp_path, study, exports, command):
    """The committed fits.json whose bootstrap intervals a README quotes is what the README's command writes
    today (1,000 bootstrap refits, seed 0): same candidates, parameters, R², intervals and draws."""
    paths = {}
    for cmd in exports:
        out = argv(cmd)[argv(cmd).index("--out") + 1]
        paths[out] = str(export(cli, study, cmd, tmp_path / Path(out).name))
    shows(study, command)
    args = argv(command, **paths)
    committed_path = Path(args[args.index("--out") + 1])
    args[args.index("--out") + 1] = str(tmp_path / "fits.json")
    cli(args)
    mine, theirs = json.loads((tmp_path / "fits.json").read_text()), json.loads(text_of(REPO / committed_path))
    assert {k: v for k, v in mine.items() if k not in ("source", "candidates")} == \
        {k: v for k, v in theirs.items() if k not in ("source", "candidates")}
    for a, b in zip(mine["candidates"], theirs["candidates"], strict=True):
        assert a["group"] == b["group"] and a["data_fingerprint"] == b["data_fingerprint"]
        for k in ("a", "b", "E"):
            assert close(a["params"][k], b["params"][k], 1e-6)
            assert all(close(x, y, 1e-6) for x, y in zip(a["ci95"][k], b["ci95"][k], strict=True)), (a["group"], k)
        assert a["n_used"] == b["n_used"] and a["n_failed"] == b["n_failed"]
