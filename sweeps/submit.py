"""Submit a sweep's runs through submitit: Slurm job arrays (sweeps.slurm), a throttled local executor
(sweeps.local), or in-process debug.

- **slurm**: one job array per stage, later stages after their parents' jobs; submitting returns once queued.
- **local**: at most `max_parallel` trainers at a time on this machine (default: CPUs / cpus per run, or visible
  GPUs / gpus per run, each job given its own GPUs), children once their parent completed; returns when done.
- **debug**: submitit's DebugExecutor, in this process, one run after another (pdb opens on a failure).

One trainer per run directory: a run is skipped when its directory has DONE, when its last job is still queued
or running, and when a live trainer holds its lock (costmodel.core.runlock: the trainer's own hold, whatever
happened to the process that launched it), so submitting or resubmitting a sweep again never starts a second
trainer beside a live one. Everything that can be checked first is (sweeps.preflight: the spec, every RunConfig,
the executor, the device, each run's memory) before anything is created under the root. Ctrl-C or SIGTERM is a
preemption (sweeps.interrupt): recorded in sweep.json, SweepInterrupted raised (exit 3).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from costlaw.costmodel.core.rundir import DONE, RunDir, run_path
from costlaw.costmodel.core.runlock import trainer_alive
from costlaw.sweeps import record
from costlaw.sweeps.fuse import members
from costlaw.sweeps.interrupt import Interrupts, SweepInterrupted
from costlaw.sweeps.jobs import local_job_alive, slurm_states, this_host
from costlaw.sweeps.preflight import (
    check_device,
    check_executor,
    check_libraries,
    check_memory,
    check_order,
    check_root,
)
from costlaw.sweeps.select import select
from costlaw.sweeps.worker import TRAIN_FN

SHOWN = 10  # skipped live runs named one per line before "... and N more"


def log(msg: str) -> None:
    print(f"[costlaw sweep] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the sweep record
def new_record(spec, spec_path: str, spec_text: str, root: Path, rows: list[dict], runs, tot: dict,
               old: dict | None) -> dict:
    old_runs = {r["run_id"]: r for r in (old or {}).get("runs", [])}
    doc = {"format": record.FORMAT, "name": spec.name, "description": spec.description, "root": str(root),
           "spec_path": str(Path(spec_path).resolve()), "spec": spec_text,
           "created": (old or {}).get("created", record.now()), "plan": tot,
           "submissions": (old or {}).get("submissions", []), "runs": []}
    for row, r in zip(rows, runs):
        prev = old_runs.get(r.run_id, {})
        doc["runs"].append({**row, "values": r.values, "resources": r.resources.to_dict(),
                            "config": r.config.to_dict(), "jobs": prev.get("jobs", [])})
    return doc


# ---------------------------------------------------------------- submit
def submit_spec(spec_path: str | Path, root: str | Path, executor: str, *, max_parallel: int | None = None,
                device: str = "auto", gpu: str = "H100", mfu: float = 0.35, train_fn: str = TRAIN_FN,
                progress: bool | None = None, runs_per_gpu: int = 1, where: str | None = None,
                fuse: bool = False, order: str = "longest") -> dict:
    """`costlaw sweep submit`: validate everything, then create the root, write sweep.json and submit.
    `where` (a formula over each run's config) submits only the runs it selects, and their parents."""
    from costlaw.costmodel import ConfigError
    from costlaw.sweeps import expand, plan, spec

    root = Path(root).resolve()
    p = Path(spec_path)
    if not p.is_file():
        raise ConfigError("spec", f"no such file {str(spec_path)!r}; give the path of a sweep TOML")
    text = p.read_text()
    s = spec.parse(text)
    runs = expand.expand(s, root)
    only = select(runs, where) if where else None
    scope = [r for r in runs if only is None or r.run_id in only]
    rows = plan.plan_rows(runs, s.contexts, gpu=gpu, mfu=mfu)
    tot = plan.totals([r for r in rows if only is None or r["run_id"] in only], gpu, mfu)
    old = check_root(root, s.name)
    check_executor(executor)
    check_order(order, executor)
    check_device(device, executor, scope)
    check_libraries(scope)
    check_memory(scope, executor, device, gpu, runs_per_gpu * fused_width(scope, fuse))
    # everything is valid: now, and only now, the root appears
    root.mkdir(parents=True, exist_ok=True)
    doc = new_record(s, str(p), text, root, rows, runs, tot, old)
    record.save(root, doc)
    picked = f" ({len(only)} selected by --where)" if only is not None else ""
    log(f"sweep {s.name}: {len(runs)} runs planned{picked}, {tot['gpu_hours']:.3g} GPU-hours at MFU {mfu:g}")
    return submit(doc, runs, root, executor, only=only, max_parallel=max_parallel, device=device,
                  train_fn=train_fn, progress=progress, runs_per_gpu=runs_per_gpu, fuse=fuse, order=order)


def fused_width(scope, fuse: bool) -> int:
    """Runs that share one GPU slot under --fuse: the largest fused group's size (1 without --fuse)."""
    if not fuse:
        return 1
    from costlaw.sweeps.fuse import fuse as group

    return max((len(members(u)) for u in group(scope)[0]), default=1)


def submit(doc: dict, runs, root: Path, executor: str, *, only: set[str] | None = None, max_parallel: int | None = None,
           device: str = "auto", train_fn: str = TRAIN_FN, progress: bool | None = None,
           runs_per_gpu: int = 1, continue_live: bool = False, fuse: bool = False, order: str = "longest") -> dict:
    """Submit the runs of `doc` that are neither done nor active (restricted to `only` run ids if given).
    `runs` are the PlannedRuns (same order as doc["runs"]). The local executor waits for live trainers of the
    scope (or of the whole sweep with `continue_live`) and continues those that stop at a checkpoint. Returns a
    summary of what was submitted (`scope`: the runs it answered for); raises SweepInterrupted on Ctrl-C or
    SIGTERM, after recording it."""
    with Interrupts() as interrupts:
        return _submit(doc, runs, root, executor, only, max_parallel, device, train_fn, progress, runs_per_gpu,
                       continue_live, interrupts, fuse, order)


def _submit(doc, runs, root, executor, only, max_parallel, device, train_fn, progress, runs_per_gpu,
            continue_live: bool, interrupts: Interrupts, fuse: bool = False, order: str = "longest") -> dict:
    from costlaw.sweeps.status import live_queue, run_state

    by_id = {r.run_id: r for r in runs}
    recs = {r["run_id"]: r for r in doc["runs"]}
    prior = [record.last_job(r) for r in doc["runs"]]
    states = slurm_states([j["job_id"] for j in prior if j and j["executor"] == "slurm"])
    queued = live_queue(doc)
    todo, skipped_done, active, live = [], [], {}, []
    for rec in doc["runs"]:
        st, _ = run_state(root, rec, states, queued)
        rd = RunDir(run_path(root, rec["run_id"]))
        if st in ("pending", "running"):
            active[rec["run_id"]] = record.last_job(rec)
            holder = trainer_alive(rd.path)
            if holder is not None and (only is None or rec["run_id"] in only):
                live.append((rec, holder))
        elif only is not None and rec["run_id"] not in only:
            if rd.is_done():
                skipped_done.append(rec["run_id"])
        elif rd.is_done() and not (st == "failed" and only is not None):
            skipped_done.append(rec["run_id"])
        else:
            todo.append(by_id[rec["run_id"]])
    for rec, holder in live[:SHOWN]:
        log(f"not submitting {rec['run_id']} {rec['stage']} {rec['label'] or ''}: its trainer (pid "
            f"{holder.get('pid')} on {holder.get('hostname')}, heartbeat {holder['heartbeat_age_s']:.0f} s ago) "
            "holds its lock; one trainer per run")
    if len(live) > SHOWN:
        log(f"... and {len(live) - SHOWN} more runs whose trainers hold their locks")
    sub = {"at": record.now(), "executor": executor, "submitted": len(todo), "skipped_done": len(skipped_done),
           "skipped_active": len(active), "skipped_live": [rec["run_id"] for rec, _ in live],
           "argv": sys.argv[1:], "pid": os.getpid(), "host": this_host(),
           "queued": [r.run_id for r in todo] if executor == "local" else []}
    doc["submissions"].append(sub)
    if skipped_done or active:
        log(f"skipping {len(skipped_done)} finished runs (DONE) and {len(active)} queued or running")
    if not todo:
        sub["queued"] = []
        sub["scope"] = []
        record.save(root, doc)
        log("nothing to submit")
        return sub
    for r in todo:  # resubmitting a failed run: it resumes from its checkpoint, so DONE must go
        RunDir(run_path(root, r.run_id)).file(DONE).unlink(missing_ok=True)
    if fuse:
        from costlaw.sweeps.fuse import fuse as group

        units, why = group(todo)
        n_groups = sum(len(members(u)) > 1 for u in units)
        sub["fused"] = {u.run_id: [m.run_id for m in members(u)] for u in units if len(members(u)) > 1}
        log(f"--fuse: {sum(len(members(u)) for u in units if len(members(u)) > 1)} runs in {n_groups} fused "
            f"groups, {sum(len(members(u)) == 1 for u in units)} unfused" + "".join(f"; {w}" for w in why))
        todo = units
    record.save(root, doc)

    def tasks_for(r, parallel: int | None = None):
        """The task of a run or fused group; `parallel`: the local executor's trainers at a time, which share
        this machine's CPUs (sweeps.preflight.thread_share)."""
        from costlaw.sweeps.preflight import thread_share
        from costlaw.sweeps.worker import FusedRunTask, RunTask

        threads = 0 if executor == "debug" else r.resources.cpus if parallel is None else \
            thread_share(r.resources.cpus, parallel)
        if len(members(r)) > 1:
            return FusedRunTask(str(root), [m.config.to_dict() for m in r.members], [m.run_id for m in r.members],
                                sweep=doc["name"], threads=threads, device=device,
                                checkpoint_wait_s=max(5.0, r.resources.signal_delay_s - 15.0))
        return RunTask(str(root), r.config.to_dict(), r.run_id, sweep=doc["name"], parent_id=r.parent_id,
                       threads=threads, device=device, gpus=r.resources.gpus,
                       checkpoint_wait_s=max(5.0, r.resources.signal_delay_s - 15.0), train_fn=train_fn)

    def note(run_id: str, job_id: str, ex: str, folder: Path, **extra) -> dict:
        """Record the job of a run, or of every member of a fused group (`run_id` the group's)."""
        job = {"job_id": str(job_id), "executor": ex, "folder": str(folder), "submitted": record.now(),
               "host": this_host(), **extra}
        for m in group_members.get(run_id, [run_id]):
            recs[m]["jobs"].append(job)
        return job

    group_members = {u.run_id: [m.run_id for m in members(u)] for u in todo if len(members(u)) > 1}

    folder = root / "submitit"
    try:
        if executor == "slurm":
            from costlaw.sweeps.slurm import submit_slurm

            left = submit_slurm(todo, tasks_for, note, folder, doc["name"], active, interrupts)
            left = [m for r in left for m in members(r)]
            if left:
                n_todo = sum(len(members(r)) for r in todo)
                sub["submitted"] = n_todo - len(left)
                sub["interrupted"] = {"at": record.now(), "signal": interrupts.name,
                                      "not_submitted": [r.run_id for r in left]}
                record.save(root, doc)
                raise SweepInterrupted(f"interrupted ({interrupts.name}): {n_todo - len(left)} run(s) submitted "
                                       f"to Slurm and recorded, {len(left)} not submitted; `costlaw sweep resubmit "
                                       f"--root {root} --failed` submits the rest")
        elif executor == "local":
            from costlaw.sweeps.local import run_local

            # trainers alive on this machine count against max_parallel (a run merely queued by another live
            # submission is that one's to start); one of this submission's scope that stops at a checkpoint
            # meanwhile is continued here
            training = {rid: job for rid, job in active.items()
                        if trainer_alive(run_path(root, rid)) is not None or (job or {}).get("executor") == "local"
                        and local_job_alive(job)}
            resumable = {rid: by_id[rid] for rid in training if rid in by_id and (only is None or rid in only
                                                                                  or continue_live)}
            sub["outcome"] = run_local(todo, tasks_for, note, folder, root, doc, max_parallel, progress,
                                       runs_per_gpu, training, resumable, interrupts, order)
        else:
            sub["outcome"] = _run_debug(todo, tasks_for, note, folder, root, doc, interrupts)
    finally:
        sub["queued"] = []  # nothing waits in this process's queue any more
        sub["scope"] = [m.run_id for r in todo for m in members(r)] + sub.get("continued", [])
        record.save(root, doc)
    return sub


def resubmit(root: str | Path, executor: str | None = None, *, max_parallel: int | None = None, device: str = "auto",
             train_fn: str = TRAIN_FN, progress: bool | None = None, runs_per_gpu: int = 1, fuse: bool = False,
             order: str = "longest") -> dict:
    """`costlaw sweep resubmit --failed`: the runs that failed, were preempted and are not running, or never
    finished, again under their run ids (they resume from their checkpoints). Default executor: the last one.
    A run whose trainer is alive (it holds the run's lock) is never resubmitted."""
    from costlaw.sweeps import status

    root = Path(root).resolve()
    doc = record.load(root)
    executor = executor or (doc["submissions"][-1]["executor"] if doc.get("submissions") else "local")
    check_executor(executor)
    check_order(order, executor)
    st = status.collect(root)
    pick = {r["run_id"] for r in st["runs"] if r["state"] in status.RESUBMIT}
    planned = planned_from_record(doc)
    scope = [r for r in planned if r.run_id in pick]
    check_device(device, executor, scope)
    check_libraries(scope)
    check_memory(scope, executor, device, doc.get("plan", {}).get("gpu", "H100"),
                 runs_per_gpu * fused_width(scope, fuse))
    live = [r for r in st["runs"] if r.get("trainer")]
    if not pick:
        for r in live[:SHOWN]:
            t = r["trainer"]
            log(f"not resubmitting {r['run_id']} {r['stage']} {r['label'] or ''}: its trainer (pid {t.get('pid')} "
                f"on {t.get('hostname')}) holds its lock; one trainer per run")
        log("nothing to resubmit: " + ", ".join(f"{v} {k}" for k, v in st["counts"].items() if v))
        return {"executor": executor, "submitted": 0, "scope": []}
    log(f"resubmitting {len(pick)} runs with --executor {executor}")
    return submit(doc, planned, root, executor, only=pick, max_parallel=max_parallel, device=device,
                  train_fn=train_fn, progress=progress, runs_per_gpu=runs_per_gpu, continue_live=True, fuse=fuse,
                  order=order)


def planned_from_record(doc: dict):
    """The PlannedRuns of a submitted sweep, rebuilt from sweep.json (the spec file may have moved or changed)."""
    from costlaw.runs.config import RunConfig
    from costlaw.sweeps.expand import PlannedRun
    from costlaw.sweeps.spec import Resources

    out = []
    for r in doc["runs"]:
        res = dict(r["resources"])
        res["setup"] = tuple(res.get("setup", ()))
        out.append(PlannedRun(run_id=r["run_id"], stage=r["stage"], point=r["point"], seed=r["seed"],
                              label=r["label"], values=r.get("values", {}), config=RunConfig.from_dict(r["config"]),
                              parent_id=r["parent_id"], resources=Resources(**res)))
    return out


def _run_debug(todo, tasks_for, note, folder: Path, root: Path, doc: dict, interrupts: Interrupts) -> dict:
    """In this process, one run after another; a signal stops the running trainer at its next step (a "preempted"
    summary) and the rest are not started."""
    import submitit

    from costlaw.sweeps.status import dir_status

    ex = submitit.AutoExecutor(folder=folder / "debug" / "%j", cluster="debug")
    outcome: dict[str, str] = {}
    ids = {m.run_id for r in todo for m in members(r)}
    for i, r in enumerate(todo):
        if interrupts.is_set():
            sub = doc["submissions"][-1]
            sub["interrupted"] = {"at": record.now(), "signal": interrupts.name,
                                  "stopped": {k: v for k, v in outcome.items() if v == "preempted"},
                                  "not_started": [m.run_id for x in todo[i:] for m in members(x)]}
            record.save(root, doc)
            raise SweepInterrupted(f"interrupted ({interrupts.name}): "
                                   f"{sum(v == 'preempted' for v in outcome.values())} run(s) checkpointed "
                                   f"(preempted), {sum(len(members(x)) for x in todo[i:])} not started; `costlaw sweep "
                                   f"resubmit --root {root} "
                                   "--failed` continues them")
        if r.parent_id in ids and outcome.get(r.parent_id) != "completed":
            outcome[r.run_id] = "skipped"
            log(f"{r.run_id} {r.stage}: skipped (parent {r.parent_id} {outcome.get(r.parent_id)})")
            continue
        task = tasks_for(r)
        job = ex.submit(task)
        note(r.run_id, job.job_id, "debug", folder / "debug" / "%j")
        log(f"running {r.run_id} {r.stage} {r.label or ''} in-process")
        with interrupts.calling(task.request_stop):
            job.result()
        for m in members(r):
            outcome[m.run_id] = dir_status(RunDir(run_path(root, m.run_id)))
            log(f"{m.run_id}: {outcome[m.run_id]}")
    counts: dict[str, int] = {}
    for v in outcome.values():
        counts[v] = counts.get(v, 0) + 1
    return counts
