"""What the tests of tests/studies/ share. Each test_<study>_numbers.py beside this module re-derives a study's
headline numbers from its committed store or files by the commands its README shows, against the numbers its README
states (and the main README's "Measured" row that cites it); the `cli` fixture is in conftest.py.

How they cannot drift: each command a test runs must appear in the study's README (`shows`), the test runs that
command (through costlaw.cli.main, in this process, with --format json / --json added), and compares the result with
the cells of the README's own tables (`Table`, `Check.cell`) and with the summary lines it quotes (`Check.phrase`),
formatted as the README writes them (digits, sign, thousands separators, M / K / % / ×). A README edited without
its store, or a store or code change that moves a number, fails there with every mismatch listed. Numbers a README
copies from another committed file (a benchmark's table, a measurements file) are compared with that file.

Commands that would write (a fit or recommend given one --db caches its fits in that file) run on a copy in
tmp_path, as the READMEs say. Numbers that depend on bootstrap draws are read from the committed fits files,
which the slow test of test_fits_files.py regenerates with the README's command.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

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


def check_law_table(c: Check, text: str, every: dict, fits: dict, seeds: dict, predicted: str,
                    ceiling: bool = False) -> None:
    """A GQA ladder README's law table (one row per (n_h, n_kv)) against its every-run fits: parameters with their
    95% intervals, R² (and its ceiling), and the d 640 runs held out; `predicted` names its prediction column."""
    ft = Table(text, "(n_h, n_kv)", "runs", "a", where=c.where)
    for g, f in every.items():
        key, ci = label(g), fits[g]["ci95"]
        c.cell(ft, key, "runs", f["n_points"])
        c.cell(ft, key, "a", f["params"]["a"])
        c.cell(ft, key, "b (95%)", f["params"]["b"], *ci["b"])
        c.cell(ft, key, "E (95%)", f["params"]["E"], *ci["E"])
        c.cell(ft, key, "R²", f["r2"])
        if ceiling:
            c.cell(ft, key, "ceiling", f["r2_ceiling"])
        ho = held_out(f, seeds)
        c.cell(ft, key, "d 640: measured", *[h[1] for h in ho])
        c.cell(ft, key, predicted, ho[0][2])
        c.cell(ft, key, "error", *[h[3] for h in ho])


LAW = "--law gqa-size --x N --group-by n_heads,n_kv_heads"


def export(cli, study: str, command: str, path: Path) -> Path:
    """Run a README's `costlaw query --format parquet --out /tmp/X` with the file in tmp_path instead."""
    shows(study, command)
    words = argv(command)
    words[words.index("--out") + 1] = str(path)
    cli(words)
    return path


def fits_of(cli, study: str, commands: dict, paths: dict) -> dict:
    return {name: fit(cli, study, cmd, **paths) for name, cmd in commands.items()}

def committed_fits(study: str, name: str) -> dict:
    return by_group(json.loads(text_of(STUDIES / study / name)), "n_heads", "n_kv_heads")
