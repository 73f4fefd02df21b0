"""Data parallel on CPU (two gloo ranks): the same loss curve as one process with the same global batch, one
writer (rank 0) per run directory, and a two-rank run killed with SIGKILL resumes to the uninterrupted result."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from costlaw.costmodel.core.rundir import CHECKPOINT_HEADER, LOCK
from costlaw.runs.train import train_run
from tests.runs.test_train import _DDP_WORKER, REPO, run_dir, tiny_cfg

pytestmark = [pytest.mark.usefixtures("one_thread", "private_cache"), pytest.mark.slow]


def _start_ranks(cfg, rd, world: int = 2) -> list[subprocess.Popen]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [subprocess.Popen([sys.executable, "-c", _DDP_WORKER, json.dumps(cfg.to_dict()), str(rd)], cwd=REPO,
                             env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                  "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world),
                                  "TORCH_DISTRIBUTED_BACKEND": "gloo", "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in range(world)]


def _finish(procs, timeout=600) -> None:
    outs = [p.communicate(timeout=timeout) for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[1][-2000:] for o in outs)


def _curve(rd) -> list[tuple[int, int, float, float]]:
    """Per logged step (the last line wins, as in the store: a resumed run re-logs the steps after its checkpoint)."""
    rows = {r["step"]: r for r in map(json.loads, (rd / "metrics.jsonl").read_text().splitlines())}
    return [(r["step"], r["tokens"], r["loss"], r["grad_norm"]) for _, r in sorted(rows.items())]


def test_two_ranks_trace_one_process_loss_curve_and_only_rank_0_writes(tmp_path):
    cfg = tiny_cfg(steps=20, train={"grad_accum": 2, "checkpoint_every": 10, "log_every": 2})
    one = run_dir(tmp_path / "one", cfg)
    train_run(cfg, one, device="cpu", progress=False)
    rd = run_dir(tmp_path / "ddp", cfg)
    _finish(_start_ranks(cfg, rd))
    a, b = _curve(one), _curve(rd)
    assert [r[:2] for r in a] == [r[:2] for r in b] and len(a) == 10  # the same steps and token counts
    for (_, _, la, ga), (_, _, lb, gb) in zip(a, b):
        assert lb == pytest.approx(la, rel=1e-4) and gb == pytest.approx(ga, rel=1e-3)
    # one writer: the run directory holds exactly one set of files, and nothing was written beside it
    assert sorted(p.name for p in rd.iterdir()) == sorted(p.name for p in one.iterdir())
    assert sorted(p.name for p in rd.parent.iterdir()) == [cfg.run_id]
    assert not (rd / LOCK).exists()  # released by rank 0 when the run ended
    log = (rd / "train.log").read_text()
    assert log.count("evaluating") == 1 and "rank 0 of 2" in log


def test_two_ranks_killed_resume_to_the_uninterrupted_run(tmp_path):
    cfg = tiny_cfg(steps=160, train={"grad_accum": 2, "checkpoint_every": 20, "log_every": 10})
    whole = run_dir(tmp_path / "whole", cfg)
    _finish(_start_ranks(cfg, whole))
    rd = run_dir(tmp_path / "killed", cfg)
    procs = _start_ranks(cfg, rd)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill both ranks once a checkpoint exists, well before the end
        header = rd / CHECKPOINT_HEADER
        if header.exists() and json.loads(header.read_text() or "{}").get("step", 0) >= 40:
            break
        if any(p.poll() is not None for p in procs):
            pytest.fail("a rank ended before it could be killed: " + procs[0].communicate()[1][-2000:])
        time.sleep(0.05)
    else:
        pytest.fail("no checkpoint within 300 s")
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert not (rd / "DONE").exists()
    _finish(_start_ranks(cfg, rd))  # the same command again: both ranks resume from rank 0's checkpoint
    s = json.loads((rd / "summary.json").read_text())
    w = json.loads((whole / "summary.json").read_text())
    assert s["status"] == "completed" and s["steps"] == 160
    assert s["final_loss"] == pytest.approx(w["final_loss"], rel=1e-6)
    assert s["val_loss"] == pytest.approx(w["val_loss"], rel=1e-6)
    curve = _curve(rd)
    assert [r[0] for r in curve] == list(range(10, 161, 10))
    assert curve == pytest.approx(_curve(whole), rel=1e-6)
    assert "resumed at step" in (rd / "train.log").read_text()
