"""One trainer per run directory, whatever happens to the processes that launched it (issue 20).

A real local sweep: `costlaw sweep submit` in a process of its own, its submitit controller killed while the
trainer trains (the trainer holds the run's lock, costmodel.core.runlock); status says running from the lock,
submit and resubmit refuse the run, and at the end exactly one writer wrote the run directory: metrics lines unique
and in order, one start, one summary, one DONE. The fake trainer takes the same RunLock the real trainer takes in
runs/train.py's train_run; the last test runs the real trainer.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from costlaw.costmodel.core.rundir import RunDir
from costlaw.costmodel.core.runlock import trainer_alive
from costlaw.sweeps import record, status, submit
from costlaw.sweeps.jobs import pid_alive

from .conftest import FAKE, REPO, TINY_POINT

# the CLI itself, with the sweep's tasks pointed at the fake trainer
DRIVER = f"""
import sys
from costlaw.cli import main
from costlaw.sweeps import submit
for f in (submit.submit_spec, submit.resubmit):
    f.__kwdefaults__["train_fn"] = {FAKE!r}
sys.exit(main(sys.argv[1:]))
"""

ONE = """
[sweep]
name = "one"
""" + TINY_POINT + """[base.train]
steps = {steps}
checkpoint_every = 10
[resources]
cpus = 1
time_min = 5
signal_delay_s = 30
"""


def cli(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, *map(str, argv)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_cli(*argv) -> tuple[int, str, str]:
    p = cli(*argv)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


def wait_for(what, timeout=60.0, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = what()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def training(root: Path, min_lines: int = 5):
    """(run id, the trainer's lock record) once the sweep's run is being trained and has logged `min_lines`."""
    def ready():
        runs = list((root / "runs").glob("*")) if (root / "runs").exists() else []
        if len(runs) != 1:
            return None
        holder = trainer_alive(runs[0])
        return (runs[0].name, holder) if holder and len(RunDir(runs[0]).metrics()) >= min_lines else None

    return wait_for(ready)


def assert_one_writer(rd: RunDir, steps: int, start_marker: str = "start ") -> None:
    """Exactly one trainer wrote `rd`: its metrics are steps 1..N once each, in order; it started once and
    finished once; one completed summary and DONE."""
    assert [m["step"] for m in rd.metrics()] == list(range(1, steps + 1))
    log = rd.file("train.log").read_text()
    assert log.count(start_marker) == 1 and log.count("completed") == 1, log
    assert rd.summary()["status"] == "completed" and rd.summary()["steps"] == steps
    assert json.loads(rd.file("DONE").read_text())["status"] == "completed"
    assert not rd.file("trainer.lock").exists()


def test_killed_controller_never_leaves_two_writers(tmp_path, job_env):
    job_env.setenv("COSTLAW_FAKE_STEP_S", "0.05")  # 120 steps: 6 s
    spec = tmp_path / "one.toml"
    spec.write_text(ONE.format(steps=120))
    root = tmp_path / "root"
    sweeper = cli("sweep", "submit", spec, "--executor", "local", "--root", root)
    rid, holder = training(root)
    job = record.last_job(record.load(root)["runs"][0])
    controller = int(job["job_id"])
    # the trainer is not the controller, and it records the group the executor tracks (the controller's session)
    assert holder["pid"] != controller and holder["pgid"] == job["pgid"] == controller
    os.kill(controller, signal.SIGKILL)
    wait_for(lambda: not pid_alive(controller))

    st = status.collect(root)
    entry = st["runs"][0]
    assert entry["state"] == "running" and entry["trainer"]["pid"] == holder["pid"], entry
    rc, out, _ = run_cli("sweep", "status", "--root", root)
    assert rc == 0 and re.search(rf"{rid} .* running ", out), out

    # neither resubmit nor submit starts a second trainer beside the live one
    rc, _, err = run_cli("sweep", "resubmit", "--root", root, "--failed")
    assert rc == 0, err
    assert f"not resubmitting {rid}" in err and f"pid {holder['pid']}" in err and "holds its lock" in err
    rc, _, err = run_cli("sweep", "submit", spec, "--executor", "local", "--root", root)
    assert rc == 0, err
    assert f"not submitting {rid}" in err and "nothing to submit" in err
    assert len(record.load(root)["runs"][0]["jobs"]) == 1  # no second job was ever started

    out, err = sweeper.communicate(timeout=60)
    assert sweeper.returncode == 0, err
    assert f"{rid}: its controller (pid {controller}) exited but its trainer (pid {holder['pid']}) still runs" in err
    assert "1 completed" in err and not re.search(r"\b\w+\.py:\d+", err)  # no source locations on sweep lines
    assert_one_writer(RunDir(root / "runs" / rid), 120)
    assert status.collect(root)["counts"]["completed"] == 1


def test_orphaned_trainer_outlives_its_submitter_and_controller(tmp_path, job_env):
    """Both the submitting process and the controller killed: the trainer trains on alone; status finds it by its
    lock and process group, resubmit refuses it, and it finishes as the only writer."""
    job_env.setenv("COSTLAW_FAKE_STEP_S", "0.05")
    spec = tmp_path / "one.toml"
    spec.write_text(ONE.format(steps=100))
    root = tmp_path / "root"
    sweeper = cli("sweep", "submit", spec, "--executor", "local", "--root", root)
    rid, holder = training(root)
    controller = int(record.last_job(record.load(root)["runs"][0])["job_id"])
    sweeper.kill()
    sweeper.wait()
    os.kill(controller, signal.SIGKILL)
    wait_for(lambda: not pid_alive(controller))
    assert status.collect(root)["runs"][0]["state"] == "running"
    sub = submit.resubmit(root, train_fn=FAKE, progress=False)
    assert sub["submitted"] == 0 and len(record.load(root)["runs"][0]["jobs"]) == 1
    wait_for(lambda: trainer_alive(root / "runs" / rid) is None, timeout=60)
    assert_one_writer(RunDir(root / "runs" / rid), 100)
    assert status.collect(root)["runs"][0]["state"] == "completed"


@pytest.mark.slow
def test_killed_controller_with_the_real_trainer(tmp_path):
    """The same with runs/train.py's trainer (its lock taken in train_run), through the plain CLI."""
    spec = tmp_path / "real.toml"
    spec.write_text(ONE.format(steps=4000).replace("checkpoint_every = 10", "checkpoint_every = 500\nlog_every = 10\n"
                                                   "batch_size = 4\nprecision = \"fp32\"\ncompile = \"off\"")
                    + "[base.eval]\nval_tokens = 256\nposition_buckets = 2\nretrieval_samples = 0\n"
                      "decode_tokens = 0\n")
    root = tmp_path / "root"
    sweeper = subprocess.Popen([sys.executable, "-m", "costlaw", "sweep", "submit", str(spec), "--executor", "local",
                                "--root", str(root), "--device", "cpu"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    rid, holder = training(root, min_lines=3)
    controller = int(record.last_job(record.load(root)["runs"][0])["job_id"])
    assert holder["pid"] != controller and holder["pgid"] == controller
    os.kill(controller, signal.SIGKILL)
    wait_for(lambda: not pid_alive(controller))
    assert status.collect(root)["runs"][0]["state"] == "running"
    p = subprocess.run([sys.executable, "-m", "costlaw", "sweep", "resubmit", "--root", str(root), "--failed",
                        "--device", "cpu"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and f"not resubmitting {rid}" in p.stderr, p.stderr
    out, err = sweeper.communicate(timeout=300)
    assert sweeper.returncode == 0, err
    rd = RunDir(root / "runs" / rid)
    steps = [m["step"] for m in rd.metrics()]
    assert steps == list(range(10, 4001, 10))
    log = rd.file("train.log").read_text()
    assert log.count(f"run {rid} (") == 1 and log.count("completed: steps 4000") == 1, log
    assert rd.summary()["status"] == "completed" and rd.done()["status"] == "completed"
    assert not rd.file("trainer.lock").exists()
