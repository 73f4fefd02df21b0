"""One trainer per run directory (costmodel/core/runlock.py): the trainer holds `trainer.lock` for its whole life,
a second trainer is refused before it writes anything, `trainer_alive` answers by flock on this host and by the
heartbeat for another host, a dead holder's lock is taken over, and every way a run ends releases the lock."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from costlaw.costmodel.core import runlock
from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.rundir import CHECKPOINT, LOCK, RunDir
from costlaw.costmodel.core.runlock import STALE_S, RunLock, trainer_alive
from costlaw.runs.train import train_run
from tests.runs.test_train import REPO, _cli, _two_ranks, run_dir, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")

HOLD = """
import sys, time
from costlaw.costmodel.core.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
if sys.argv[2] == "die":
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(600)
"""


def hold_in_child(path: Path, mode: str = "hold") -> subprocess.Popen:
    """Another process holding `path`'s lock (or taking it and dying by SIGKILL, mode "die")."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), mode], cwd=REPO, stdout=subprocess.PIPE, text=True)
    if mode == "hold":
        assert p.stdout.readline().strip() == "held"
    else:
        p.wait(timeout=60)
    return p


def test_held_alive_released_gone(tmp_path):
    rd = tmp_path / "run"
    assert trainer_alive(rd) is None
    with RunLock(rd) as lock:
        info = trainer_alive(rd)
        assert info is not None and info["checked"] == "flock"
        assert info["pid"] == os.getpid() and info["pgid"] == os.getpgid(0) and info["role"] == "trainer"
        assert json.loads((rd / LOCK).read_text())["hostname"] == info["hostname"] == lock.info["hostname"]
        with pytest.raises(CostlawError, match=r"^run_dir: .* is being trained by pid \d+ on "):
            RunLock(rd).acquire()  # a second holder, even in this process
    assert trainer_alive(rd) is None and not (rd / LOCK).exists()


def test_second_trainer_is_refused_before_writing(tmp_path):
    cfg = tiny_cfg(steps=5)
    rd = run_dir(tmp_path, cfg)
    holder = hold_in_child(rd)
    try:
        assert trainer_alive(rd)["pid"] == holder.pid
        with pytest.raises(CostlawError, match=f"^run_dir: .* is being trained by pid {holder.pid} ") as e:
            train_run(cfg, rd, device="cpu", progress=False)
        assert "\n" not in str(e.value)
        assert sorted(p.name for p in rd.iterdir()) == [LOCK]  # nothing of the refused trainer's
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock file stays, but no live process holds it, so a trainer takes over
    assert (rd / LOCK).exists() and trainer_alive(rd) is None
    assert train_run(cfg, rd, device="cpu", progress=False)["status"] == "completed"
    assert not (rd / LOCK).exists()


@pytest.mark.slow
def test_two_trainers_on_one_run_directory(tmp_path):
    """Two `costlaw run` processes on one run: the second is refused in one line (exit 2) and writes nothing; the
    first trains on, is alive while it does, and ends without a lock."""
    cfg = tiny_cfg(steps=100000, train={"checkpoint_every": 0, "log_every": 50})
    toml = tmp_path / "run.toml"
    toml.write_text(cfg.to_toml())
    rd = run_dir(tmp_path, cfg)
    first = _cli([str(toml), "--root", str(tmp_path), "--device", "cpu", "--quiet"])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (rd / "metrics.jsonl").exists():
            time.sleep(0.05)
        alive = trainer_alive(rd)
        assert alive is not None and alive["pid"] == first.pid, alive
        created = json.loads((rd / "config.json").read_text())["created"]
        second = _cli([str(toml), "--root", str(tmp_path), "--device", "cpu", "--resume"])
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2 and err.count("\n") == 1, err
        assert f"is being trained by pid {first.pid} " in err
        assert json.loads((rd / "config.json").read_text())["created"] == created
        assert (rd / "train.log").read_text().count(f"run {cfg.run_id} ") == 1  # only the first one started
        assert first.poll() is None  # the refusal did not disturb the first
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 3 and RunDir(rd).status() == "preempted"  # stopped with a checkpoint
    assert trainer_alive(rd) is None and not (rd / LOCK).exists()


def test_lock_released_however_the_run_ends(tmp_path, stop_after):
    done = tiny_cfg(steps=6)
    assert train_run(done, run_dir(tmp_path, done), device="cpu", progress=False)["status"] == "completed"
    assert not (run_dir(tmp_path, done) / LOCK).exists()
    pre = tiny_cfg(steps=12, train={"checkpoint_every": 0})
    assert train_run(pre, run_dir(tmp_path, pre), device="cpu", stop_event=stop_after(3),
                     progress=False)["status"] == "preempted"
    assert not (run_dir(tmp_path, pre) / LOCK).exists()
    div = tiny_cfg(steps=30, train={"lr": 10.0, "warmup_frac": 0.0, "log_every": 1, "grad_clip": 0.0})
    assert train_run(div, run_dir(tmp_path, div), device="cpu", progress=False)["status"] == "diverged"
    assert not (run_dir(tmp_path, div) / LOCK).exists()
    bad = tiny_cfg(corpus=str(tmp_path / "no-such-corpus"))
    with pytest.raises(CostlawError):
        train_run(bad, run_dir(tmp_path, bad), device="cpu", progress=False)
    assert RunDir(run_dir(tmp_path, bad)).status() == "failed" and not (run_dir(tmp_path, bad) / LOCK).exists()

    class Interrupt(threading.Event):
        """Ctrl-C at the third step boundary."""

        n = 3

        def is_set(self):
            self.n -= 1
            if self.n < 0:
                raise KeyboardInterrupt
            return False

    ki = tiny_cfg(steps=12, train={"checkpoint_every": 0})
    rd = run_dir(tmp_path / "ki", ki)
    with pytest.raises(KeyboardInterrupt):
        train_run(ki, rd, device="cpu", stop_event=Interrupt(), progress=False)
    assert (rd / "config.json").exists() and not (rd / LOCK).exists()


def _foreign(rd: Path, age_s: float, **info) -> None:
    rd.mkdir(parents=True, exist_ok=True)
    (rd / LOCK).write_text(json.dumps({"pid": 4242, "pgid": 4242, "hostname": "another-node", "started": "then",
                                       **info}))
    t = time.time() - age_s
    os.utime(rd / LOCK, (t, t))


def test_holder_on_another_host_by_heartbeat(tmp_path, monkeypatch):
    """flock cannot see across NFS nodes: a holder on another host is alive while its heartbeat is fresh."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    rd = tmp_path / "run"
    _foreign(rd, 10)
    info = trainer_alive(rd)
    assert info["hostname"] == "another-node" and info["checked"] == "heartbeat" and info["heartbeat_age_s"] >= 9
    with pytest.raises(CostlawError, match="is being trained by pid 4242 on another-node"):
        RunLock(rd).acquire()  # our flock succeeds (the holder is not on this host), the heartbeat refuses
    assert json.loads((rd / LOCK).read_text())["hostname"] == "another-node"  # refused: nothing written
    _foreign(rd, STALE_S + 5)
    assert trainer_alive(rd) is None
    with RunLock(rd):  # a silent holder is gone: taken over
        assert trainer_alive(rd)["pid"] == os.getpid()
    # Slurm requeues a preempted job under the same job id, on any node, after killing the old one
    _foreign(rd, 10, slurm_job_id="777")
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    with RunLock(rd) as lock:
        assert lock.info["slurm_job_id"] == "777"


def test_heartbeat_refreshes_mtime(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "HEARTBEAT_S", 0.05)
    rd = tmp_path / "run"
    with RunLock(rd):
        old = time.time() - 1000
        os.utime(rd / LOCK, (old, old))
        deadline = time.time() + 10
        while time.time() < deadline and (rd / LOCK).stat().st_mtime < old + 1:
            time.sleep(0.02)
        assert trainer_alive(rd)["heartbeat_age_s"] < 5


def test_lock_of_a_dead_trainer_is_taken_over(tmp_path):
    """A trainer killed by SIGKILL leaves its lock file; the kernel dropped its flock, so it is not alive and the
    next trainer takes the directory over."""
    cfg = tiny_cfg(steps=5)
    rd = run_dir(tmp_path, cfg)
    dead = hold_in_child(rd, "die")
    assert dead.returncode == -signal.SIGKILL
    assert json.loads((rd / LOCK).read_text())["pid"] == dead.pid
    assert trainer_alive(rd) is None
    assert train_run(cfg, rd, device="cpu", progress=False)["status"] == "completed"
    assert (rd / CHECKPOINT).exists() and not (rd / LOCK).exists()


def test_ranks_all_stop_when_rank_0_is_refused(tmp_path):
    """Rank 0 alone takes the lock; when it is refused, every rank stops with an error naming the run directory."""
    cfg = tiny_cfg(steps=4, train={"grad_accum": 2})
    rd = run_dir(tmp_path, cfg)
    with RunLock(rd):
        ranks = _two_ranks(cfg, rd, timeout=180)
    for rc, _, err in ranks:
        assert rc != 0 and "run_dir: " in err, err[-2000:]
    assert "is being trained by pid" in ranks[0][2] and "rank 0 could not lock" in ranks[1][2]
    assert sorted(p.name for p in rd.iterdir()) == []
