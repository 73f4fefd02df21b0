"""What ingest accepts as written (docs/run-directory.md, "Accepted as written"), and the same values whichever
metrics reader (the bulk polars one, or Python's line by line) reads a file."""

import json

import polars as pl
import pytest

from costlaw.analysis.store import query_df, rundirs
from costlaw.costmodel.core.exitcodes import OK
from costlaw.costmodel.core.rundir import run_id_of
from tests.analysis.test_store_bad_runs import (
    GOOD,
    _ingest,
    _root,
    append,
    config,
    put,
    remove,
    template,  # noqa: F401 -- the fixture the tests below use
)

VICTIM = run_id_of(config(7))


def line(text: str):
    return append("metrics.jsonl", text.encode() + b"\n")


def crlf(d):
    p = d / "metrics.jsonl"
    p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))


def status(s: str, steps: int | None = None):
    def edit(d):
        for name in ("summary.json", "DONE"):
            doc = json.loads((d / name).read_text())
            doc["status"] = s
            if name == "summary.json" and steps is not None:
                doc["steps"] = steps
            (d / name).write_text(json.dumps(doc))
    return edit


def both(*edits):
    def edit(d):
        for e in edits:
            e(d)
    return edit


# name -> (edit, SQL on the victim's rows, expected rows)
STEP21 = f"SELECT * EXCLUDE (run_id) FROM steps WHERE run_id = '{VICTIM}' AND step = 21"
RUN = f"SELECT * FROM runs WHERE run_id = '{VICTIM}'"
ACCEPTED = {
    "nan_loss_is_null": (line('{"step": 21, "loss": NaN}'), STEP21, {"step": 21, "loss": None}),
    "infinity_lr_is_null": (line('{"step": 21, "lr": Infinity}'), STEP21, {"lr": None}),
    "minus_infinity_grad_is_null": (line('{"step": 21, "grad_norm": -Infinity}'), STEP21, {"grad_norm": None}),
    "minus_zero": (line('{"step": 21, "tokens": -0, "loss": -0.0}'), STEP21, {"tokens": 0, "loss": 0.0}),
    "whole_float_step": (line('{"step": 21.0, "tokens": 2688.0}'), STEP21, {"step": 21, "tokens": 2688}),
    "repeated_key_first_wins": (line('{"step": 21, "loss": 1.5, "loss": 9.0}'), STEP21, {"loss": 1.5}),
    "surrogate_in_ignored_key": (line('{"step": 21, "note": "\\ud800"}'), STEP21, {"step": 21}),
    "out_of_range_in_ignored_key": (line('{"step": 21, "note": 1e400, "n": ' + "9" * 400 + "}"), STEP21, {"step": 21}),
    "underflow_is_zero": (line('{"step": 21, "loss": 1e-400}'), STEP21, {"loss": 0.0}),
    "big_whole_lr_is_a_float": (line('{"step": 21, "lr": 1000000000000000000000000000000}'), STEP21, {"lr": 1e30}),
    "largest_float": (line('{"step": 21, "loss": 1.7976931348623157e308}'), STEP21, {"loss": 1.7976931348623157e308}),
    "crlf_lines": (crlf, f"SELECT count(*) AS n FROM steps WHERE run_id = '{VICTIM}'", {"n": 20}),
    "summary_nan_loss_is_null": (put("summary.json", "final_loss", "NaN"), RUN, {"final_loss": None}),
    "summary_infinite_mfu_is_null": (put("summary.json", "mfu", "Infinity"), RUN, {"mfu": None}),
    "summary_unknown_keys_kept": (put("summary.json", "extra", '{"deep": [1, 2]}'),
                                  f"SELECT summary_json->>'$.extra.deep[1]' AS x FROM runs WHERE run_id = '{VICTIM}'",
                                  {"x": "2"}),
    "slurm_id_as_number": (put("summary.json", "env.slurm_job_id", "123456"), RUN, {"slurm_job_id": "123456"}),
    "evaluation_run_without_metrics": (both(status("completed", steps=0), remove("metrics.jsonl")), RUN,
                                       {"n_steps": 0, "status": "completed"}),
    "failed_run_without_metrics": (both(status("failed"), remove("metrics.jsonl")), RUN,
                                   {"n_steps": 0, "status": "failed"}),
    "diverged_run_with_empty_metrics": (both(status("diverged"), lambda d: (d / "metrics.jsonl").write_bytes(b"")),
                                        RUN, {"n_steps": 0, "status": "diverged"}),
    "no_evals_file": (remove("evals.jsonl"), RUN, {"n_evals": 0}),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_accepted_as_written(case, template, tmp_path, cli):  # noqa: F811
    edit, sql, expect = ACCEPTED[case]
    root, d = _root(template, tmp_path)
    edit(d)
    db = tmp_path / "r.duckdb"
    rc, rep = _ingest(cli, root, db)
    assert rc == OK and not rep["corrupt"], rep["corrupt"]
    assert sorted(rep["ingested"]) == sorted([*GOOD, VICTIM])
    [row] = query_df(db, sql).rows(named=True)
    assert {k: row[k] for k in expect} == expect


def test_good_runs_untouched_by_an_accepted_neighbour(template, tmp_path, cli):  # noqa: F811
    root, d = _root(template, tmp_path)
    line('{"step": 21, "loss": NaN}')(d)
    db = tmp_path / "r.duckdb"
    rc, rep = _ingest(cli, root, db)
    assert rc == OK
    assert query_df(db, f"SELECT count(*) AS n FROM steps WHERE run_id IN ('{GOOD[0]}', '{GOOD[1]}')")["n"][0] == 40
    assert not query_df(db, "SELECT * FROM steps WHERE run_id <> '" + VICTIM + "' AND loss IS NULL").height


# metrics texts both readers accept: they must read the same values
SAME = {
    "plain": b'{"step": 1, "tokens": 128, "loss": 3.5, "lr": 0.001, "grad_norm": 1.0, "tokens_per_s": 5e4}\n',
    "repeated_key": b'{"step": 1, "loss": 1.5, "loss": 9.0}\n{"step": 2, "step": 3}\n',
    "surrogates_ignored": b'{"step": 1, "note": "\\ud800", "\\udc00": 1}\n',
    "minus_zero": b'{"step": -0, "tokens": -0, "loss": -0.0}\n',
    "underflow": b'{"step": 1, "loss": 1e-400, "lr": 5e-324}\n',
    "big_whole_float_column": b'{"step": 1, "lr": 1000000000000000000000000000000}\n',
    "largest": b'{"step": 9223372036854775807, "tokens": -9223372036854775808, "loss": 1.7976931348623157e308}\n',
    "crlf_and_blank_lines": b'{"step": 1}\r\n\r\n  \n{"step": 2, "loss": 2.5}\r\n',
    "nulls": b'{"step": 1, "tokens": null, "loss": null}\n',
    "no_trailing_newline": b'{"step": 1}\n{"step": 2}',
    "extra_nested_keys": b'{"step": 1, "x": {"y": [1, {"z": null}]}, "loss": 2.0}\n',
}


@pytest.mark.parametrize("case", sorted(SAME))
def test_bulk_and_line_by_line_readers_agree(case, monkeypatch):
    data = SAME[case]
    data = data if data.endswith(b"\n") else data + b"\n"  # as rundirs._read hands it over
    fast = rundirs._steps_one(data)

    def refuse(*a, **k):
        raise pl.exceptions.ComputeError("forced onto the line-by-line path")

    monkeypatch.setattr(rundirs.pl, "read_ndjson", refuse)
    slow = rundirs._steps_one(data)
    assert fast.height > 0 and fast.equals(slow), (fast, slow)
