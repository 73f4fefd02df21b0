"""Malformed input across every verb and subcommand (issues 20 and 22).

Each case runs `costlaw.cli.main` in a fresh directory that holds every file the cases name (valid ones and bad
ones: a non-UTF-8 file, an empty one, a directory, a FIFO, truncated and list-shaped JSON, paths with spaces and
non-ASCII names) and must answer with its exit code (USAGE for the command line itself, INPUT for a value or a file
a user can fix), exactly one line on stderr that names the field, no traceback, and nothing written: the
directory's listing (names, kinds, sizes, modification times) is the same after as before, so no stray lock file,
database, cache or output directory is left behind.

Most cases are written out by hand, per verb; the rest are generated from the parsers themselves, so a flag added
later is tried too: an unknown flag on every verb and subcommand, inf / nan / 1e400 for every float flag, the
values just outside every declared range, and an empty string for every flag that takes text.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from costlaw.cli import VERBS, OneLineParser, main
from costlaw.costmodel.core.exitcodes import INPUT, USAGE

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60  # one case; a FIFO opened by mistake would block forever


class Hung(BaseException):
    """Raised by the alarm inside a case that does not return: not an Exception, so the CLI cannot swallow it."""


# ---------------------------------------------------------------- the workspace every case runs in
def _workspace(root: Path) -> None:
    (root / "db.duckdb").write_bytes((REPO / "studies" / "pilot" / "results.duckdb").read_bytes())
    shutil.copy(REPO / "sweeps" / "examples" / "tiny.toml", root / "spec.toml")
    shutil.copy(REPO / "runs" / "examples" / "tiny-gqa.toml", root / "run.toml")
    shutil.copy(REPO / "studies" / "calibration" / "measurements.json", root / "measurements.json")
    (root / "runs.csv").write_text("N,loss\n1e6,3.0\n2e6,2.8\n4e6,2.7\n8e6,2.6\n1.6e7,2.55\n")
    (root / "fits.json").write_text('{"format": "costlaw-fits/1", "candidates": []}\n')
    (root / "bin.toml").write_bytes(b"\xff\xfe\x00\x81 not text")
    (root / "bin.json").write_bytes(b"\xff\xfe\x00\x81 not text")
    (root / "empty.toml").write_text("")
    (root / "empty.json").write_text("")
    (root / "trunc.json").write_text('{"model": {"d_model": 64')
    (root / "list.json").write_text("[1, 2, 3]\n")
    (root / "str.json").write_text('"config"\n')
    (root / "inner-list.json").write_text('{"config": [1, 2]}\n')
    (root / "file.txt").write_text("not a directory\n")
    (root / "notdb.duckdb").write_text("not a database\n")
    (root / "dir").mkdir()
    (root / "with space").mkdir()
    (root / "with space" / "run config.toml").write_bytes(b"\xff not text")
    (root / "données.toml").write_text("[model]\nd_model = 'beaucoup'\n")
    os.mkfifo(root / "fifo")


def _listing(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def ws(tmp_path, monkeypatch):
    _workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COSTLAW_CACHE", str(tmp_path / "cache"))  # a corpus cache, were anything to use one
    monkeypatch.delenv("COLUMNS", raising=False)
    return tmp_path


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in this process with a deadline: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()

    def hung(signum, frame):
        raise Hung(f"costlaw {' '.join(argv)} did not return within {TIMEOUT_S} s")

    before = signal.signal(signal.SIGALRM, hung)
    signal.alarm(TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    return rc, out.getvalue(), err.getvalue()


def check(ws: Path, argv: list[str], code: int, field: str) -> str:
    """The case's contract; returns the one stderr line."""
    before = _listing(ws)
    rc, out, err = run_cli(argv)
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"{argv}: stderr is not one line:\n{err}"
    assert rc == code, f"{argv}: exit {rc}, wanted {code}: {lines[0]}"
    assert lines[0].startswith("costlaw"), lines[0]
    if field:
        assert field in lines[0], f"{argv}: {field!r} not named in {lines[0]!r}"
    assert _listing(ws) == before, f"{argv} wrote {set(_listing(ws)) ^ set(before) or 'into an existing file'}"
    if code == INPUT:
        assert out == "", f"{argv}: printed {out!r} before failing"
    return lines[0]


# ---------------------------------------------------------------- the cases, verb by verb
# (argv, exit code, what the line must name)
CASES = [
    # the command line itself
    ([], USAGE, "give a verb"),
    (["swep"], USAGE, "did you mean 'sweep'"),
    (["--bogus"], USAGE, "unknown verb '--bogus'"),
    (["données"], USAGE, "unknown verb"),
    # quickstart
    (["quickstart", "--root", "file.txt"], INPUT, "--root: 'file.txt' is a file"),
    (["quickstart", "--root", "missing/deeper/qs"], INPUT, "--root: no directory 'missing/deeper'"),
    (["quickstart", "--root", "file.txt/qs"], INPUT, "--root: 'file.txt' is a file, not a directory"),
    (["quickstart", "--root", "qs", "--jobs", "0"], INPUT, "--jobs: must be >= 1"),
    (["quickstart", "--root", "qs", "--bootstrap", "1"], INPUT, "--bootstrap: one resample"),
    (["quickstart", "--root", "qs", "--spec", "fifo"], INPUT, "--spec: 'fifo' is not a regular file"),
    (["quickstart", "--root", "qs", "--spec", "bin.toml"], INPUT, "--spec: 'bin.toml' is not a text file"),
    (["quickstart", "--root", "qs", "--spec", "dir"], INPUT, "--spec: 'dir' is a directory"),
    (["quickstart", "--root", "qs", "--spec", "empty.toml"], INPUT, "--spec: 'empty.toml' is empty"),
    (["quickstart", "--root", "qs", "--spec", "missing.toml"], INPUT, "--spec: no such file"),
    (["quickstart", "--root", "qs", "--jobs", "two"], USAGE, "--jobs"),
    # cost
    (["cost", "--preset", "gqa-19m", "--context", "inf"], INPUT, "--context: 'inf' is not a finite"),
    (["cost", "--preset", "gqa-19m", "--context", "1e400"], INPUT, "--context: '1e400' is not a finite"),
    (["cost", "--preset", "gqa-19m", "--context", "nan"], INPUT, "--context: 'nan' is not a finite"),
    (["cost", "--preset", "gqa-19m", "--context=-5"], INPUT, "--context: must be >= 1"),
    (["cost", "--preset", "gqa-19m", "--context", "0"], INPUT, "--context: must be >= 1"),
    (["cost", "--preset", "gqa-19m", "--context", "1.5"], INPUT, "--context: '1.5' is not a whole number"),
    (["cost", "--preset", "gqa-19m", "--context", "1" + "0" * 30], INPUT, "--context: 1e+30 tokens is beyond"),
    (["cost", "--preset", "gqa-19m", "--context", ","], INPUT, "--context: empty"),
    (["cost", "--preset", "gqa-19m", "--context", "lots"], INPUT, "--context: 'lots' is not a token count"),
    (["cost", "--config", "bin.toml"], INPUT, "--config: 'bin.toml' is not a text file"),
    (["cost", "--config", "empty.toml"], INPUT, "--config: 'empty.toml' is empty"),
    (["cost", "--config", "dir"], INPUT, "--config: 'dir' is a directory"),
    (["cost", "--config", "fifo"], INPUT, "--config: 'fifo' is not a regular file"),
    (["cost", "--config", "missing.toml"], INPUT, "--config: no such file"),
    (["cost", "--config", "données.toml"], INPUT, "--layers: missing"),
    (["cost", "--hf-config", "list.json"], INPUT, "--hf-config: must be a JSON object"),
    (["cost", "--hf-config", "trunc.json"], INPUT, "--hf-config: 'trunc.json' is not JSON"),
    (["cost", "--hf-config", "bin.json"], INPUT, "--hf-config: 'bin.json' is not a text file"),
    (["cost", "--hf-config", "fifo"], INPUT, "--hf-config: 'fifo' is not a regular file"),
    (["cost", "--preset", "nope"], INPUT, "--preset: unknown preset 'nope'"),
    (["cost", "--preset", "gqa-19m", "--dtype", "fp7"], INPUT, "--dtype: unknown dtype 'fp7'"),
    (["cost", "--preset", "gqa-19m", "--gpu", "TPU"], INPUT, "--gpu: unknown GPU 'TPU'"),
    (["cost", "--preset", "gqa-19m", "--kv-keep", "-1"], INPUT, "--kv-keep: must be in (0, 1]"),
    (["cost", "--preset", "gqa-19m", "--generate=-1"], INPUT, "--generate: must be 0 to"),
    (["cost", "--preset", "gqa-19m", "--layers", "0"], INPUT, "--layers: must be in [1, 100000]"),
    (["cost", "--preset", "gqa-19m", "--heads", "many"], USAGE, "--heads"),
    (["cost", "--preset", "gqa-19m", "--config", "run.toml"], INPUT, "give one of --config, --preset or --hf-config"),
    # run
    (["run", "bin.toml", "--root", "out"], INPUT, "config: 'bin.toml' is not a text file"),
    (["run", "empty.toml", "--root", "out"], INPUT, "config: 'empty.toml' is empty"),
    (["run", "dir", "--root", "out"], INPUT, "config: 'dir' is a directory"),
    (["run", "fifo", "--root", "out"], INPUT, "config: 'fifo' is not a regular file"),
    (["run", "missing.toml", "--root", "out"], INPUT, "config: no such file"),
    (["run", "trunc.json", "--root", "out"], INPUT, "config: 'trunc.json' is not valid JSON"),
    (["run", "list.json", "--root", "out"], INPUT, "config: 'list.json' holds a JSON list, not an object"),
    (["run", "str.json", "--root", "out"], INPUT, "config: 'str.json' holds a JSON str, not an object"),
    (["run", "inner-list.json", "--root", "out"], INPUT, "config: 'inner-list.json' has a \"config\" that is a JSON"),
    (["run", "bin.json", "--root", "out"], INPUT, "config: 'bin.json' is not a text file"),
    (["run", "with space/run config.toml", "--root", "out"], INPUT, "config: 'with space/run config.toml' is not"),
    (["run", "spec.toml", "--root", "out"], INPUT, "axes: unknown key"),
    (["run", "run.toml", "--root", "file.txt"], INPUT, "--root: 'file.txt' is a file"),
    (["run", "run.toml", "--root", "missing/out"], INPUT, "--root: no directory 'missing'"),
    (["run", "run.toml", "--root", "file.txt/out"], INPUT, "--root: 'file.txt' is a file, not a directory"),
    (["run", "run.toml", "--root", "out", "--threads=-1"], INPUT, "--threads: must be >= 0"),
    (["run", "run.toml", "--root", "out", "--device", "tpu"], INPUT, "--device: 'tpu' is not"),
    (["run", "run.toml"], USAGE, "--root is required"),
    (["run", "run.toml", "--root", "out", "--out", "out"], USAGE, "not allowed with argument --root"),
    (["run"], USAGE, "required"),
    # data
    (["data", "prepare", "--source", "missing"], INPUT, "corpus: 'missing' is not stdlib"),
    (["data", "prepare", "--source", "file.txt"], INPUT, "corpus: 'file.txt' has 1 non-empty file(s)"),
    (["data", "prepare", "--source", "dir"], INPUT, "corpus: 'dir' holds no files"),
    (["data", "prepare", "--source", "fifo"], INPUT, "corpus: 'fifo' is not stdlib"),
    (["data", "prepare", "--source", "*.nothing"], INPUT, "corpus: '*.nothing' holds no files"),
    (["data", "prepare", "--tokenizer", "nope"], INPUT, "--tokenizer: 'nope' is not one of byte, gpt2"),
    (["data", "prepare", "--workers", "0"], INPUT, "--workers: must be >= 1"),
    (["data", "prepare", "--out", "file.txt"], INPUT, "--out: 'file.txt' is a file"),
    (["data", "prepare", "--out", "missing/corpus"], INPUT, "--out: no directory 'missing'"),
    (["data", "fetch-gpt2", "--dest", "dir"], INPUT, "--dest: 'dir' is a directory"),
    (["data", "fetch-gpt2", "--dest", "missing/gpt2.tiktoken"], INPUT, "--dest: no directory 'missing'"),
    (["data", "list", "extra"], USAGE, "unrecognized arguments: extra"),
    (["data", "list", "--json=yes"], USAGE, "ignored explicit argument 'yes'"),
    (["data"], USAGE, "ACTION"),
    (["data", "nope"], USAGE, "invalid choice: 'nope'"),
    # sweep plan / submit / status / resubmit
    (["sweep", "plan", "bin.toml"], INPUT, "spec: 'bin.toml' is not a text file"),
    (["sweep", "plan", "empty.toml"], INPUT, "spec: 'empty.toml' is empty"),
    (["sweep", "plan", "dir"], INPUT, "spec: 'dir' is a directory"),
    (["sweep", "plan", "fifo"], INPUT, "spec: 'fifo' is not a regular file"),
    (["sweep", "plan", "missing.toml"], INPUT, "spec: no such file"),
    (["sweep", "plan", "trunc.json"], INPUT, "toml: not valid TOML"),
    (["sweep", "plan", "run.toml"], INPUT, "sweep"),
    (["sweep", "plan", "spec.toml", "--where", "model.d_model >"], INPUT, "--where: 'model.d_model >' does not parse"),
    (["sweep", "plan", "spec.toml", "--where", "model.nope == 1"], INPUT, "--where: unknown field path 'model.nope'"),
    (["sweep", "plan", "spec.toml", "--where", "__import__('os')"], INPUT, "--where: unknown function '__import__'"),
    (["sweep", "plan", "spec.toml", "--where", "().__class__"], INPUT, "--where: attribute access"),
    (["sweep", "plan", "spec.toml", "--where", "10 ** 10 ** 10"], INPUT, "--where: '10 ** 10 ** 10' fails: exponent"),
    (["sweep", "plan", "spec.toml", "--where", "N ** 40 > 1"], INPUT, "--where: 'N ** 40 > 1' is out of bounds"),
    (["sweep", "plan", "spec.toml", "--where=" + "-" * 900 + "1"], INPUT, "nests too deeply"),
    (["sweep", "plan", "spec.toml", "--where", "model.d_model == 'x'"], INPUT, "selects none of the 4 runs"),
    (["sweep", "plan", "spec.toml", "--where", "modèle > 1"], INPUT, "--where: unknown name 'modèle'"),
    (["sweep", "plan", "spec.toml", "--where", "N > 1 ✓"], INPUT, "--where: 'N > 1 ✓' does not parse"),
    (["sweep", "plan", "spec.toml", "--mfu", "2"], INPUT, "--mfu: must be <= 1"),
    (["sweep", "plan", "spec.toml", "--gpu", "TPU"], INPUT, "--gpu: unknown GPU"),
    (["sweep", "submit", "spec.toml", "--executor", "debug", "--root", "file.txt"], INPUT, "--root: 'file.txt' is a"),
    (["sweep", "submit", "spec.toml", "--executor", "debug", "--root", "missing/r"], INPUT, "--root: no directory"),
    (["sweep", "submit", "fifo", "--executor", "debug", "--root", "out"], INPUT, "spec: 'fifo' is not a regular"),
    (["sweep", "submit", "spec.toml", "--executor", "local", "--root", "out", "--max-parallel", "0"], INPUT,
     "--max-parallel: must be >= 1"),
    (["sweep", "submit", "spec.toml", "--executor", "local", "--root", "out", "--poll", "0"], INPUT,
     "--poll: must be > 0 seconds"),
    (["sweep", "submit", "spec.toml", "--executor", "local", "--root", "out", "--where", "nope"], INPUT,
     "--where: unknown name 'nope'"),
    (["sweep", "submit", "spec.toml", "--executor", "nope", "--root", "out"], USAGE, "invalid choice: 'nope'"),
    (["sweep", "submit", "spec.toml", "--executor", "local"], USAGE, "--root is required"),
    (["sweep", "status", "--root", "missing"], INPUT, "--root: no such directory 'missing'"),
    (["sweep", "status", "--root", "file.txt"], INPUT, "--root: 'file.txt' is not a directory"),
    (["sweep", "status", "--root", "dir"], INPUT, "--root: no sweep.json"),
    (["sweep", "status", "--root", "dir", "--watch", "0"], INPUT, "--watch: must be > 0 seconds"),
    (["sweep", "status", "--root", "dir", "--lines=-1"], INPUT, "--lines: must be >= 0"),
    (["sweep", "resubmit", "--root", "missing", "--failed"], INPUT, "--root: no such directory"),
    (["sweep", "resubmit", "--root", "dir", "--failed"], INPUT, "--root: no sweep.json"),
    (["sweep", "resubmit", "--root", "dir"], USAGE, "--failed"),
    (["sweep"], USAGE, "ACTION"),
    (["sweep", "watch"], USAGE, "invalid choice: 'watch'"),
    # ingest
    (["ingest", "--root", "missing", "--db", "new.duckdb"], INPUT, "--root: no such directory 'missing'"),
    (["ingest", "--root", "file.txt", "--db", "new.duckdb"], INPUT, "--root: 'file.txt' is not a directory"),
    (["ingest", "--root", "fifo", "--db", "new.duckdb"], INPUT, "--root: 'fifo' is not a directory"),
    (["ingest", "--root", "dir", "--db", "dir"], INPUT, "--db: 'dir' is a directory"),
    (["ingest", "--root", "dir", "--db", "fifo"], INPUT, "--db: 'fifo' is not a regular file"),
    (["ingest", "--root", "dir", "--db", "missing/new.duckdb"], INPUT, "--db: no directory 'missing'"),
    (["ingest", "--root", "dir", "--db", "notdb.duckdb"], INPUT, "--db: cannot open notdb.duckdb"),
    (["ingest", "--root", "dir", "--db", "new.duckdb", "--wait=-1"], INPUT, "--wait: must be >= 0"),
    (["ingest", "--root", "dir"], USAGE, "--db"),
    # query
    (["query", "--db", "fifo", "select 1"], INPUT, "--db: 'fifo' is not a regular file"),
    (["query", "--db", "dir", "select 1"], INPUT, "--db: 'dir' is a directory"),
    (["query", "--db", "empty.toml", "select 1"], INPUT, "--db: 'empty.toml' is empty"),
    (["query", "--db", "missing.duckdb", "select 1"], INPUT, "--db: no such results file"),
    (["query", "--db", "notdb.duckdb", "select 1"], INPUT, "--db: cannot open"),
    (["query", "--db", "db.duckdb"], INPUT, "sql: missing"),
    (["query", "--db", "db.duckdb", "select 1; select 2"], INPUT, "SQL: 2 statements"),
    (["query", "--db", "db.duckdb", "drop table runs"], INPUT, "SQL: DROP statements are refused"),
    (["query", "--db", "db.duckdb", "select * from read_csv('/etc/passwd')"], INPUT, "SQL: Permission Error"),
    (["query", "--db", "db.duckdb", "select cast('x' as int)"], INPUT, "SQL: Conversion Error"),
    (["query", "--db", "db.duckdb", "select 1", "--out", "dir"], INPUT, "--out: 'dir' is a directory"),
    (["query", "--db", "db.duckdb", "select 1", "--out", "missing/x.csv"], INPUT, "--out: no directory 'missing'"),
    (["query", "--db", "db.duckdb", "select 1", "--out", "db.duckdb"], INPUT, "--out: db.duckdb is the database"),
    (["query", "--db", "db.duckdb", "select 1", "--format", "parquet"], INPUT, "--format: parquet is binary"),
    (["query", "--db", "db.duckdb", "select 1", "--format", "xml"], USAGE, "invalid choice: 'xml'"),
    # fit
    (["fit", "--data", "fifo", "--law", "gqa-size", "--x", "N"], INPUT, "--data: 'fifo' is not a regular file"),
    (["fit", "--data", "dir", "--law", "gqa-size", "--x", "N"], INPUT, "--data: 'dir' is a directory"),
    (["fit", "--data", "empty.json", "--law", "gqa-size", "--x", "N"], INPUT, "--data: 'empty.json' is empty"),
    (["fit", "--data", "missing.csv", "--law", "gqa-size", "--x", "N"], INPUT, "--data: no such file"),
    (["fit", "--data", "bin.toml", "--law", "gqa-size", "--x", "N"], INPUT, "--data: bin.toml is not .csv"),
    (["fit", "--data", "trunc.json", "--law", "gqa-size", "--x", "N"], INPUT, "--data: cannot read trunc.json"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--where", "N >"], INPUT,
     "--where: 'N >' does not parse"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--where", "nope > 1"], INPUT,
     "--where: unknown column 'nope'"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--where", "N > 1e400"], INPUT,
     "--where: 'N > 1e400' keeps no rows"),
    (["fit", "--data", "runs.csv", "--formula", "__import__('os').system('x')"], INPUT, "--formula: unknown function"),
    (["fit", "--data", "runs.csv", "--law", "nope", "--x", "N"], INPUT, "unknown law 'nope'"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--bootstrap", "1"], INPUT,
     "--bootstrap: must be 0 or 2 to"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--bootstrap", "10" + "0" * 20], INPUT,
     "--bootstrap: must be 0 or 2 to"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--starts", "10" + "0" * 20], INPUT,
     "--starts: must be 1 to"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--delta=-1"], INPUT, "--delta: must be > 0"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--predict", "inf"], INPUT,
     "--predict: 'inf' holds a value that is not finite"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--fix", "E=nan"], INPUT, "--fix: E=nan is not"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--bounds", "b=2:1"], INPUT, "--bounds: b=2:1"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--out", "dir"], INPUT, "--out: 'dir' is a dir"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--out", "missing/f.json"], INPUT,
     "--out: no directory 'missing'"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--plot", "fit.gif"], INPUT,
     "--plot: fit.gif needs a .png"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--plot", "missing/fit.png"], INPUT,
     "--plot: no directory 'missing'"),
    (["fit", "--data", "runs.csv", "--law-file", "fifo"], INPUT, "--law-file: 'fifo' is not a regular file"),
    (["fit", "--data", "runs.csv", "--law-file", "bin.toml"], INPUT, "--law-file: 'bin.toml' is not a text file"),
    (["fit", "--data", "runs.csv", "--law-file", "dir"], INPUT, "--law-file: 'dir' is a directory"),
    (["fit", "--db", "fifo", "--sql", "select 1"], INPUT, "--db: 'fifo' is not a regular file"),
    (["fit", "--db", "db.duckdb", "--sql", "select 1", "--law", "gqa-size"], INPUT, "--sql: the result has no run_id"),
    (["fit", "--data", "runs.csv", "--sql", "select 1"], INPUT, "--sql: queries a results file"),
    (["fit", "--data", "runs.csv", "--db", "db.duckdb", "--sql", "select 1"], INPUT, "--db: reads rows from a"),
    (["fit", "--law", "gqa-size"], INPUT, "--data: required"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--residuals", "sqrt"], USAGE, "invalid choice: 'sqrt'"),
    # isoflop
    (["isoflop", "--db", "fifo"], INPUT, "--db: 'fifo' is not a regular file"),
    (["isoflop", "--db", "empty.toml"], INPUT, "--db: 'empty.toml' is empty"),
    (["isoflop", "--db", "dir"], INPUT, "--db: 'dir' is a directory"),
    (["isoflop", "--db", "db.duckdb", "--budgets", "inf"], INPUT, "--budgets: 'inf' holds a budget"),
    (["isoflop", "--db", "db.duckdb", "--budgets=-1,2"], INPUT, "--budgets: '-1,2' holds a budget"),
    (["isoflop", "--db", "db.duckdb", "--budgets", "a"], INPUT, "--budgets: 'a' is not comma-separated numbers"),
    (["isoflop", "--db", "db.duckdb", "--n-budgets", "1"], INPUT, "--n-budgets: the power laws need 2"),
    (["isoflop", "--db", "db.duckdb", "--min-runs", "2"], INPUT, "--min-runs: a parabola needs 3 runs"),
    (["isoflop", "--db", "db.duckdb", "--plot", "x.gif"], INPUT, "--plot: x.gif needs a .png"),
    (["isoflop", "--db", "db.duckdb", "--plot", "missing/x.png"], INPUT, "--plot: no directory 'missing'"),
    (["isoflop", "--db", "db.duckdb", "--sql", "drop table runs"], INPUT, "SQL: DROP statements are refused"),
    (["isoflop", "--db", "db.duckdb", "--n", "nope"], INPUT, "--n: the runs query has no 'nope' column"),
    # recommend
    (["recommend", "--db", "db.duckdb", "--target-loss", "0", "--context", "8K"], INPUT, "--target-loss: must be > 0"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "inf"], INPUT, "--context: 'inf' is not"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "0"], INPUT, "--context: must be >= 1"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--level", "1"], INPUT,
     "--level: must be a probability"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--lambda", "2"], INPUT,
     "--lambda: must be in [0, 1]"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--alpha", "0"], INPUT,
     "--alpha: must be > 0"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--memory-budget", "inf"], INPUT,
     "--memory-budget: 'inf' is not a finite size"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--memory-budget", "lots"], INPUT,
     "--memory-budget: 'lots' is not a size"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--flops-budget", "1e400"], INPUT,
     "--flops-budget: '1e400' is not a finite number"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--gpu", "TPU"], INPUT,
     "--gpu: unknown GPU"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--latency-target-ms", "5"], INPUT,
     "--latency-target-ms: needs --gpu"),
    (["recommend", "--fits", "fifo", "--target-loss", "3", "--context", "8K"], INPUT, "--fits: 'fifo' is not a"),
    (["recommend", "--fits", "bin.json", "--target-loss", "3", "--context", "8K"], INPUT, "--fits: 'bin.json' is not"),
    (["recommend", "--fits", "trunc.json", "--target-loss", "3", "--context", "8K"], INPUT, "--fits: trunc.json is"),
    (["recommend", "--fits", "list.json", "--target-loss", "3", "--context", "8K"], INPUT, "--fits: list.json lacks"),
    (["recommend", "--fits", "fits.json", "--target-loss", "3", "--context", "8K"], INPUT, "--fits: fits.json has no"),
    (["recommend", "--fits", "dir", "--target-loss", "3", "--context", "8K"], INPUT, "--fits: 'dir' is a directory"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--calibration", "trunc.json"], INPUT,
     "--calibration: trunc.json is not valid JSON"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--toml-out", "dir"], INPUT,
     "--toml-out: 'dir' is a directory"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--fits-out", "missing/f.json"],
     INPUT, "--fits-out: no directory 'missing'"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--spec-out", "s.toml"], INPUT,
     "--spec-out: needs --recipe-from"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--spec-out", "s.toml",
      "--recipe-from", "fifo", "--train-seed", "1"], INPUT, "--recipe-from: 'fifo' is not a regular file"),
    (["recommend", "--db", "db.duckdb", "--target-loss", "3", "--context", "8K", "--families", "gqa,moe"], INPUT,
     "--families: unknown family 'moe'"),
    (["recommend", "--db", "db.duckdb", "--fits", "fits.json", "--target-loss", "3", "--context", "8K"], USAGE,
     "not allowed with"),
    (["recommend", "--target-loss", "3", "--context", "8K"], USAGE, "--db --fits is required"),
    # validate
    (["validate", "--db", "db.duckdb", "--level", "0"], INPUT, "--level: must be a probability"),
    (["validate", "--db", "db.duckdb", "--bootstrap", "1"], INPUT, "--bootstrap: one resample"),
    (["validate", "--db", "fifo"], INPUT, "--db: 'fifo' is not a regular file"),
    (["validate", "--db", "missing.duckdb"], INPUT, "--db: no such results file"),
    (["validate", "--db", "db.duckdb", "--families", "moe"], INPUT, "--families: unknown family 'moe'"),
    (["validate", "--db", "db.duckdb", "--figure", "missing/cv.png"], INPUT, "--figure: no directory 'missing'"),
    (["validate", "--db", "db.duckdb", "--mode", "every"], USAGE, "invalid choice: 'every'"),
    # frontier
    (["frontier", "--db", "db.duckdb", "--context", "0"], INPUT, "--context: must be >= 1"),
    (["frontier", "--db", "db.duckdb", "--context", "1e400"], INPUT, "--context: '1e400' is not a finite"),
    (["frontier", "--db", "db.duckdb", "--context", "8K", "--dtype", "fp7"], INPUT, "--dtype: unknown dtype"),
    (["frontier", "--db", "db.duckdb", "--context", "8K", "--plot", "dir"], INPUT, "--plot: 'dir' is a directory"),
    (["frontier", "--db", "db.duckdb", "--context", "8K", "--plot", "missing/f.png"], INPUT, "--plot: no directory"),
    (["frontier", "--db", "dir", "--context", "8K"], INPUT, "--db: 'dir' is a directory"),
    (["frontier", "--db", "db.duckdb"], USAGE, "--context"),
    # report
    (["report", "--db", "db.duckdb", "--out", "file.txt"], INPUT, "--out: 'file.txt' is a file"),
    (["report", "--db", "db.duckdb", "--out", "missing/report"], INPUT, "--out: no directory 'missing'"),
    (["report", "--db", "fifo", "--out", "rep"], INPUT, "--db: 'fifo' is not a regular file"),
    (["report", "--db", "db.duckdb", "--out", "rep", "--fits", "fifo"], INPUT, "--fits: 'fifo' is not a regular"),
    (["report", "--db", "db.duckdb", "--out", "rep", "--context", "0"], INPUT, "--context: must be >= 1"),
    (["report", "--db", "db.duckdb", "--out", "rep", "--level", "2"], INPUT, "--level: must be a probability"),
    (["report", "--db", "db.duckdb", "--out", "rep", "--refit", "--fits", "fits.json"], INPUT, "--refit: refits"),
    (["report", "--db", "db.duckdb", "--out", "rep", "--dtype", "fp7"], INPUT, "--dtype: unknown dtype"),
    # kv-eval
    (["kv-eval", "missing", "--root", "out"], INPUT, "BASE_RUN_DIR: no such directory 'missing'"),
    (["kv-eval", "file.txt", "--root", "out"], INPUT, "BASE_RUN_DIR: 'file.txt' is not a directory"),
    (["kv-eval", "dir", "--root", "out"], INPUT, "BASE_RUN_DIR: 'dir' is not a run directory"),
    (["kv-eval", "dir", "--root", "file.txt"], INPUT, "--root: 'file.txt' is a file"),
    (["kv-eval", "dir", "--root", "missing/out"], INPUT, "--root: no directory 'missing'"),
    (["kv-eval", "dir", "--root", "out", "--keep", "0"], INPUT, "--keep: 0.0 is not a keep ratio"),
    (["kv-eval", "dir", "--root", "out", "--keep", "nan"], INPUT, "--keep: nan is not a keep ratio"),
    (["kv-eval", "dir", "--root", "out", "--keep", "2"], INPUT, "--keep: 2.0 is not a keep ratio"),
    (["kv-eval", "dir", "--root", "out", "--keep", "a,b"], INPUT, "--keep: 'a,b' is not a comma-separated list"),
    (["kv-eval", "dir", "--root", "out", "--keep", ","], INPUT, "--keep: empty"),
    (["kv-eval", "dir", "--root", "out", "--policies", "nope"], INPUT, "--policies: 'nope' is not a policy"),
    (["kv-eval", "dir", "--root", "out", "--policy-run", "locret"], INPUT, "--policy-run: 'locret' is not"),
    # calibrate
    (["calibrate", "fifo", "--out", "cal"], INPUT, "measurements: 'fifo' is not a regular file"),
    (["calibrate", "bin.json", "--out", "cal"], INPUT, "measurements: 'bin.json' is not a text file"),
    (["calibrate", "trunc.json", "--out", "cal"], INPUT, "measurements: trunc.json is not valid JSON"),
    (["calibrate", "list.json", "--out", "cal"], INPUT, "measurements: the document must be a JSON object"),
    (["calibrate", "dir", "--out", "cal"], INPUT, "measurements: 'dir' is a directory"),
    (["calibrate", "missing.json", "--out", "cal"], INPUT, "measurements: no such file"),
    (["calibrate", "measurements.json", "--out", "file.txt"], INPUT, "--out: 'file.txt' is a file"),
    (["calibrate", "measurements.json", "--out", "missing/cal"], INPUT, "--out: no directory 'missing'"),
    (["calibrate", "measurements.json", "--out", "cal", "--gpu", "TPU"], INPUT, "--gpu: unknown GPU"),
    # compare-hybrid
    (["compare-hybrid", "--db", "fifo", "--out", "hyb"], INPUT, "--db: 'fifo' is not a regular file"),
    (["compare-hybrid", "--db", "missing.duckdb", "--out", "hyb"], INPUT, "--db: no such results file"),
    (["compare-hybrid", "--db", "dir", "--out", "hyb"], INPUT, "--db: 'dir' is a directory"),
    (["compare-hybrid", "--db", "db.duckdb", "--out", "file.txt"], INPUT, "--out: 'file.txt' is a file"),
    (["compare-hybrid", "--db", "db.duckdb", "--out", "missing/hyb"], INPUT, "--out: no directory 'missing'"),
    # export
    (["export", "missing", "--hf", "hf"], INPUT, "run_dir: 'missing' is not a completed run directory"),
    (["export", "file.txt", "--hf", "hf"], INPUT, "run_dir: 'file.txt' is not a completed run directory"),
    (["export", "fifo", "--hf", "hf"], INPUT, "run_dir: 'fifo' is not a completed run directory"),
    (["export", "dir", "--hf", "hf"], INPUT, "run_dir: 'dir' is not a completed run directory"),
    (["export", "dir", "--hf", "file.txt"], INPUT, "--hf: 'file.txt' is a file"),
    (["export", "dir", "--hf", "missing/hf"], INPUT, "--hf: no directory 'missing'"),
    (["export", "dir", "--hf", "hf", "--dtype", "fp7"], INPUT, "--dtype: 'fp7' is not one of"),
    (["export", "dir"], USAGE, "--hf"),
]


@pytest.mark.parametrize("argv, code, field", CASES, ids=[" ".join(c[0])[:70] or "(no verb)" for c in CASES])
def test_malformed_input(ws, argv, code, field):
    check(ws, argv, code, field)


# ---------------------------------------------------------------- cases generated from the parsers
# a valid command line per verb and subcommand, to which one bad flag is added
BASE = {
    ("quickstart",): ["--root", "qs"],
    ("cost",): ["--preset", "gqa-19m"],
    ("run",): ["run.toml", "--root", "out"],
    ("data", "prepare"): ["--source", "dir"],
    ("data", "fetch-gpt2"): ["--dest", "gpt2.tiktoken"],
    ("data", "list"): [],
    ("sweep", "plan"): ["spec.toml"],
    ("sweep", "submit"): ["spec.toml", "--executor", "debug", "--root", "out"],
    ("sweep", "status"): ["--root", "out"],
    ("sweep", "resubmit"): ["--root", "out", "--failed"],
    ("ingest",): ["--root", "dir", "--db", "new.duckdb"],
    ("query",): ["--db", "db.duckdb", "select 1"],
    ("fit",): ["--data", "runs.csv", "--law", "gqa-size", "--x", "N"],
    ("isoflop",): ["--db", "db.duckdb"],
    ("recommend",): ["--db", "db.duckdb", "--target-loss", "3", "--context", "8K"],
    ("validate",): ["--db", "db.duckdb"],
    ("frontier",): ["--db", "db.duckdb", "--context", "8K"],
    ("report",): ["--db", "db.duckdb", "--out", "rep"],
    ("kv-eval",): ["dir", "--root", "out"],
    ("calibrate",): ["measurements.json", "--out", "cal"],
    ("compare-hybrid",): ["--db", "db.duckdb", "--out", "hyb"],
    ("export",): ["dir", "--hf", "hf"],
}


def parsers() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every verb's parser, and each subcommand's, as `costlaw.cli` builds them."""
    out = {}
    for verb in VERBS:
        module = importlib.import_module(f"costlaw.cmd_{verb.replace('-', '_')}")
        p = OneLineParser(prog=f"costlaw {verb}")
        module.add_arguments(p)
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if subs:
            out.update({(verb, name): sp for name, sp in subs[0].choices.items()})
        else:
            out[(verb,)] = p
    return out


PARSERS = parsers()


def _flag(a: argparse.Action) -> str:
    return [o for o in a.option_strings if o.startswith("--")][0]


def _visible(p):
    return [a for a in p._actions if a.option_strings and a.help != argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction)]


def _takes_text(a: argparse.Action) -> bool:
    return (a.type is None and a.choices is None and a.nargs in (None, "?")
            and not isinstance(a, (argparse._StoreConstAction, argparse._StoreTrueAction, argparse._CountAction,
                                   argparse._AppendConstAction)))


def _excluded_by(p, a, argv) -> bool:
    """Whether `a` shares a mutually exclusive group with a flag `argv` already gives (--fits with --db)."""
    return any(a in g._group_actions and any(_flag(b) in argv for b in g._group_actions if b is not a)
               for g in p._mutually_exclusive_groups)


def generated() -> list:
    cases = []
    for key, p in PARSERS.items():
        base = [*key, *BASE[key]]
        cases.append((base + ["--no-such-flag"], USAGE, "unrecognized arguments: --no-such-flag"))
        for a in _visible(p):
            flag = _flag(a)
            if _excluded_by(p, a, base):
                continue
            if a.type is float:
                cases += [(base + [f"{flag}={v}"], INPUT, f"{flag}: must be a finite number") for v in
                          ("inf", "nan", "1e400", "-inf")]
            lo, hi, above = getattr(a, "costlaw_range", (None, None, False))
            if lo is not None:
                below = lo if above else (lo - 1 if a.type is int else lo - 0.5)
                cases.append((base + [f"{flag}={below}"], INPUT, f"{flag}: must be {'>' if above else '>='} "))
            if hi is not None:
                over = int(hi) + 1 if a.type is int else hi * 2
                cases.append((base + [f"{flag}={over}"], INPUT, f"{flag}: must be <= "))
            if _takes_text(a):
                cases.append((base + [f"{flag}="], INPUT, f"{flag}: empty"))
            if a.type in (int, float):
                cases.append((base + [f"{flag}=many"], USAGE, f"argument {flag}: invalid"))
    return cases


GENERATED = generated()


@pytest.mark.parametrize("argv, code, field", GENERATED, ids=[" ".join(c[0])[:90] for c in GENERATED])
def test_generated_malformed_flags(ws, argv, code, field):
    check(ws, argv, code, field)


def test_the_suite_covers_every_verb_and_subcommand_with_180_cases_or_more():
    assert set(BASE) == set(PARSERS), "a verb or subcommand without a base command line in BASE"
    tried = {tuple(argv[:2]) if tuple(argv[:2]) in PARSERS else tuple(argv[:1]) for argv, _, _ in CASES + GENERATED}
    assert set(PARSERS) <= tried
    by_hand = {key: sum(1 for argv, _, _ in CASES if argv[:len(key)] == list(key)) for key in PARSERS}
    assert all(n >= 1 for n in by_hand.values()), by_hand
    assert len(CASES) >= 180 and len(GENERATED) >= 180, (len(CASES), len(GENERATED))


# ---------------------------------------------------------------- the old spellings
@pytest.mark.parametrize("argv, old, new", [
    (["run", "run.toml", "--out", "file.txt"], "--out", "--root"),
    (["kv-eval", "dir", "--out", "file.txt"], "--out", "--root"),
    (["quickstart", "--out", "file.txt"], "--out", "--root"),
])
def test_old_spelling_of_the_results_root_still_works_with_a_note(ws, argv, old, new):
    before = _listing(ws)
    rc, _, err = run_cli(argv)
    lines = err.strip().splitlines()
    assert rc == INPUT and len(lines) == 2 and "Traceback" not in err, err
    assert lines[0] == f"costlaw {argv[0]}: note: {old} is now {new}; {old} still works for now"
    assert lines[1].startswith(f"costlaw {argv[0]}: error: --root: 'file.txt' is a file"), lines[1]
    assert _listing(ws) == before


def test_old_wait_flag_of_sweep_submit_still_works_with_a_note(ws):
    rc, _, err = run_cli(["sweep", "submit", "spec.toml", "--executor", "debug", "--root", "file.txt", "--wait"])
    lines = err.strip().splitlines()
    assert rc == INPUT and lines[0] == ("costlaw sweep submit: note: --wait is now --wait-jobs; --wait still works "
                                        "for now")
    assert len(lines) == 2 and "--root: 'file.txt' is a file" in lines[1]


# ---------------------------------------------------------------- faults: FIFOs, huge numbers, the real entry point
@pytest.mark.parametrize("argv", [
    ["sweep", "plan", "fifo"], ["run", "fifo", "--root", "out"], ["cost", "--config", "fifo"],
    ["query", "--db", "fifo", "select 1"], ["recommend", "--fits", "fifo", "--target-loss", "3", "--context", "8K"],
    ["fit", "--data", "fifo", "--law", "gqa-size"], ["calibrate", "fifo", "--out", "cal"],
])
def test_a_fifo_given_as_a_file_does_not_hang_the_console_entry(ws, argv):
    """Through `python -m costlaw`, with a deadline: opening a FIFO for reading would block until a writer came."""
    before = _listing(ws)
    p = subprocess.run([sys.executable, "-m", "costlaw", *argv], capture_output=True, text=True, timeout=120,
                       cwd=ws, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == INPUT and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1 and "'fifo' is not a regular file" in p.stderr, p.stderr
    assert _listing(ws) == before


@pytest.mark.parametrize("argv, field", [
    (["kv-eval", "dir", "--root", "out", "--samples", "9" * 40], "--samples: must be <= "),
    (["recommend", "--db", "db.duckdb", "--target-loss", "9" * 400, "--context", "8K"], "--target-loss: must be a "
                                                                                        "finite number"),
    (["fit", "--data", "runs.csv", "--law", "gqa-size", "--x", "N", "--seed", "9" * 40], "--seed: must be <= "),
    (["cost", "--preset", "gqa-19m", "--context", "9" * 400], "--context:"),
    (["isoflop", "--db", "db.duckdb", "--budgets", "1e15," + "9" * 400], "--budgets:"),
    (["sweep", "status", "--root", "dir", "--lines", "9" * 30], "--lines: must be <= "),
])
def test_huge_numbers_are_refused_in_one_line(ws, argv, field):
    check(ws, argv, INPUT, field)


def test_paths_with_spaces_and_non_ascii_names_are_quoted_in_the_line(ws):
    line = check(ws, ["sweep", "plan", "with space/run config.toml"], INPUT, "spec:")
    assert "'with space/run config.toml' is not a text file" in line
    line = check(ws, ["fit", "--data", "données/runs.csv", "--law", "gqa-size"], INPUT, "--data:")
    assert "'données/runs.csv'" in line


def test_an_ingest_that_is_refused_leaves_no_database_or_lock(ws):
    """The results file and its lock are created only once every input was accepted."""
    check(ws, ["ingest", "--root", "missing", "--db", "results.duckdb"], INPUT, "--root:")
    assert not any(p.name.startswith("results.duckdb") for p in ws.iterdir())
