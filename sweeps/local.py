"""The local executor: submitit's LocalExecutor, throttled to `max_parallel` trainers, one trainer per run.

submitit starts one controller per job, which starts the task that trains; the controller's pid is the job id.
Each controller starts here in a session of its own, so its process group holds it and its tasks, the group's id
(= the job id) is recorded with the job, and the trainer writes the same group into its trainer.lock. So:

- a trainer whose controller died is still seen (its group, its lock): it counts against `max_parallel`, keeps
  its GPUs, and its run is "running", never resubmitted beside it;
- trainers of an earlier submission that still run (an interrupted submit hands its slow ones over) count too;
- Ctrl-C at the terminal reaches only the submitter, which stops the trainers itself: SIGTERM to each running
  job's group, which the task turns into a stop request (sweeps.worker), so every trainer checkpoints at its
  next step and writes a "preempted" summary; after a bounded wait the submitter records what happened in
  sweep.json and raises SweepInterrupted (exit 3). A trainer still checkpointing then is left to finish alone:
  it holds its lock until it exits, so status and resubmit see it.

Waiting runs start in largest_first's order (the longest chain of work first), or with `order = "chains"` the
runs whose parent has completed first (sweeps.select.start_order).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import submitit
from submitit.local.local import LocalJob

from costlaw.costmodel.core.rundir import RunDir, run_path
from costlaw.costmodel.core.runlock import trainer_alive
from costlaw.sweeps import preflight, record
from costlaw.sweeps.fuse import members
from costlaw.sweeps.interrupt import Interrupts, SweepInterrupted
from costlaw.sweeps.jobs import forget_groups, group_alive, local_job_alive
from costlaw.sweeps.preflight import default_parallel, thread_share, visible_gpus
from costlaw.sweeps.select import largest_first, start_order

RESEND_S = 2.0  # an interrupted submitter repeats its stop request: a task may not have had its handler yet


def log(msg: str) -> None:
    print(f"[costlaw sweep] {msg}", file=sys.stderr, flush=True)


class SessionLocalExecutor(submitit.LocalExecutor):
    """submitit's LocalExecutor, but each controller leads a new session (its pid is its process group's id): a
    Ctrl-C at the terminal does not reach it, and its group outlives it while a task trains."""

    def _submit_command(self, command: str) -> LocalJob:
        # submitit.local.local.LocalExecutor._submit_command and start_controller (submitit 1.5), with
        # start_new_session=True
        ntasks = self.parameters.get("tasks_per_node", 1)
        n_gpus = self.parameters.get("gpus_per_node", 0)
        visible = self.parameters.get("visible_gpus", ())
        gpus = range(n_gpus) if visible == () else visible[:n_gpus]
        setup = self.parameters.get("setup", ())
        env = dict(os.environ)
        env.update(SUBMITIT_LOCAL_NTASKS=str(ntasks), SUBMITIT_LOCAL_COMMAND=command,
                   SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * self.parameters.get("timeout_min", 2.0))),
                   SUBMITIT_LOCAL_SIGNAL_DELAY_S=str(int(self.parameters.get("signal_delay_s", 30))),
                   SUBMITIT_LOCAL_NODEID="0", SUBMITIT_LOCAL_JOB_NUM_NODES="1",
                   SUBMITIT_STDERR_TO_STDOUT="1" if self.parameters.get("stderr_to_stdout", False) else "",
                   SUBMITIT_EXECUTOR="local", CUDA_VISIBLE_DEVICES=",".join(str(k) for k in gpus),
                   SUBMITIT_LOCAL_WITH_SHELL="1" if setup else "")
        cmd: list[str] | str = [sys.executable, "-m", "submitit.local._local", str(self.folder)]
        if setup:
            cmd = " && ".join([*setup, shlex.join(cmd)])
        process = subprocess.Popen(cmd, shell=bool(setup), env=env, start_new_session=True)
        return LocalJob(folder=self.folder, job_id=str(process.pid), process=process, tasks=list(range(ntasks)))


def _alive(root: Path, run_id: str, job: dict | None) -> bool:
    """The run's trainer holds its lock, or its local job's group still has a process (a trainer starting up)."""
    if trainer_alive(run_path(root, run_id)) is not None:
        return True
    return job is not None and job.get("executor") == "local" and local_job_alive(job)


def _final(root: Path, run_id: str) -> str:
    from costlaw.sweeps.status import dir_status

    st = dir_status(RunDir(run_path(root, run_id)))
    return st if st in ("completed", "diverged", "failed", "preempted") else "failed"  # no summary: it died


def run_local(todo, tasks_for, note, folder: Path, root: Path, doc: dict, max_parallel: int | None,
              progress: bool | None, runs_per_gpu: int, watched: dict, resumable: dict,
              interrupts: Interrupts, order: str = "longest") -> dict:
    """Run `todo` (PlannedRuns) here, at most `max_parallel` trainers at a time counting those of `watched` (run id
    -> last job: live runs this submission did not start), children after their parents. A watched run of
    `resumable` (run id -> PlannedRun) that ends preempted (an earlier submission's stop request, handed over) is
    continued here, as todo's are. Returns the outcome counts; raises SweepInterrupted (after recording it in doc)
    on Ctrl-C or SIGTERM."""
    from costlaw.costmodel.core.progress import Progress

    gpus = visible_gpus()
    # one slot per (GPU, packed run); slots interleave GPUs so runs spread over GPUs before packing
    slots = [g for _ in range(runs_per_gpu) for g in gpus]
    limit = max_parallel or default_parallel(todo, slots)
    free_gpus = list(slots)
    watched = {rid: job for rid, job in watched.items() if job is None or job.get("executor") != "slurm"}
    for job in watched.values():
        for g in (job or {}).get("gpus", []):
            if g in free_gpus:
                free_gpus.remove(g)
    pending = largest_first(todo, root)
    running: dict[str, tuple] = {}  # run id (a fused group's id) -> (job, its record, GPUs, PlannedRun or group)
    orphaned: dict = {}  # run id -> PlannedRun of this submission's runs watched after their controller exited
    outcome: dict[str, str] = {}
    ids = {m.run_id for r in todo for m in members(r)}
    t0 = time.monotonic()
    bar = Progress(len(ids), f"{doc['name']} (local, {limit} at a time)", "runs", every_s=None,
                   bar=False if progress is False else None)
    bar.log(f"[costlaw sweep] {bar.desc}: {len(ids)} runs"
            + (f"; {len(watched)} trainers of an earlier submission still run and count" if watched else ""))
    cpus = max((r.resources.cpus for r in todo), default=1)
    share = thread_share(cpus, limit)
    if share < cpus:
        bar.log(f"[costlaw sweep] {limit} trainers at a time with resources.cpus = {cpus} would oversubscribe this "
                f"machine's {preflight.machine_cpus()} CPUs: each uses {share} thread{'s' if share > 1 else ''}")

    sub = doc["submissions"][-1]

    def advance(msg: str) -> None:
        bar.update(1)
        bar.log(f"[costlaw sweep] [{bar.done:.0f}/{len(ids)}] {msg}")

    def busy() -> bool:  # runs of this submission still to start, running, or training without their controller
        return bool(pending or running or ids & set(watched))

    try:
        while busy():
            if interrupts.is_set():
                break
            for key, (job, rec, g, unit) in list(running.items()):
                if not job.done():
                    continue
                del running[key]
                left = [m for m in members(unit) if _alive(root, m.run_id, rec)]
                for m in left:  # the controller is gone but its trainer trains on: watch it
                    holder = trainer_alive(run_path(root, m.run_id)) or {}
                    bar.log(f"[costlaw sweep] {m.run_id}: its controller (pid {job.job_id}) exited but its trainer "
                            f"(pid {holder.get('pid', '?')}) still runs; watching it")
                    watched[m.run_id] = rec if m is left[0] else {**rec, "gpus": []}  # one holder of the GPUs
                    orphaned[m.run_id] = m
                if not left:
                    free_gpus.extend(g)
                for m in members(unit):
                    if m not in left:
                        outcome[m.run_id] = _final(root, m.run_id)
                        advance(f"{m.run_id} {m.stage} {m.label or ''}: {outcome[m.run_id]}")
                record.save(root, doc)
            for rid, rec in list(watched.items()):
                if _alive(root, rid, rec):
                    continue
                del watched[rid]
                free_gpus.extend((rec or {}).get("gpus", []))
                ended = _final(root, rid)
                if ended == "preempted" and rid in resumable and rid not in ids:
                    bar.log(f"[costlaw sweep] {rid}: its handed-over trainer stopped at a checkpoint; continuing it")
                    pending.append(resumable[rid])
                    ids.add(rid)
                    bar.total += 1
                    sub["submitted"] += 1
                    sub.setdefault("continued", []).append(rid)
                    continue
                outcome[rid] = ended
                if rid in ids:
                    advance(f"{rid}: {outcome[rid]} (its trainer, watched after its controller exited, ended)")
                else:
                    bar.log(f"[costlaw sweep] {rid}: {outcome[rid]} (a trainer of an earlier submission ended)")
            later = {rid for rid in ids if outcome.get(rid) != "completed"} if order != "longest" else set()
            for r in start_order(pending, order, later):
                if len(running) + len(watched) >= limit:
                    break
                if r.parent_id in ids or r.parent_id in watched:
                    po = outcome.get(r.parent_id)
                    if po is None:
                        continue  # parent still to run
                    if po != "completed":
                        pending.remove(r)
                        outcome[r.run_id] = "skipped"
                        advance(f"{r.run_id} {r.stage} {r.label}: skipped (parent {r.parent_id} {po})")
                        continue
                g = _distinct(free_gpus, r.resources.gpus)
                if g is None:
                    continue
                for x in g:
                    free_gpus.remove(x)
                ex = SessionLocalExecutor(folder=folder / "%j", max_num_timeout=r.resources.max_num_timeout)
                ex.update_parameters(timeout_min=r.resources.time_min, signal_delay_s=r.resources.signal_delay_s,
                                     tasks_per_node=max(1, r.resources.gpus), gpus_per_node=r.resources.gpus,
                                     visible_gpus=g, setup=list(r.resources.setup))
                # no signal can come between these lines: the handler only counts (and the controller must not
                # inherit a blocked SIGTERM, as it would from interrupts.deferred)
                job = ex.submit(tasks_for(r, limit))
                forget_groups()
                rec = note(r.run_id, job.job_id, "local", folder / "%j", pgid=int(job.job_id), gpus=list(g))
                running[r.run_id] = (job, rec, g, r)
                pending.remove(r)
                bar.log(f"[costlaw sweep] started {r.run_id} {r.stage} {r.label or ''} (pid {job.job_id})")
                record.save(root, doc)
            if busy():
                interrupts.sleep(0.5)
        if interrupts.is_set():
            mine = {m.run_id: (job, rec, g, m) for job, rec, g, unit in running.values() for m in members(unit)}
            mine.update({rid: (None, watched[rid], [], r) for rid, r in orphaned.items() if rid in watched})
            _preempt(mine, pending, outcome, root, doc, interrupts, bar)
    finally:
        bar.close()
    counts: dict[str, int] = {}
    for rid, v in outcome.items():
        if rid in ids:
            counts[v] = counts.get(v, 0) + 1
    log(f"local: {len(ids)} runs in {time.monotonic() - t0:.1f} s: "
        + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return counts


def _preempt(running: dict, pending: list, outcome: dict, root: Path, doc: dict, interrupts: Interrupts,
             bar) -> None:
    """Ask every trainer this submission started (`running`: run id -> (job or None, its record, GPUs,
    PlannedRun)) to checkpoint, wait (bounded), record the result, raise SweepInterrupted."""
    wait_s = max((r.resources.signal_delay_s for _, _, _, r in running.values()), default=0)
    wait_s = max(5.0, wait_s - 10.0) if running else 0.0  # the task itself gives its trainer signal_delay - 15 s
    again = "Ctrl-C again" if interrupts.signum == signal.SIGINT else "a second signal"
    if running:
        bar.log(f"[costlaw sweep] {interrupts.name}: asking {len(running)} running trainer(s) to checkpoint "
                f"(waiting up to {wait_s:.0f} s; {again} stops waiting and leaves them to finish)")
    seen = interrupts.count
    deadline = time.monotonic() + wait_s
    last_sent = 0.0
    alive = dict(running)
    while alive and time.monotonic() < deadline and interrupts.count == seen:
        if time.monotonic() - last_sent >= RESEND_S:
            for _, rec, _, _ in alive.values():
                _signal_group(rec["pgid"], signal.SIGTERM)
            last_sent = time.monotonic()
        for rid, (job, rec, _, _) in list(alive.items()):
            if job is not None:
                job.done()  # reaps the controller, so its group empties
            if not _alive(root, rid, rec):
                del alive[rid]
                outcome[rid] = _final(root, rid)
        interrupts.sleep(0.2)
    for rid in running:
        if rid not in alive and rid not in outcome:
            outcome[rid] = _final(root, rid)
    still = sorted(alive)
    stopped = sorted(rid for rid in running if rid not in alive)
    never = [r.run_id for r in pending]
    sub = doc["submissions"][-1]
    sub["interrupted"] = {"at": record.now(), "signal": interrupts.name,
                          "stopped": {rid: outcome[rid] for rid in stopped}, "still_running": still,
                          "not_started": never}
    sub["queued"] = []
    record.save(root, doc)
    parts = [f"{sum(1 for rid in stopped if outcome[rid] == 'preempted')} run(s) checkpointed (preempted)"]
    done = sum(1 for rid in stopped if outcome[rid] != "preempted")
    if done:
        parts.append(f"{done} ended on their own")
    if still:
        parts.append(f"{len(still)} still checkpointing under their trainer locks")
    parts.append(f"{len(never)} not started")
    raise SweepInterrupted(f"interrupted ({interrupts.name}): " + ", ".join(parts)
                           + f"; `costlaw sweep resubmit --root {root} --failed` continues them")


def _signal_group(pgid: int, sig: int) -> None:
    if group_alive(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def _distinct(free: list[int], n: int) -> list[int] | None:
    """The first n distinct GPU ids among the free slots, or None when fewer are free."""
    out: list[int] = []
    for g in free:
        if g not in out:
            out.append(g)
        if len(out) == n:
            return out
    return out if n == 0 else None
