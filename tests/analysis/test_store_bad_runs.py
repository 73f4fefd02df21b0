"""One bad run among good ones: the good ones ingest, the bad one is reported with its file, key and problem,
nothing raises, and `costlaw ingest` exits 1 (corrupt: exitcodes.FAILED) or 0 (incomplete, or accepted).

Each case edits a finished run directory written by the contract's own writers (tests/support/synth_runs.py);
the same cases are then ingested all at once, so one batch holds every kind of bad file.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from costlaw.analysis.store import query_df
from costlaw.costmodel import preset
from costlaw.costmodel.core.exitcodes import FAILED, OK
from costlaw.costmodel.core.rundir import run_id_of
from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from tests.support.synth_runs import standard_evals, write_run

STEPS = 20  # the victim's metrics.jsonl has 20 lines: an appended line is line 21
EVAL_LINES = len(standard_evals(64))  # an appended eval line is this + 1
HUGE = 10**30
FLOAT_BEYOND = "1" + "0" * 400  # a whole number no float can hold


def config(seed: int) -> dict:
    m = preset("gqa-3m", vocab_size=257).replace(d_model=128, n_heads=4, n_kv_heads=2)
    return RunConfig(model=m, data=DataConfig(seq_len=64), train=TrainConfig(steps=STEPS, batch_size=2),
                     eval=EvalConfig(contexts=(64,)), seed=seed, name=f"s{seed}").to_dict()


# ---------------------------------------------------------------- edits
def _json_with(text: str, dotted: str, literal: str) -> str:
    """`text` (a JSON object) with the value at `dotted` replaced by the raw `literal`."""
    doc = json.loads(text)
    *parents, last = dotted.split(".")
    node = doc
    for k in parents:
        node = node.setdefault(k, {})
    node[last] = "__RAW__"
    return json.dumps(doc).replace('"__RAW__"', literal)


def put(name: str, dotted: str, literal: str):
    """Set a key of config.json / summary.json / DONE to a raw JSON literal."""
    def edit(d: Path):
        (d / name).write_text(_json_with((d / name).read_text(), dotted, literal))
    return edit


def append(name: str, data: bytes):
    def edit(d: Path):
        with open(d / name, "ab") as f:
            f.write(data)
    return edit


def replace(name: str, data: bytes):
    def edit(d: Path):
        (d / name).write_bytes(data)
    return edit


def prepend(name: str, data: bytes):
    def edit(d: Path):
        (d / name).write_bytes(data + (d / name).read_bytes())
    return edit


def remove(name: str):
    def edit(d: Path):
        (d / name).unlink()
    return edit


def as_directory(name: str):
    def edit(d: Path):
        (d / name).unlink()
        (d / name).mkdir()
        (d / name / "inside.json").write_text("{}")
    return edit


def as_fifo(name: str):
    def edit(d: Path):
        (d / name).unlink()
        os.mkfifo(d / name)  # nobody ever writes to it: reading it would block forever
    return edit


def as_link(name: str, target: str):
    def edit(d: Path):
        (d / name).unlink()
        os.symlink(target, d / name)
    return edit


def sparse(name: str, size: int):
    def edit(d: Path):
        with open(d / name, "r+b") as f:
            f.truncate(size)
    return edit


def deep(n: int = 100_000) -> bytes:
    return b"[" * n + b"]" * n


def rehashed(dotted: str, literal: str):
    """Set a key inside config.json's config, then give the run the id of its new config (file, summary, DONE
    and directory name), so that the value itself is what the ingest meets."""
    def edit(d: Path):
        doc = json.loads(_json_with((d / "config.json").read_text(), dotted, literal))
        old, new = doc["run_id"], run_id_of(doc["config"])
        doc["run_id"] = new
        (d / "config.json").write_text(json.dumps(doc))
        for name in ("summary.json", "DONE"):
            (d / name).write_text((d / name).read_text().replace(old, new))
        return d.rename(d.parent / new)
    return edit


def renamed(new_name: str):
    def edit(d: Path):
        return d.rename(d.parent / new_name)
    return edit


def both(*edits):
    def edit(d: Path):
        for e in edits:
            d = e(d) or d
        return d
    return edit


M, E, S, C, D = "metrics.jsonl", "evals.jsonl", "summary.json", "config.json", "DONE"
ML, EL = f"{M}: line {STEPS + 1}", f"{E}: line {EVAL_LINES + 1}"


def m_line(text: str):
    return append(M, text.encode() + b"\n")


def e_line(text: str):
    return append(E, text.encode() + b"\n")


# name -> (edit, expected state, what the reason must say)
CORRUPT = {
    # metrics.jsonl: numbers its columns cannot hold
    "m_tokens_1e30": (m_line(f'{{"step": 21, "tokens": {HUGE}}}'), f"{ML}: tokens: 100000...(31 digits) does not fit"),
    "m_tokens_minus_1e30": (m_line(f'{{"step": 21, "tokens": -{HUGE}}}'), f"{ML}: tokens: -100000"),
    "m_step_2_63": (m_line(f'{{"step": {2**63}}}'), f"{ML}: step: {2**63} does not fit a 64-bit integer"),
    "m_tokens_float_1e19": (m_line('{"step": 21, "tokens": 1e19}'), f"{ML}: tokens: 10000000000000000000 does not"),
    "m_lr_1e400": (m_line('{"step": 21, "lr": 1e400}'), f"{ML}: lr: 1e400 is beyond the range of a 64-bit float"),
    "m_lr_400_digits": (m_line(f'{{"step": 21, "lr": {FLOAT_BEYOND}}}'), f"{ML}: lr: 100000...(401 digits) is beyond"),
    "m_loss_minus_1e400": (m_line('{"step": 21, "loss": -1e400}'), f"{ML}: loss: -1e400 is beyond"),
    "m_loss_string": (m_line('{"step": 21, "loss": "high"}'), f"{ML}: loss: expected a number, got 'high'"),
    "m_loss_bool": (m_line('{"step": 21, "loss": true}'), f"{ML}: loss: expected a number, got True"),
    "m_loss_object": (m_line('{"step": 21, "loss": {"v": 1}}'), f"{ML}: loss: expected a number"),
    "m_step_fraction": (m_line('{"step": 21.5}'), f"{ML}: step: expected a whole number, got 21.5"),
    "m_step_nan": (m_line('{"step": NaN}'), f"{ML}: step: expected a whole number, got nan"),
    "m_step_infinity": (m_line('{"step": Infinity}'), f"{ML}: step: expected a whole number, got inf"),
    "m_step_string": (m_line('{"step": "21"}'), f"{ML}: step: expected a whole number, got '21'"),
    "m_step_missing": (m_line('{"loss": 1.0}'), f"{ML} has no step"),
    "m_step_negative": (m_line('{"step": -5}'), f"{M}: a step is negative"),
    # metrics.jsonl: lines that are not objects, text that is not JSON
    "m_bare_number": (m_line("21"), f"{ML}: not a JSON object (got int)"),
    "m_bare_list": (m_line("[21, 1.0]"), f"{ML}: not a JSON object (got list)"),
    "m_bare_string": (m_line('"step 21"'), f"{ML}: not a JSON object (got str)"),
    "m_torn_line": (append(M, b'{"step": 21, "lo'), f"{ML}: not valid JSON"),
    "m_nul_byte": (append(M, b'{"step": 21}\x00\n'), f"{ML}: not valid JSON"),
    "m_not_utf8": (append(M, b'{"step": 21, "note": "\xff"}\n'), f"{ML}: byte b'\\xff' is not UTF-8"),
    "m_bom": (prepend(M, b"\xef\xbb\xbf"), f"{M}: starts with a byte-order mark"),
    "m_nested_too_deep": (append(M, b'{"step": 21, "x": ' + deep() + b"}\n"), f"{ML}: nested too deeply"),
    # metrics.jsonl: absent, empty or not a file, beside a DONE that says completed
    "m_missing": (remove(M), f"{M}: missing, but summary.json says the run completed 20 steps"),
    "m_empty": (replace(M, b""), f"{M}: empty, but summary.json says the run completed 20 steps"),
    "m_blank_lines": (replace(M, b"\n  \n\n"), f"{M}: without a line, but summary.json says"),
    "m_directory": (as_directory(M), f"{M}: is a directory, not a file"),
    "m_fifo": (as_fifo(M), f"{M}: is a FIFO, not a file"),
    "m_link_nowhere": (as_link(M, "/nonexistent/metrics.jsonl"), f"{M}: a symlink to '/nonexistent/metrics.jsonl'"),
    "m_link_to_device": (as_link(M, "/dev/zero"), f"{M}: is a character device, not a file"),
    # evals.jsonl
    "e_metric_1e400": (e_line('{"eval": "val_loss", "tags": {"context": 64}, "metrics": {"loss": 1e400}}'),
                       f"{EL}: metrics.loss: 1e400 is beyond the range of a 64-bit float"),
    "e_metric_400_digits": (e_line(f'{{"eval": "val_loss", "tags": {{}}, "metrics": {{"loss": {FLOAT_BEYOND}}}}}'),
                            f"{EL}: metric loss: 100000...(401 digits) is beyond"),
    "e_metric_string": (e_line('{"eval": "val_loss", "tags": {}, "metrics": {"loss": "low"}}'),
                        f"{EL}: metric loss: expected a number, got 'low'"),
    "e_metric_bool": (e_line('{"eval": "val_loss", "tags": {}, "metrics": {"loss": false}}'),
                      f"{EL}: metric loss: expected a number, got False"),
    "e_tag_1e30": (e_line(f'{{"eval": "val_loss", "tags": {{"context": {HUGE}}}, "metrics": {{"loss": 1.0}}}}'),
                   f"{EL}: tag context: 100000...(31 digits) does not fit a 64-bit integer"),
    "e_tag_nan": (e_line('{"eval": "val_loss", "tags": {"context": NaN}, "metrics": {"loss": 1.0}}'),
                  f"{EL}: tag context: nan is not a finite number"),
    "e_tag_list": (e_line('{"eval": "val_loss", "tags": {"context": [64]}, "metrics": {"loss": 1.0}}'),
                   f"{EL}: tag context: must be a string or a number, got [64]"),
    "e_tag_bool": (e_line('{"eval": "val_loss", "tags": {"doc_mask": true}, "metrics": {"loss": 1.0}}'),
                   f"{EL}: tag doc_mask: must be a string or a number, got True"),
    "e_bare_number": (e_line("7"), f"{EL} needs an object with a string eval"),
    "e_eval_number": (e_line('{"eval": 7, "tags": {}, "metrics": {}}'), f"{EL} needs an object with a string eval"),
    "e_tags_list": (e_line('{"eval": "val_loss", "tags": [], "metrics": {}}'), f"{EL}: tags and metrics must be"),
    "e_metrics_missing": (e_line('{"eval": "val_loss", "tags": {}}'), f"{EL}: tags and metrics must be objects"),
    "e_surrogate": (e_line('{"eval": "val_\\ud800", "tags": {}, "metrics": {}}'),
                    f"{EL}: eval: holds an unpaired surrogate (\\ud800)"),
    "e_not_utf8": (append(E, b'{"eval": "\xc3\x28", "tags": {}, "metrics": {}}\n'), f"{EL}: byte b'\\xc3' is not"),
    "e_torn_line": (append(E, b'{"eval": "val_lo'), f"{EL}: not valid JSON"),
    "e_nested_too_deep": (append(E, b'{"eval": "x", "tags": {}, "metrics": {}, "x": ' + deep() + b"}\n"),
                          f"{EL}: nested too deeply"),
    "e_directory": (as_directory(E), f"{E}: is a directory, not a file"),
    "e_fifo": (as_fifo(E), f"{E}: is a FIFO, not a file"),
    # summary.json
    "s_tokens_1e30": (put(S, "tokens", str(HUGE)), f"{S}: tokens: 100000...(31 digits) does not fit a 64-bit"),
    "s_steps_minus_2_64": (put(S, "steps", str(-(2**64))), f"{S}: steps: -18446744073709551616 does not fit"),
    "s_final_loss_1e400": (put(S, "final_loss", "1e400"), f"{S}: final_loss: 1e400 is beyond the range"),
    "s_mfu_400_digits": (put(S, "mfu", FLOAT_BEYOND), f"{S}: mfu: 100000...(401 digits) is beyond the range"),
    "s_costs_params_1e30": (put(S, "costs.params_total", str(HUGE)), f"{S}: costs.params_total: 100000...(31 dig"),
    "s_costs_not_object": (put(S, "costs", "[1, 2]"), f"{S}: costs must be an object, got list"),
    "s_env_git_dirty_string": (put(S, "env.git_dirty", '"yes"'), f"{S}: env.git_dirty: expected true or false"),
    "s_env_hostname_surrogate": (put(S, "env.hostname", '"node\\udc80"'),
                                 f"{S}: env.hostname: holds an unpaired surrogate (\\udc80)"),
    "s_bare_number": (replace(S, b"42"), f"{S}: must be a JSON object, got int"),
    "s_bare_list": (replace(S, b'["completed"]'), f"{S}: must be a JSON object, got list"),
    "s_zero_bytes": (replace(S, b""), f"{S}: empty"),
    "s_bom": (prepend(S, b"\xef\xbb\xbf"), f"{S}: starts with a byte-order mark"),
    "s_not_utf8": (prepend(S, b"\n\xfe"), f"{S}: line 2: byte b'\\xfe' is not UTF-8"),
    "s_nested_too_deep": (replace(S, b'{"status": "completed", "x": ' + deep() + b"}"), f"{S}: nested too deeply"),
    "s_missing": (remove(S), f"{S}: missing"),
    "s_directory": (as_directory(S), f"{S}: is a directory, not a file"),
    "s_fifo": (as_fifo(S), f"{S}: is a FIFO, not a file"),
    "s_over_64_mib": (sparse(S, (64 << 20) + 1), f"{S}: 67108865 bytes, more than the 64 MiB it may hold"),
    # config.json
    "c_lr_1e400": (put(C, "config.train.lr", "1e400"), f"{C}: config.train.lr: 1e400 is beyond the range"),
    "c_seed_1e30": (rehashed("config.seed", str(HUGE)), f"{C}: config.seed: 100000...(31 digits) does not fit"),
    "c_lr_400_digits": (rehashed("config.train.lr", FLOAT_BEYOND), f"{C}: config.train.lr: 100000...(401 digits)"),
    "c_layout_a_billion_layers": (rehashed("config.model.layout", '["full*1000000000"]'),
                                  f"{C}: model.layout: more than 100000 layers"),
    "c_n_layers_1e30": (rehashed("config.model.n_layers", str(HUGE)), f"{C}: model.n_layers: must be in [1, 100000]"),
    "c_name_object": (put(C, "config.name", '{"a": 1}'), f"{C}: config.name: expected a string, got {{'a': 1}}"),
    "c_name_surrogate": (put(C, "config.name", '"\\ud83d"'), f"{C}: config.name: holds an unpaired surrogate"),
    "c_config_list": (put(C, "config", "[1]"), f"{C}: config must be an object"),
    "c_run_id_number": (put(C, "run_id", "7"), f"{C}: run_id missing (or not a string)"),
    "c_bare_string": (replace(C, b'"3f0b87fcf4081a2b"'), f"{C}: must be a JSON object, got str"),
    "c_zero_bytes": (replace(C, b""), f"{C}: empty"),
    "c_bom": (prepend(C, b"\xef\xbb\xbf"), f"{C}: starts with a byte-order mark"),
    "c_not_utf8": (prepend(C, b"\x80"), f"{C}: line 1: byte b'\\x80' is not UTF-8"),
    "c_nested_too_deep": (replace(C, b'{"x": ' + deep() + b"}"), f"{C}: nested too deeply"),
    "c_missing": (remove(C), f"{C}: missing"),
    "c_directory": (as_directory(C), f"{C}: is a directory, not a file"),
    "c_fifo": (as_fifo(C), f"{C}: is a FIFO, not a file"),
    "c_symlink_loop": (as_link(C, C), f"{C}: cannot be opened (Too many levels of symbolic links)"),
    "c_dir_not_run_id": (renamed("my-run"), f"{C}: run_id"),  # the full reason is checked below
    "c_not_the_config_hash": (put(C, "config.seed", "99"), "is not the hash of its config"),
    # DONE
    "d_bare_number": (replace(D, b"1"), f"{D}: must be a JSON object, got int"),
    "d_zero_bytes": (replace(D, b""), f"{D}: empty"),
    "d_status_1e400": (put(D, "status", "1e400"), f"{D}: status: 1e400 is beyond the range"),
    "d_status_unknown": (put(D, "status", '"finished"'), f"{D}: status 'finished' is not one of"),
    "d_not_utf8": (replace(D, b"\xff\xfe{}"), f"{D}: line 1: byte b'\\xff' is not UTF-8"),
    "d_directory": (as_directory(D), f"{D}: is a directory, not a file"),
    "d_fifo": (as_fifo(D), f"{D}: is a FIFO, not a file"),
    "d_link_nowhere": (as_link(D, "DONE.gone"), f"{D}: a symlink to 'DONE.gone', which does not exist"),
}

# directories without DONE: never corrupt (only DONE says a run is finished), but reported with the problem
INCOMPLETE = {
    "i_config_directory": (both(remove(D), as_directory(C)), f"no DONE; {C}: is a directory, not a file"),
    "i_metrics_fifo": (both(remove(D), as_fifo(M)), f"no DONE; {M}: is a FIFO, not a file"),
    "i_summary_fifo": (both(remove(D), as_fifo(S)), "no DONE; last step 20"),
    "i_not_run_id": (both(remove(D), renamed("copy-of-a-run")), "is not its directory's name (copy-of-a-run)"),
    "i_last_line_nested": (both(remove(D), append(M, deep(2000) + b"\n")), "no DONE; last step 20"),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Two good runs and one victim, written once; each test copies them."""
    base = tmp_path_factory.mktemp("template")
    for seed in (0, 1):
        write_run(base / "good", config(seed))
    write_run(base / "victim", config(7))
    return base


def _root(template: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    shutil.copytree(template / "good", root)
    [victim] = (template / "victim" / "runs").iterdir()
    d = root / "runs" / victim.name
    shutil.copytree(victim, d)
    return root, d


def _ingest(cli, root: Path, db: Path) -> tuple[int, dict]:
    rc, out, err = cli("ingest", "--root", root, "--db", db, "--json")
    assert "Traceback" not in err
    return rc, json.loads(out)


GOOD = sorted(run_id_of(config(s)) for s in (0, 1))


def _good_ones_ingested(rep: dict, db: Path) -> None:
    assert sorted(rep["ingested"]) == GOOD, rep
    assert query_df(db, "SELECT run_id FROM runs ORDER BY run_id")["run_id"].to_list() == GOOD
    assert query_df(db, "SELECT count(*) AS n FROM steps")["n"][0] == 2 * STEPS
    assert query_df(db, "SELECT count(DISTINCT run_id) AS n FROM evals")["n"][0] == 2


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_run_is_reported_and_the_others_ingest(case, template, tmp_path, cli):
    edit, reason = CORRUPT[case]
    root, d = _root(template, tmp_path)
    d = edit(d) or d
    rc, rep = _ingest(cli, root, tmp_path / "r.duckdb")
    assert rc == FAILED
    _good_ones_ingested(rep, tmp_path / "r.duckdb")
    [bad] = rep["corrupt"]
    assert bad["dir"] == str(d) and reason in bad["reason"], bad
    assert "\n" not in bad["reason"] and len(bad["reason"]) < 400
    assert not (rep["incomplete"] or rep["skipped"] or rep["unreadable"])


@pytest.mark.parametrize("case", sorted(INCOMPLETE))
def test_unfinished_run_with_a_problem_is_incomplete(case, template, tmp_path, cli):
    edit, reason = INCOMPLETE[case]
    root, d = _root(template, tmp_path)
    d = edit(d) or d
    rc, rep = _ingest(cli, root, tmp_path / "r.duckdb")
    assert rc == OK
    _good_ones_ingested(rep, tmp_path / "r.duckdb")
    [item] = rep["incomplete"]
    assert item["dir"] == str(d) and reason in item["reason"], item
    assert not rep["corrupt"]


def test_misnamed_directory_names_both(template, tmp_path, cli):
    root, d = _root(template, tmp_path)
    d = d.rename(d.parent / "my-run")
    rc, rep = _ingest(cli, root, tmp_path / "r.duckdb")
    rid = run_id_of(config(7))
    assert rc == FAILED and rep["corrupt"] == [{
        "dir": str(d), "run_id": rid,
        "reason": f"config.json: run_id {rid} is not its directory's name (my-run); a run lives in "
                  f"<root>/runs/<run_id>: move it to .../runs/{rid}"}]


def test_every_bad_run_at_once_in_one_batch(tmp_path, cli):
    """All the cases in one root: one ingest, one batch; each bad run reported with its reason, the good in."""
    root = tmp_path / "root"
    for seed in (0, 1):
        write_run(root, config(seed))
    expect = {}
    for i, (case, (edit, reason)) in enumerate(sorted({**CORRUPT, **INCOMPLETE}.items())):
        d = write_run(root, config(100 + i))
        if case == "c_dir_not_run_id":
            edit = renamed(f"my-run-{i}")  # each its own name
        if case == "i_not_run_id":
            edit = both(remove(D), renamed(f"copy-{i}"))
        d = edit(d) or d
        expect[str(d)] = (case, reason)
    rc, rep = _ingest(cli, root, tmp_path / "r.duckdb")
    assert rc == FAILED
    _good_ones_ingested(rep, tmp_path / "r.duckdb")
    got = {i["dir"]: i["reason"] for i in rep["corrupt"] + rep["incomplete"]}
    assert set(got) == set(expect)
    for d, (case, reason) in expect.items():
        if case != "i_not_run_id":
            assert reason in got[d], (case, got[d])
    assert len(rep["corrupt"]) == len(CORRUPT) and len(rep["incomplete"]) == len(INCOMPLETE)
