"""Ctrl-C (and SIGTERM) on `costlaw sweep submit|resubmit` is a preemption (issues 20 and 22): running trainers
checkpoint ("preempted"), sweep.json records it, one line and exit 3, a resubmit continues from the checkpoints;
trainers slow to stop are handed over and a resubmit counts them against --max-parallel; a Slurm submission cut by
Ctrl-C records exactly the arrays it submitted."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import submitit

from costlaw.cli import main
from costlaw.costmodel.core import exitcodes
from costlaw.costmodel.core.rundir import RunDir
from costlaw.costmodel.core.runlock import trainer_alive
from costlaw.sweeps import record, status, submit
from costlaw.sweeps.interrupt import SweepInterrupted

from .conftest import FAKE, TINY_POINT

FOUR = """
[sweep]
name = "four"
""" + TINY_POINT + """[base.train]
steps = {steps}
checkpoint_every = 10
[[axes]]
grid = {{ "train.lr" = [0.001, 0.002, 0.003, 0.004] }}
[resources]
cpus = 1
time_min = 5
signal_delay_s = {signal_delay_s}
"""


@pytest.fixture
def fake_cli(monkeypatch, job_env):
    """`costlaw sweep ...` in this process, its tasks run by the fake trainer."""
    for f in (submit.submit_spec, submit.resubmit):
        monkeypatch.setitem(f.__kwdefaults__, "train_fn", FAKE)
    return job_env


def ctrl_c_when(ready, sig=signal.SIGINT, timeout=60.0):
    """Send `sig` to this process (the submitter: pytest's main thread) once `ready()`."""
    def run():
        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), sig)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def live_trainers(root) -> list[str]:
    runs = (root / "runs").glob("*") if (root / "runs").exists() else []
    return [r.name for r in runs if trainer_alive(r) and RunDir(r).metrics()]


def sessions(root) -> list[tuple[float, float]]:
    """Every training session of every run, as (first, last) wall time of its metrics lines; a session starts
    where `time_s` (seconds since the session started) falls back."""
    spans = []
    for rd in (RunDir(p) for p in (root / "runs").glob("*")):
        cur = None
        for m in rd.metrics():
            if cur is None or m["time_s"] < cur[2]:
                if cur is not None:
                    spans.append(cur[:2])
                cur = [m["t"], m["t"], m["time_s"]]
            cur[1], cur[2] = m["t"], m["time_s"]
        if cur is not None:
            spans.append(cur[:2])
    return spans


def peak(spans) -> int:
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    live = top = 0
    for _, d in events:
        live += d
        top = max(top, live)
    return top


def test_ctrl_c_on_local_submit_checkpoints_and_resubmit_resumes(tmp_path, fake_cli, capsys):
    fake_cli.setenv("COSTLAW_FAKE_STEP_S", "0.04")
    spec = tmp_path / "four.toml"
    spec.write_text(FOUR.format(steps=150, signal_delay_s=30))
    root = tmp_path / "root"
    ctrl_c_when(lambda: len(live_trainers(root)) == 2)
    rc = main(["sweep", "submit", str(spec), "--executor", "local", "--root", str(root), "--max-parallel", "2"])
    err = capsys.readouterr().err
    assert rc == exitcodes.INTERRUPTED, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("costlaw sweep: interrupted (SIGINT): 2 run(s) checkpointed (preempted), 2 not started; "
                           f"`costlaw sweep resubmit --root {root} --failed` continues them"), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    sub = record.load(root)["submissions"][-1]
    assert sub["interrupted"]["signal"] == "SIGINT" and len(sub["interrupted"]["not_started"]) == 2
    stopped = sub["interrupted"]["stopped"]
    assert sorted(stopped.values()) == ["preempted", "preempted"] and sub["queued"] == []
    assert live_trainers(root) == []
    st = status.collect(root)
    assert st["counts"]["preempted"] == 2 and st["counts"]["unknown"] == 2 and st["counts"]["failed"] == 0
    at = {rid: RunDir(root / "runs" / rid).summary()["steps"] for rid in stopped}

    assert main(["sweep", "resubmit", "--root", str(root), "--failed", "--max-parallel", "2"]) == exitcodes.OK
    st = status.collect(root)
    assert st["counts"]["completed"] == 4
    for rid, step in at.items():
        rd = RunDir(root / "runs" / rid)
        s = rd.summary()
        assert s["resumes"] == 1 and s["started_at_step"] == step and 0 < step < 150
        assert [m["step"] for m in rd.metrics()] == list(range(1, 151))  # stopped at a step, resumed there
    assert peak(sessions(root)) <= 2


@pytest.mark.slow
def test_slow_trainers_are_handed_over_and_counted_by_a_resubmit(tmp_path, fake_cli, capsys):
    """Trainers that keep going 9 s after the stop request outlast the submitter's 5 s wait: they are handed over
    (still training under their locks), and a resubmit with --max-parallel 2 starts nothing until they stop."""
    fake_cli.setenv("COSTLAW_FAKE_STEP_S", "0.03")
    fake_cli.setenv("COSTLAW_FAKE_STOP_S", "9")
    spec = tmp_path / "four.toml"
    spec.write_text(FOUR.format(steps=500, signal_delay_s=10))
    root = tmp_path / "root"
    ctrl_c_when(lambda: len(live_trainers(root)) == 2, sig=signal.SIGTERM)
    rc = main(["sweep", "submit", str(spec), "--executor", "local", "--root", str(root), "--max-parallel", "2"])
    err = capsys.readouterr().err
    assert rc == exitcodes.INTERRUPTED, err
    assert "interrupted (SIGTERM): 0 run(s) checkpointed (preempted), 2 still checkpointing under their trainer " \
           "locks, 2 not started" in err
    handed = record.load(root)["submissions"][-1]["interrupted"]["still_running"]
    assert sorted(live_trainers(root)) == sorted(handed)
    assert {r["run_id"]: r["state"] for r in status.collect(root)["runs"] if r["run_id"] in handed} == \
        dict.fromkeys(handed, "running")

    # the resubmit waits for the handed-over trainers (they count), then continues them from their checkpoints
    assert main(["sweep", "resubmit", "--root", str(root), "--failed", "--max-parallel", "2"]) == exitcodes.OK
    err = capsys.readouterr().err
    assert "2 trainers of an earlier submission still run and count" in err
    for rid in handed:
        assert f"{rid}: its handed-over trainer stopped at a checkpoint; continuing it" in err
    jobs = {r["run_id"]: len(r["jobs"]) for r in record.load(root)["runs"]}
    assert all(jobs[rid] == (2 if rid in handed else 1) for rid in jobs)  # never a second job beside a live one
    assert status.collect(root)["counts"]["completed"] == 4
    assert peak(sessions(root)) <= 2  # never more trainers than --max-parallel, counting the handed-over ones
    for rd in (RunDir(p) for p in (root / "runs").glob("*")):
        assert [m["step"] for m in rd.metrics()] == list(range(1, 501))


def test_ctrl_c_on_debug_submit_stops_the_run_in_process(tmp_path, fake_cli):
    fake_cli.setenv("COSTLAW_FAKE_STEP_S", "0.02")
    spec = tmp_path / "four.toml"
    spec.write_text(FOUR.format(steps=400, signal_delay_s=30))
    root = tmp_path / "root"
    ctrl_c_when(lambda: len(live_trainers(root)) == 1)
    with pytest.raises(SweepInterrupted, match=r"^interrupted \(SIGINT\): 1 run\(s\) checkpointed \(preempted\), 3 "
                                               r"not started"):
        submit.submit_spec(spec, root, "debug", train_fn=FAKE, progress=False)
    sub = record.load(root)["submissions"][-1]
    assert len(sub["interrupted"]["stopped"]) == 1 and len(sub["interrupted"]["not_started"]) == 3
    assert status.collect(root)["counts"]["preempted"] == 1


def test_interrupt_before_anything_is_submitted_is_one_line(tmp_path, capsys, monkeypatch):
    from costlaw.sweeps import spec

    def interrupted(text):
        raise KeyboardInterrupt

    monkeypatch.setattr(spec, "parse", interrupted)
    path = tmp_path / "four.toml"
    path.write_text(FOUR.format(steps=10, signal_delay_s=30))
    rc = main(["sweep", "submit", str(path), "--executor", "local", "--root", str(tmp_path / "root")])
    err = capsys.readouterr().err
    assert rc == exitcodes.INTERRUPTED and err == "costlaw sweep: interrupted during submit, before anything was " \
                                                  "submitted\n"
    assert not (tmp_path / "root").exists()


STAGED = FOUR.replace('grid = {{ "train.lr" = [0.001, 0.002, 0.003, 0.004] }}',
                      'grid = {{ "train.lr" = [0.001, 0.002] }}') + """
[[stages]]
name = "pretrain"
[[stages]]
name = "extend"
from = "pretrain"
set = {{ "data.seq_len" = 32 }}
"""


SBATCH = """
import os, signal, time
os.kill(os.getppid(), signal.SIGINT)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.1)
print("submitted")
"""


class FakeSlurm:
    """submitit.AutoExecutor for the Slurm path without a cluster: arrays get ids 101, 102, ...; a Ctrl-C arrives
    while the first array is being submitted."""

    arrays: list = []
    ctrl_c_in_array = 1

    def __init__(self, folder, cluster, slurm_max_num_timeout):
        assert cluster == "slurm"

    def update_parameters(self, **kw):
        self.params = kw

    @contextlib.contextmanager
    def batch(self):
        self.jobs = []
        yield
        FakeSlurm.arrays.append((self.params.get("slurm_dependency"), self.jobs))
        for i, j in enumerate(self.jobs):
            j.job_id = f"{100 + len(FakeSlurm.arrays)}_{i}"

    sbatch: list = []

    def submit(self, task):
        if len(FakeSlurm.arrays) + 1 == FakeSlurm.ctrl_c_in_array and not self.jobs:
            # a Ctrl-C at the terminal reaches the submitter and the sbatch it runs: both hold it until the array
            # and its record are complete, so sbatch is not killed half way
            FakeSlurm.sbatch.append(subprocess.run([sys.executable, "-c", SBATCH], capture_output=True, text=True,
                                                   timeout=60))
        job = SimpleNamespace(job_id=None, task=task)
        self.jobs.append(job)
        return job


def test_ctrl_c_during_slurm_submission_records_what_was_submitted(tmp_path, monkeypatch, job_env):
    monkeypatch.setattr(submitit, "AutoExecutor", FakeSlurm)
    monkeypatch.setattr(FakeSlurm, "arrays", [])
    monkeypatch.setattr(FakeSlurm, "sbatch", [])
    monkeypatch.setattr(submit, "check_executor", lambda kind: None)  # no sbatch here; the executor is faked
    spec = tmp_path / "staged.toml"
    spec.write_text(STAGED.format(steps=10, signal_delay_s=30))
    root = tmp_path / "root"
    with pytest.raises(SweepInterrupted, match=r"^interrupted \(SIGINT\): 2 run\(s\) submitted to Slurm and "
                                               r"recorded, 2 not submitted"):
        submit.submit_spec(spec, root, "slurm", train_fn=FAKE, progress=False)
    assert len(FakeSlurm.arrays) == 1 and len(FakeSlurm.arrays[0][1]) == 2  # the first array went out whole
    assert [(p.returncode, p.stdout) for p in FakeSlurm.sbatch] == [(0, "submitted\n")]
    doc = record.load(root)
    jobs = {r["run_id"]: [j["job_id"] for j in r["jobs"]] for r in doc["runs"]}
    pre = [r["run_id"] for r in doc["runs"] if r["stage"] == "pretrain"]
    ext = [r["run_id"] for r in doc["runs"] if r["stage"] == "extend"]
    assert [jobs[r] for r in pre] == [["101_0"], ["101_1"]] and all(jobs[r] == [] for r in ext)
    sub = doc["submissions"][-1]
    assert sub["submitted"] == 2 and sorted(sub["interrupted"]["not_submitted"]) == sorted(ext)
    # a resubmit submits the rest, each after its parent's recorded job (still queued as far as status knows)
    monkeypatch.setattr(FakeSlurm, "ctrl_c_in_array", 0)
    assert submit.resubmit(root, "slurm", train_fn=FAKE, progress=False)["submitted"] == 2
    assert sorted(dep for dep, _ in FakeSlurm.arrays[1:]) == ["afterok:101_0", "afterok:101_1"]


BURST = """
import os, signal, subprocess, sys, threading, time
os.environ["SUBMITIT_EXECUTOR"] = "local"  # the task's SIGTERM handler is the local executor's
from costlaw.runs.config import RunConfig
from costlaw.sweeps.worker import RunTask
cfg = RunConfig.from_dict({"model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "head_dim": 16,
                                     "ffn_dim": 64, "vocab_size": 257}, "data": {"seq_len": 16},
                           "train": {"steps": 100000, "checkpoint_every": 0}})
task = RunTask(sys.argv[1], cfg.to_dict(), cfg.run_id, train_fn=sys.argv[2])

def burst():  # from another process, as a controller's forward comes: it needs no turn at this one's GIL
    while not (task.run_dir / "metrics.jsonl").exists():
        time.sleep(0.01)
    code = f"import os, signal; [os.kill({os.getpid()}, signal.SIGTERM) for _ in range(20000)]"
    subprocess.run([sys.executable, "-c", code])

threading.Thread(target=burst, daemon=True).start()
print(task()["status"])
"""


def test_a_burst_of_stop_signals_cannot_deadlock_the_task(tmp_path, job_env):
    """A job's SIGTERM comes twice at once (to its group, and forwarded by its controller): a handler that took a
    lock (an Event's set()) is re-entered inside its own critical section and waits forever, as this burst showed
    two times in three before RunTask.request_stop only set a flag. The task stops and returns."""
    from .conftest import REPO

    p = subprocess.run([sys.executable, "-c", BURST, str(tmp_path), FAKE], cwd=REPO, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == "preempted", p.stderr


SUBMITTER_BURST = """
import os, subprocess, sys
from costlaw.sweeps.interrupt import Interrupts
with Interrupts() as interrupts:
    code = (f"import os, signal; [os.kill({os.getpid()}, s) for _ in range(10000) "
            "for s in (signal.SIGINT, signal.SIGTERM)]")
    child = subprocess.Popen([sys.executable, "-c", code])
    while child.poll() is None:
        interrupts.sleep(0.01)
print(interrupts.is_set(), interrupts.count > 1)
"""


def test_a_burst_of_ctrl_c_cannot_deadlock_the_submitter(tmp_path):
    from .conftest import REPO

    p = subprocess.run([sys.executable, "-c", SUBMITTER_BURST], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.split() == ["True", "True"], p.stderr
