"""A run killed with SIGKILL mid-write is reported incomplete, not half-ingested; resubmitted, it ingests.

The first test kills a real writer process (runs/rundir.py's writers, lines written in two pieces so the
kill can land inside one); the second kills a real `costlaw run` training run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from costlaw.analysis.store import ingest, query_df

REPO = Path(__file__).resolve().parents[2]
STEPS = 400

WRITER = """
import json, sys, time
from costlaw.costmodel import preset
from costlaw.runs.config import DataConfig, RunConfig, TrainConfig
from costlaw.costmodel.core.files import repair_jsonl
from costlaw.costmodel.core.rundir import RunDir

root, steps, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"
cfg = RunConfig(model=preset("gqa-3m", vocab_size=257), data=DataConfig(seq_len=64),
                train=TrainConfig(steps=steps, batch_size=2), name="killed")
rd = RunDir(f"{root}/runs/{cfg.run_id}")
start = 1
if resume:
    repair_jsonl(rd.file("metrics.jsonl"))  # drop the torn line the kill left
    start = rd.metrics()[-1]["step"] - 2  # resume from an older checkpoint: a few steps are logged again
else:
    rd.write_config(cfg)
print(cfg.run_id, flush=True)
for s in range(start, steps + 1):
    line = (json.dumps({"step": s, "tokens": s * 128, "loss": 5.0 / s ** 0.2, "lr": 1e-3, "grad_norm": 1.0,
                        "tokens_per_s": 1e3, "time_s": s * 0.01}) + "\\n").encode()
    with open(rd.file("metrics.jsonl"), "ab") as f:  # two writes per line: a kill can tear it
        f.write(line[:20])
        f.flush()
        if not resume:
            time.sleep(0.01)
        f.write(line[20:])
rd.append_eval("val_loss", {"context": 64}, {"loss": 2.0, "tokens": 100})
rd.write_summary({"run_id": cfg.run_id, "status": "completed", "steps": steps, "tokens": steps * 128,
                  "final_loss": 5.0 / steps ** 0.2})
rd.write_done(cfg.run_id, "completed")
"""


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_sigkilled_writer_is_incomplete_then_resubmitted(tmp_path):
    root, db = tmp_path / "root", tmp_path / "r.duckdb"
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(STEPS), "fresh"], stdout=subprocess.PIPE,
                         text=True)
    try:
        run_id = p.stdout.readline().strip()
        metrics = root / "runs" / run_id / "metrics.jsonl"
        deadline = time.monotonic() + 60
        while _lines(metrics) < 20 and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()
    assert p.returncode == -signal.SIGKILL
    logged = _lines(metrics)
    assert 20 <= logged < STEPS
    rep = ingest(root, db)
    assert [i["run_id"] for i in rep.incomplete] == [run_id] and not rep.ingested and not rep.corrupt
    assert "no DONE" in rep.incomplete[0]["reason"]
    counts = query_df(db, "SELECT (SELECT count(*) FROM runs) AS r, (SELECT count(*) FROM steps) AS s, "
                          "(SELECT count(*) FROM evals) AS e")
    assert counts.row(0) == (0, 0, 0)

    again = subprocess.run([sys.executable, "-c", WRITER, str(root), str(STEPS), "resume"], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    rep = ingest(root, db)
    assert rep.ingested == [run_id] and not rep.incomplete
    steps = query_df(db, "SELECT step FROM steps ORDER BY step")["step"].to_list()
    assert steps == list(range(1, STEPS + 1))  # resumed lines replaced the repeated steps, none twice
    assert query_df(db, "SELECT n_steps, status FROM runs").row(0) == (STEPS, "completed")


INGESTER = """
import sys
from costlaw.analysis.store import ingest
ingest(sys.argv[1], sys.argv[2], batch_bytes=int(sys.argv[3]), progress=lambda line: print(line, flush=True))
"""


def test_sigkilled_ingest_leaves_a_consistent_database(tmp_path):
    from costlaw.costmodel import preset
    from costlaw.runs.config import DataConfig, RunConfig, TrainConfig
    from tests.support.synth_runs import write_run

    root, db = tmp_path / "root", tmp_path / "r.duckdb"
    m = preset("gqa-3m", vocab_size=257)
    for seed in range(60):
        c = RunConfig(model=m, data=DataConfig(seq_len=64), train=TrainConfig(steps=50, batch_size=2), seed=seed)
        d = write_run(root, c.to_dict(), steps=50)
    per_run = (d / "metrics.jsonl").stat().st_size
    p = subprocess.Popen([sys.executable, "-c", INGESTER, str(root), str(db), str(per_run * 4)],
                         stdout=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:
            if line.startswith("batch 4:"):  # three batches committed, the fourth under way
                os.kill(p.pid, signal.SIGKILL)
                break
    finally:
        p.wait()
    assert p.returncode == -signal.SIGKILL
    part = query_df(db, "SELECT count(*) AS runs, sum(n_steps) AS n, (SELECT count(*) FROM steps) AS steps FROM runs")
    runs, n, steps = part.row(0)
    assert 12 <= runs < 60 and n == steps == runs * 50  # whole runs only
    rep = ingest(root, db)
    assert len(rep.ingested) == 60 - runs and len(rep.unchanged) == runs
    assert query_df(db, "SELECT count(*) AS r, count(DISTINCT run_id) AS d FROM steps").row(0) == (60 * 50, 60)


TINY = REPO / "runs" / "examples" / "tiny-gqa.toml"


@pytest.mark.slow
def test_sigkilled_training_run_is_incomplete_then_resubmitted(tmp_path):
    """`costlaw run` on the tiny-gqa example (shortened to 40 steps, logged every 5, checkpointed every 10, so
    the test stays short on a busy 2-core machine): SIGKILL after step 15 is logged, ingest, resume, ingest."""
    import tomllib

    from costlaw.costmodel.tomlw import dumps

    spec = tomllib.loads(TINY.read_text())
    spec["train"].update(steps=40, log_every=5, checkpoint_every=10)
    spec["eval"].update(val_tokens=4096, retrieval_samples=4, decode_tokens=4)
    run_toml = tmp_path / "tiny-gqa-short.toml"
    run_toml.write_text(dumps(spec))
    out, db = tmp_path / "out", tmp_path / "r.duckdb"
    cmd = [sys.executable, "-m", "costlaw", "run", str(run_toml), "--root", str(out), "--device", "cpu", "--quiet"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and p.poll() is None:
            if any(_lines(m) >= 3 for m in out.rglob("metrics.jsonl")):  # step 15: the step-10 checkpoint exists
                break
            time.sleep(0.05)
        assert p.poll() is None, f"the run ended before it could be killed: {p.stderr.read()[-2000:]}"
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()
    [run_dir] = [m.parent for m in out.rglob("metrics.jsonl")]
    assert not (run_dir / "DONE").exists()
    rep = ingest(out, db)
    assert [i["dir"] for i in rep.incomplete] == [str(run_dir)] and not rep.ingested and not rep.corrupt
    assert query_df(db, "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM steps) AS n")["n"][0] == 0

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    rep = ingest(out, db)
    assert not rep.incomplete and not rep.corrupt and len(rep.ingested) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    row = query_df(db, "SELECT run_id, status, steps, n_steps, n_evals, final_loss FROM runs").row(0, named=True)
    assert row["run_id"] == rep.ingested[0] == summary["run_id"] == run_dir.name
    assert (row["status"], row["steps"]) == (summary["status"], summary["steps"]) == ("completed", 40)
    steps = query_df(db, "SELECT step FROM steps ORDER BY step")["step"].to_list()
    assert steps == list(range(5, 41, 5))  # every logged step once, though steps after 10 were logged twice
    assert row["n_steps"] == len(steps) and row["n_evals"] > 0
    assert query_df(db, "SELECT count(*) AS n FROM run_summary")["n"][0] == 1
    summ = query_df(db, "SELECT params_total, params_measured, corpus_id, device, seq_len FROM runs").row(0, named=True)
    assert summ["params_total"] == summ["params_measured"] > 0  # the analytic count is the built model's
    assert summ["corpus_id"] and summ["device"] == "cpu" and summ["seq_len"] == 256
