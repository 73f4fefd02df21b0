"""The command line as a whole (issue 22): exit codes that mean something, one name per flag meaning, --json on
every verb, tables that fit the terminal, warnings and notes without source locations."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import costlaw.cmd_cost
from costlaw.cli import VERBS, main
from costlaw.costmodel.core import exitcodes
from costlaw.costmodel.core.errors import ConfigError
from costlaw.options import DEFAULT_BOOTSTRAP

from .test_bad_input import PARSERS

REPO = Path(__file__).resolve().parents[2]
DB = REPO / "studies" / "pilot" / "results.duckdb"


def cli(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------- exit codes
def test_help_prints_the_exit_code_table_and_only_what_exists(capsys):
    rc, out, err = cli(capsys, "--help")
    assert rc == exitcodes.OK and err == ""
    for code, what in exitcodes.TABLE:
        assert re.search(rf"^ +{code}  {re.escape(what)}$", out, re.M), (code, out)
    listed = re.findall(r"^  (\S+)  ", out[out.index("verbs:"):out.index("flags that")], re.M)
    assert listed == list(VERBS)
    subs = re.findall(r"^    (\S+) (\S+)  ", out, re.M)
    assert set(subs) == {k for k in PARSERS if len(k) == 2}  # each listed subcommand is its parser's own


@pytest.mark.parametrize("argv, line", [
    ([], "costlaw: error: give a verb"),
    (["nope"], "costlaw: error: unknown verb 'nope'"),
    (["cost", "--no-such-flag"], "costlaw cost: error: unrecognized arguments: --no-such-flag"),
    (["sweep", "submit", "x.toml"], "costlaw sweep submit: error: the following arguments are required: --executor"),
    (["fit", "--bootstrap", "many"], "costlaw fit: error: argument --bootstrap: invalid int value: 'many'"),
])
def test_usage_errors_are_one_line_with_the_usage_code(capsys, argv, line):
    rc, out, err = cli(capsys, *argv)
    assert rc == exitcodes.USAGE == 64 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(line), err


def test_input_interrupt_and_internal_errors_have_their_own_codes(capsys, monkeypatch):
    def raises(exc):
        def fake_main(args):
            raise exc
        return fake_main

    monkeypatch.setattr(costlaw.cmd_cost, "main", raises(ConfigError("--gpu", "unknown GPU 'X'; choose one")))
    rc, out, err = cli(capsys, "cost")
    assert rc == exitcodes.INPUT and err == "costlaw cost: error: --gpu: unknown GPU 'X'; choose one\n"

    monkeypatch.setattr(costlaw.cmd_cost, "main", raises(KeyboardInterrupt()))
    rc, out, err = cli(capsys, "cost")
    assert rc == exitcodes.INTERRUPTED and err == "costlaw cost: interrupted\n"

    monkeypatch.setattr(costlaw.cmd_cost, "main", raises(PermissionError(13, "Permission denied", "/x/y")))
    rc, out, err = cli(capsys, "cost")
    assert rc == exitcodes.INPUT and err.startswith("costlaw cost: error: /x/y: Permission denied; check the path")

    monkeypatch.setattr(costlaw.cmd_cost, "main", raises(ZeroDivisionError("division by zero")))
    rc, out, err = cli(capsys, "cost")
    lines = err.strip().splitlines()
    assert rc == exitcodes.INTERNAL and lines[0] == "Traceback (most recent call last):"
    assert "ZeroDivisionError: division by zero" in err
    assert lines[-1] == ("costlaw cost: internal error (ZeroDivisionError); this is a bug in costlaw: please report it "
                         "with the command line and the traceback above")


def test_sweep_submit_json_says_what_was_done_and_its_exit_code(tmp_path, capsys):
    """submit --json is one object whose "exit" is the process's exit code (FAILED when a run failed, as
    test_status_view checks; OK here, where the one run asked for completes)."""
    root = tmp_path / "root"
    rc, out, err = cli(capsys, "sweep", "submit", REPO / "sweeps" / "examples" / "tiny.toml", "--executor", "debug",
                       "--root", root, "--json", "--where", "model.n_kv_heads == 1", "--device", "cpu")
    doc = json.loads(out)
    assert rc == doc["exit"] == exitcodes.OK, err
    assert doc["executor"] == "debug" and doc["root"] == str(root.resolve()) and doc["submitted"] == 1
    assert doc["counts"]["completed"] == 1 and doc["outcome"] == {"completed": 1}


def test_warnings_print_without_their_source_location():
    """A library's warning reaches the user as `costlaw VERB: warning: ...`, not as `/path/file.py:123: ...`."""
    code = ("import warnings, costlaw.cmd_cost as c\n"
            "def fake(args):\n"
            "    warnings.warn('the fit did not converge', RuntimeWarning)\n"
            "    return 0\n"
            "c.main = fake\n"
            "from costlaw.cli import main\n"
            "raise SystemExit(main(['cost']))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stderr == "costlaw cost: warning: the fit did not converge\n", p.stderr


# ---------------------------------------------------------------- one name, one meaning
def test_every_verb_and_subcommand_has_json():
    for key, p in PARSERS.items():
        assert any("--json" in a.option_strings for a in p._actions), f"costlaw {' '.join(key)} has no --json"


def test_results_roots_are_root_and_the_old_spelling_is_hidden(capsys):
    for key in (("run",), ("kv-eval",), ("quickstart",), ("sweep", "submit"), ("sweep", "status"),
                ("sweep", "resubmit"), ("ingest",)):
        p = PARSERS[key]
        flags = {o: a for a in p._actions for o in a.option_strings}
        assert flags["--root"].help != argparse.SUPPRESS, key
        assert "--out" not in flags or flags["--out"].help == argparse.SUPPRESS, key
        assert "--out" not in p.format_help(), key
    for key in (("report",), ("calibrate",), ("compare-hybrid",), ("query",), ("fit",)):
        assert "--out" in PARSERS[key].format_help() and "--root" not in PARSERS[key].format_help(), key


def test_wait_is_seconds_everywhere_and_sweep_waits_for_jobs_by_another_name():
    for key, p in PARSERS.items():
        for a in p._actions:
            if "--wait" in a.option_strings and a.help != argparse.SUPPRESS:
                assert a.type is float and a.metavar == "SECONDS", key
    assert "--wait-jobs" in PARSERS[("sweep", "submit")].format_help()
    assert "--wait-jobs" in PARSERS[("sweep", "resubmit")].format_help()


def test_one_bootstrap_default():
    seen = []
    for key, p in PARSERS.items():
        for a in p._actions:
            if "--bootstrap" in a.option_strings:
                seen.append(key[0])
                # fit resolves a missing --bootstrap itself (none with --eval-at); its help states the same default
                assert a.default == DEFAULT_BOOTSTRAP or (key == ("fit",) and a.default is None), key
                assert f"default {DEFAULT_BOOTSTRAP}" in a.help, key
    assert set(seen) == {"quickstart", "fit", "isoflop", "recommend", "validate", "report"}


def test_where_is_one_language_in_fit_and_sweep(capsys):
    """The same grammar refuses the same thing with the same words in both verbs."""
    _, _, sweep = cli(capsys, "sweep", "plan", REPO / "sweeps" / "examples" / "tiny.toml", "--where", "N >")
    _, _, fit = cli(capsys, "fit", "--data", REPO / "studies" / "calibration" / "measurements.csv", "--law",
                    "linear", "--where", "N >")
    assert sweep.split("error: ")[1] == fit.split("error: ")[1] == ("--where: 'N >' does not parse (invalid "
                                                                    "syntax); write an expression like \"A/N**alpha "
                                                                    "+ E\"\n")
    assert "costmodel/core/expr.py" in PARSERS[("sweep", "plan")].format_help().replace("\n", " ")
    assert "costmodel/core/expr.py" in PARSERS[("fit",)].epilog


# ---------------------------------------------------------------- output
def test_tables_fit_the_terminal_and_wide_shows_every_column(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    rc, out, _ = cli(capsys, "query", "--db", DB, "select * from runs limit 3")
    assert rc == 0 and max(map(len, out.splitlines())) <= 100
    assert re.search(r"^\(\d+ more columns(: .*)?; --wide shows every column\)$", out, re.M), out
    rc, wide, _ = cli(capsys, "query", "--db", DB, "select * from runs limit 3", "--wide")
    assert rc == 0 and max(map(len, wide.splitlines())) > 600 and "more columns" not in wide
    rc, plan, _ = cli(capsys, "sweep", "plan", REPO / "sweeps" / "examples" / "gqa_ladder.toml")
    rows = [line for line in plan.splitlines() if re.match(r"(run_id|[0-9a-f]{16}|-+ ) ", line)]
    assert rc == 0 and len(rows) == 22 and max(map(len, rows)) <= 100, plan
    assert " E" in plan and "e+0" not in plan  # exa-FLOPs, not 1.15e+03 P
    monkeypatch.delenv("COLUMNS")
    rc, piped, _ = cli(capsys, "query", "--db", DB, "select * from runs limit 3")  # not a terminal: every column
    assert piped == wide


def test_query_json_is_format_json(capsys):
    rc, out, _ = cli(capsys, "query", "--db", DB, "select 1 as one, NULL as nothing", "--json")
    assert rc == 0 and json.loads(out) == [{"one": 1, "nothing": None}]
    rc, listed, _ = cli(capsys, "query", "--db", DB, "--list", "--json")
    assert rc == 0 and {"runs", "run_summary"} <= {o["name"] for o in json.loads(listed)}


def test_human_output_has_no_none(capsys):
    rc, out, _ = cli(capsys, "query", "--db", DB, "select 1 as one, NULL as nothing")
    assert rc == 0 and "None" not in out and out.splitlines()[-1].split() == ["1", "-"]


def test_data_prepare_says_when_it_reuses_the_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COSTLAW_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.py", "b.py", "c.py"):
        shutil.copy(REPO / "costmodel" / "core" / "errors.py", src / name)
        (src / name).write_text((src / name).read_text() + f"\n# {name}\n")
    rc, out, err = cli(capsys, "data", "prepare", "--source", src, "--json")
    assert rc == 0 and json.loads(out)["reused"] is False and "reusing" not in err
    rc, out, err = cli(capsys, "data", "prepare", "--source", src, "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["reused"] is True
    assert err == (f"costlaw data: note: reusing the corpus already prepared in the cache at {doc['path']} (same "
                   "files, tokenizer and document rules); delete that directory to prepare it again\n")


def test_help_names_only_flags_that_exist():
    """Every `costlaw VERB [ACTION] ... --flag` a help text shows (examples, epilogs, the verb list) names a flag that
    verb has, so a renamed flag leaves no stale example behind."""
    import importlib

    from costlaw.cli import OneLineParser, _usage

    def flags(p):
        return {o for a in p._actions for o in a.option_strings if a.help != argparse.SUPPRESS} | {"--help"}

    texts = [p.format_help() for p in PARSERS.values()] + [_usage()]
    for verb in ("sweep", "data"):
        p = OneLineParser(prog=f"costlaw {verb}")
        importlib.import_module(f"costlaw.cmd_{verb}").add_arguments(p)
        texts.append(p.format_help())
    named = 0
    for text in texts:
        for line in text.splitlines():
            for m in re.finditer(r"costlaw ([a-z-]+)(?: ([a-z0-9-]+))?((?:(?!costlaw ).)*)", line):
                verb, action, rest = m.groups()
                key = (verb, action) if (verb, action) in PARSERS else (verb,)
                if key not in PARSERS:
                    continue
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                    named += 1
                    assert flag in flags(PARSERS[key]), f"help shows `costlaw {' '.join(key)} ... {flag}`: {line}"
    assert named > 50
