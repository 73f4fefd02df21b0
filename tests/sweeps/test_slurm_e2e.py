"""The must-show: sweeps/examples/tiny.toml through real Slurm with the real trainer on CPU.

plan -> submit --executor slurm (job arrays) -> one running job preempted (submitit's `_interrupt`: SIGTERM,
then USR2; the worker checkpoints at a step boundary and submitit requeues it) -> every run completes, the
preempted one from its checkpoint -> costlaw ingest -> costlaw query counts the completed runs = the plan.
Everything goes through the `costlaw` CLI in subprocesses, as a user would run it.
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

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "sweeps" / "examples" / "tiny.toml"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def costlaw(*args, check=True, timeout=300):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, "-m", "costlaw", *args], capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=REPO)
    if check:
        assert p.returncode == 0, f"costlaw {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def status(root):
    return json.loads(costlaw("sweep", "status", "--root", str(root), "--json").stdout)


def scontrol_job(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout


def job_pids(job_id: str) -> list[int]:
    """The python processes of one array task (this is a one-node cluster: they run here)."""
    array, task = job_id.split("_")
    want = {f"SLURM_ARRAY_JOB_ID={array}".encode(), f"SLURM_ARRAY_TASK_ID={task}".encode()}
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            env = set((d / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if b"submitit.core._submit" in cmd and want <= env:
            pids.append(int(d.name))
    return pids


def test_tiny_sweep_through_slurm_with_a_preemption(tmp_path):
    from submitit import SlurmJob

    root = tmp_path / "sweep"
    plan = json.loads(costlaw("sweep", "plan", str(TINY), "--root", str(root), "--json").stdout)
    planned = {r["run_id"]: r for r in plan["runs"]}
    assert len(planned) == plan["totals"]["runs"] >= 3

    t0 = time.monotonic()
    out = costlaw("sweep", "submit", str(TINY), "--executor", "slurm", "--root", str(root))
    assert "costlaw ingest --root" in out.stdout
    doc = json.loads((root / "sweep.json").read_text())
    assert {r["run_id"] for r in doc["runs"]} == set(planned)
    jobs = {r["run_id"]: r["jobs"][-1] for r in doc["runs"]}
    array = {j["job_id"].split("_")[0] for j in jobs.values()}
    assert len(array) == 1 and all(re.fullmatch(r"\d+_\d+", j["job_id"]) for j in jobs.values())

    # preempt the first run while it trains: after a few logged steps, well before its last
    victim = doc["runs"][0]["run_id"]
    total = planned[victim]["steps"]
    vdir = root / "runs" / victim
    deadline = time.monotonic() + 240
    seen = 0
    while time.monotonic() < deadline:
        lines = (vdir / "metrics.jsonl").read_text().splitlines() if (vdir / "metrics.jsonl").exists() else []
        seen = json.loads(lines[-1])["step"] if lines else 0
        if seen >= 10:
            break
        time.sleep(0.05)
    # freeze the task so the signals land mid-training however fast this machine trains; the preemption
    # itself is submitit's: SIGTERM (ignored) then USR2 (checkpoint + requeue) through scancel
    pids = job_pids(jobs[victim]["job_id"])
    assert pids, "no process found for the running task"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        lines = (vdir / "metrics.jsonl").read_text().splitlines()
        seen = json.loads(lines[-1])["step"]
        assert 10 <= seen < total, f"the run did not train within the deadline (last step {seen})"
        SlurmJob(folder=jobs[victim]["folder"], job_id=jobs[victim]["job_id"])._interrupt()
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)

    st = status(root)
    deadline = time.monotonic() + 600
    while (st["counts"]["pending"] or st["counts"]["running"]) and time.monotonic() < deadline:
        time.sleep(3)
        st = status(root)
    elapsed = time.monotonic() - t0
    human = costlaw("sweep", "status", "--root", str(root)).stdout
    assert st["counts"]["completed"] == len(planned), human
    print(f"tiny sweep through Slurm with one preemption: {elapsed:.0f} s")

    # the victim stopped at a step boundary, was requeued by Slurm, and resumed from its checkpoint
    log = (vdir / "train.log").read_text()
    stopped = re.search(r"preempted at step (\d+); checkpoint written", log)
    assert stopped, log
    k = int(stopped.group(1))
    assert 10 <= k < total
    assert f"resumed at step {k}" in log, log
    summary = json.loads((vdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == total == summary["total_steps"]
    steps = [json.loads(line)["step"] for line in (vdir / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == total and max(steps) == total
    assert re.search(r"Restarts=[1-9]", scontrol_job(jobs[victim]["job_id"])), scontrol_job(jobs[victim]["job_id"])
    stdout = Path(str(jobs[victim]["folder"]).replace("%j", jobs[victim]["job_id"]))
    assert "checkpoint requested" in "".join(p.read_text() for p in stdout.glob("*_log.out"))
    for rid, r in planned.items():  # every run trained exactly its planned steps
        s = json.loads((root / "runs" / rid / "summary.json").read_text())
        assert s["steps"] == r["steps"] and s["env"]["slurm_array_job_id"] in array

    # ingest, then count in SQL
    db = root / "results.duckdb"
    costlaw("ingest", "--root", str(root), "--db", str(db))
    q = costlaw("query", "--db", str(db), "--format", "json",
                "SELECT count(*) AS n FROM runs WHERE status = 'completed' AND sweep = 'tiny'")
    assert json.loads(q.stdout)[0]["n"] == len(planned)
    q = costlaw("query", "--db", str(db), "--format", "json", "SELECT run_id, steps FROM runs")
    assert {r["run_id"]: r["steps"] for r in json.loads(q.stdout)} == {rid: r["steps"] for rid, r in planned.items()}
