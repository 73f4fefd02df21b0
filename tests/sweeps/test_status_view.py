"""`costlaw sweep status` as a live view (issue 22): per run step / total, last loss, tokens/s and ETA from the tail
of metrics.jsonl (read from the end, however long the file), a table that fits the terminal (--wide for every
column), --watch refreshing until the sweep is done (Ctrl-C exits 0), and exit codes from costmodel.core.exitcodes.
"""

import io
import json
import re

import pytest

from costlaw.cli import main
from costlaw.costmodel.core import exitcodes
from costlaw.costmodel.core.rundir import RunDir
from costlaw.sweeps import live, record, status, submit, watch

from .conftest import FAKE, STAGED_SPEC


def test_last_lines_reads_only_the_tail(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    with open(path, "w") as f:
        for step in range(1, 200_001):
            f.write(json.dumps({"step": step, "loss": 1 / step}) + "\n")
        f.write('{"step": 200001, "lo')  # a writer mid-append
    read = []
    real_open = open

    class Counting(io.BufferedReader):
        def read(self, *a):
            data = super().read(*a)
            read.append(len(data))
            return data

    monkeypatch.setattr(live, "open", lambda p, mode="r": Counting(real_open(p, "rb", buffering=0)), raising=False)
    rows = live.last_lines(path)
    assert [r["step"] for r in rows] == [199_999, 200_000]
    assert sum(read) <= live.TAIL_BYTES < path.stat().st_size / 100


def test_progress_step_loss_rate_and_eta(tmp_path):
    path = tmp_path / "metrics.jsonl"
    run = {"steps": 1000}
    assert live.progress(path, run, "pending") == {"step": None, "total_steps": 1000, "loss": None,
                                                   "tokens_per_s": None, "eta_s": None, "updated_s": None}
    rows = [{"step": 100, "tokens": 51200, "loss": 3.5, "tokens_per_s": 2048.0, "time_s": 30.0},
            {"step": 200, "tokens": 102400, "loss": 3.25, "tokens_per_s": 1024.0, "time_s": 70.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = live.progress(path, run, "running")
    assert (p["step"], p["total_steps"], p["loss"], p["tokens_per_s"]) == (200, 1000, 3.25, 1024.0)
    assert p["eta_s"] == pytest.approx(800 * 512 / 1024.0)  # steps left x tokens per step / tokens per second
    assert live.progress(path, run, "preempted")["eta_s"] is None  # only a running run has an ETA
    # a trainer that logs no rate: the last interval's tokens over its seconds
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "tokens_per_s"}) + "\n" for r in rows))
    assert live.progress(path, run, "running")["tokens_per_s"] == pytest.approx(51200 / 40.0)
    assert [live.duration(s) for s in (42, 425, 11520, 187200)] == ["42s", "7m05s", "3h12m", "2d04h"]


def _sweep(tmp_path, write_spec, **kw):
    root = tmp_path / "root"
    submit.submit_spec(write_spec(**kw), root, "debug", train_fn=FAKE, progress=False)
    return root


def test_status_shows_progress_and_fits_the_terminal(tmp_path, write_spec, job_env, capsys, monkeypatch):
    root = _sweep(tmp_path, write_spec, steps=6)
    rc = main(["sweep", "status", "--root", str(root), "--wide"])
    out = capsys.readouterr().out
    assert rc == exitcodes.OK
    header = out.splitlines()[1].split()
    assert header == ["run_id", "stage", "point", "state", "step", "loss", "tok/s", "ETA", "job", "job", "state",
                      "attempts"]
    for r in record.load(root)["runs"]:
        steps = r["steps"]
        assert re.search(rf"{r['run_id']} .* completed +{steps}/{steps} +{1 / (1 + steps):.4g} ", out), out
    st = status.collect(root)
    wide = status.render(st)
    for width in (100, 72, 60):
        text = status.render(st, width=width)
        table = text.splitlines()[1:6]
        assert max(map(len, table)) <= width, (width, text)
        assert "run_id" in table[0] and "state" in table[0]
    assert "attempts" in wide and "attempts" not in status.render(st, width=72)
    long = {**st, "runs": [{**r, "label": "n_heads=4 n_kv_heads=2 d_model=512 lr=0.003 warmup_frac=0.2 seed=1"}
                           for r in st["runs"]]}
    text = status.render(long, width=80)  # the label is cut before the loss goes
    table = text.splitlines()[1:6]
    assert max(map(len, table)) <= 80 and " n_heads=4 n_kv_heads=2 ~ " in table[2] and "loss" in table[0], text
    table = status.render(long, width=56).splitlines()[1:6]
    assert max(map(len, table)) <= 56 and "loss" not in table[0] and "n_heads=4 n~" in table[2], table
    monkeypatch.setenv("COLUMNS", "60")  # the CLI takes the terminal's width unless --wide
    main(["sweep", "status", "--root", str(root)])
    assert max(len(line) for line in capsys.readouterr().out.splitlines()[1:6]) <= 60


def test_status_exit_code_says_whether_a_run_failed(tmp_path, write_spec, job_env, capsys):
    for f in (submit.submit_spec, submit.resubmit):
        job_env.setitem(f.__kwdefaults__, "train_fn", FAKE)
    job_env.setenv("COSTLAW_FAKE_FAIL", "1")
    text = STAGED_SPEC.replace('grid = {{ "model.n_heads" = [2, 4] }}',
                               'list = [{{ "model.n_heads" = 2 }}, {{ "model.n_heads" = 4, "data.corpus" = "fail" }}]')
    spec_path = write_spec(text.format(name="f", steps=4, seeds="", data="", time_min=5, signal_delay_s=30), name="f")
    root = tmp_path / "root"
    rc = main(["sweep", "submit", str(spec_path), "--executor", "local", "--root", str(root)])
    assert rc == exitcodes.FAILED  # a sweep with a failed run is not a success
    assert main(["sweep", "status", "--root", str(root)]) == exitcodes.FAILED
    assert main(["sweep", "status", "--root", str(root), "--json"]) == exitcodes.FAILED
    capsys.readouterr()
    job_env.delenv("COSTLAW_FAKE_FAIL")
    assert main(["sweep", "resubmit", "--root", str(root), "--failed"]) == exitcodes.OK
    assert main(["sweep", "status", "--root", str(root)]) == exitcodes.OK


def test_watch_prints_lines_off_a_terminal_until_done(tmp_path, write_spec, job_env):
    root = _sweep(tmp_path, write_spec, steps=4)
    rd = RunDir(root / "runs" / record.load(root)["runs"][0]["run_id"])
    done = rd.file("DONE").read_text()
    rd.file("DONE").unlink()
    rd.file("summary.json").unlink()
    doc = record.load(root)
    doc["runs"][0]["jobs"][-1].update(executor="local", job_id=str(__import__("os").getpid()), pgid=None)
    record.save(root, doc)  # a local job of a live process: running, until DONE comes back
    calls = []

    def sleep(s):
        calls.append(s)
        rd.file("DONE").write_text(done)

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(watch.time, "sleep", sleep)
        rc = watch.watch(root, 0.25, stream=out)
    lines = out.getvalue().splitlines()
    assert rc == exitcodes.OK and calls == [0.25]
    assert re.match(r"\d\d:\d\d:\d\d sweep t: 1 running, 3 completed$", lines[0]), lines
    assert re.match(rf"  {rd.path.name} running step 4/4 ", lines[1]), lines
    assert re.match(r"\d\d:\d\d:\d\d sweep t: 4 completed$", lines[2]) and "4 runs: 4 completed" in lines[3]


def test_watch_on_a_terminal_redraws_and_ctrl_c_exits_0(tmp_path, write_spec, job_env, monkeypatch):
    root = _sweep(tmp_path, write_spec, steps=4)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    assert watch.watch(root, 1.0, stream=out) == exitcodes.OK  # already done: one frame
    assert "4 runs: 4 completed" in out.getvalue() and "done at " in out.getvalue()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(watch, "collect", interrupted)
    assert watch.watch(root, 1.0, stream=Terminal()) == exitcodes.OK
    assert watch.watch(root, 1.0, stream=io.StringIO()) == exitcodes.OK


def test_watch_flag_is_checked(tmp_path, capsys):
    rc = main(["sweep", "status", "--root", str(tmp_path), "--watch", "0"])
    assert rc == 2 and capsys.readouterr().err.strip() == "costlaw sweep: error: --watch: must be > 0 seconds, got 0"


def test_sweep_help_documents_the_exit_codes_and_the_verbs(capsys):
    assert main(["sweep", "--help"]) == exitcodes.OK
    out = capsys.readouterr().out
    for code in (exitcodes.OK, exitcodes.FAILED, exitcodes.INPUT, exitcodes.INTERRUPTED, exitcodes.USAGE):
        assert re.search(rf"^  {code} +\S", out, re.M), out
    assert main(["--help"]) == 0
    verbs = capsys.readouterr().out
    assert "sweep watch" not in verbs and "watch and" not in verbs and "--watch" in verbs
    for action in ("plan", "submit", "status", "resubmit"):  # the subcommands listed are the parser's own
        assert f"    sweep {action} " in verbs
