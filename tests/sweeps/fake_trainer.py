"""A small trainer with `runs.train.train_run`'s contract, for testing the sweep machinery (executors,
dependencies, preemption, status) in seconds and without torch: idempotent on DONE, resumes from its
checkpoint, stops at a step boundary when `stop_event` is set (summary "preempted", no DONE), and holds the run
directory's trainer lock (costmodel.core.runlock) for its whole life, as the real trainer does, so a second
trainer on the same directory is refused before it writes anything.

Knobs (environment, so they reach submitit subprocesses and Slurm jobs): COSTLAW_FAKE_STEP_S (seconds per
step, default 0.01); COSTLAW_FAKE_FAIL=1 makes runs whose data.corpus is "fail" fail; COSTLAW_FAKE_STOP_S keeps
training that many seconds after a stop request before checkpointing (a trainer slow to stop: a long step, an
evaluation).
"""

import json
import os
import time
from pathlib import Path

from costlaw.costmodel.core.files import write_json_atomic
from costlaw.costmodel.core.rundir import RunDir
from costlaw.costmodel.core.runlock import RunLock

CKPT = "checkpoint.json"


def train_run(cfg, run_dir, device="auto", resume=True, stop_event=None, sweep=None):
    rd = RunDir(run_dir)
    if rd.is_done():
        return rd.summary()
    with RunLock(rd.path):
        if rd.is_done():  # finished by the trainer that held the lock before us
            return rd.summary()
        return _train(cfg, rd, resume, stop_event, sweep)


def _train(cfg, rd, resume, stop_event, sweep):
    start, resumes = 0, 0
    ck = rd.file(CKPT)
    if resume and ck.exists():
        state = json.loads(ck.read_text())
        start, resumes = state["step"], state["resumes"] + 1
        rd.log(f"resumed from step {start}")
    else:
        rd.reset()
        base = Path(cfg.train.init_from).name if cfg.train.init_from else None
        rd.write_config(cfg, base_run_id=base, sweep=sweep)
        rd.log(f"start {cfg.run_id} pid {os.getpid()} slurm job {os.environ.get('SLURM_JOB_ID')}")
    if cfg.train.init_from and not (Path(cfg.train.init_from) / "DONE").exists():
        raise RuntimeError(f"init_from {cfg.train.init_from} has no DONE")
    step_s = float(os.environ.get("COSTLAW_FAKE_STEP_S", "0.01"))
    total = cfg.total_steps
    t0 = time.time()

    def save(step):
        write_json_atomic(ck, {"step": step, "resumes": resumes})

    def summary(status, step, error=None):
        s = {"run_id": cfg.run_id, "status": status, "steps": step, "tokens": step * cfg.tokens_per_step,
             "final_loss": 1.0 / (1 + step), "resumes": resumes, "started_at_step": start, "error": error,
             "wall_s": time.time() - t0, "env": {"slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                                                        "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}}
        rd.write_summary(s)
        return s

    if os.environ.get("COSTLAW_FAKE_FAIL") == "1" and cfg.data.corpus == "fail":
        rd.log("failing on purpose")
        s = summary("failed", start, error="RuntimeError: fake failure")
        rd.write_done(cfg.run_id, "failed")
        return s
    stop_s = float(os.environ.get("COSTLAW_FAKE_STOP_S", "0"))
    asked = None
    for step in range(start + 1, total + 1):
        if stop_event is not None and stop_event.is_set() and asked is None:
            asked = time.time()
        if asked is not None and time.time() - asked >= stop_s:
            save(step - 1)
            rd.log(f"preempted at step {step - 1}")
            return summary("preempted", step - 1)
        time.sleep(step_s)
        rd.append_metrics({"step": step, "tokens": step * cfg.tokens_per_step, "loss": 1.0 / (1 + step),
                           "time_s": time.time() - t0, "t": time.time()})
        if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
            save(step)
    save(total)
    s = summary("completed", total)
    rd.log(f"completed {total} steps")
    rd.write_done(cfg.run_id, "completed")
    return s


def dist_check(cfg, run_dir, device="auto", resume=True, stop_event=None, sweep=None, distributed=None):
    """Each task joins a gloo process group from the env:// variables the worker exported and all-reduces
    its rank; rank 0 writes what it saw."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        t = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(t)
        seen = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
        out = Path(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / f"rank{dist.get_rank()}.json", {"sum": t.item(), "env": seen,
                                                                "given": distributed is not None})
    finally:
        dist.destroy_process_group()
    return {"status": "completed", "sum": t.item()}
