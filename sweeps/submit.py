"""Submit a sweep's runs through submitit: Slurm job arrays, a throttled local executor, or in-process debug.

- **slurm**: one job array per stage (`executor.batch()`, `slurm_array_parallelism`), with resources,
  partition / account / qos / constraint passed through. A later stage's run depends on its own parent
  run's job: when the stage's runs line up one to one with the parent stage's array, one array with
  `--dependency=aftercorr:<parent array>` (task i waits for parent task i); otherwise one job per run with
  `afterok:<parent job>`. `--kill-on-invalid-dep=yes` cancels a child whose parent failed, so it shows up as
  failed and `resubmit --failed` picks it up.
- **local**: submitit's LocalExecutor starts every job at once, so this module throttles: at most
  `max_parallel` runs at a time (default: CPUs / cpus per run, or visible GPUs / gpus per run, each job given
  its own GPUs), children start once their parent completed.
- **debug**: submitit's DebugExecutor, in this process, one run after another (pdb opens on a failure).

Runs whose directory has DONE are skipped, and so are runs whose last job is still queued or running, so
submitting a sweep again is safe. Validation (spec, every RunConfig, the executor being reachable) happens
before anything is created under the root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from costlaw.costmodel import CostlawError
from costlaw.costmodel.core.rundir import DONE, RunDir, run_path
from costlaw.sweeps import record
from costlaw.sweeps.jobs import slurm_states
from costlaw.sweeps.select import largest_first, select
from costlaw.sweeps.worker import TRAIN_FN

EXECUTORS = ("slurm", "local", "debug")


def _n(k: int) -> str:
    return f"{k} run" if k == 1 else f"{k} runs"


def log(msg: str) -> None:
    print(f"[costlaw sweep] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- checks before anything is created
def check_executor(kind: str) -> None:
    if kind not in EXECUTORS:
        raise CostlawError(f"--executor: {kind!r} is not one of {', '.join(EXECUTORS)}")
    if kind != "slurm":
        return
    if not shutil.which("sbatch"):
        raise CostlawError("--executor: slurm needs sbatch on PATH (no Slurm client here); use --executor local")
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # sinfo would retry for a minute before saying so
        raise CostlawError(f"--executor: SLURM_CONF names {conf!r}, which does not exist; source the cluster's "
                           "env.sh or unset it")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CostlawError(f"--executor: sinfo failed ({e}); is the Slurm controller up?") from None
    if out.returncode != 0:
        msg = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise CostlawError(f"--executor: slurm is not reachable (sinfo: {msg}); set SLURM_CONF "
                           "(source DIR/env.sh) or start a cluster")


def check_root(root: Path, sweep_name: str) -> dict | None:
    if root.exists() and not root.is_dir():
        raise CostlawError(f"--root: {str(root)!r} is a file; give a directory")
    doc = record.load(root, required=False) if root.is_dir() else None
    if doc is not None and doc.get("name") != sweep_name:
        raise CostlawError(f"--root: {str(root)!r} holds sweep {doc.get('name')!r}, not {sweep_name!r}; "
                           "give each sweep its own root")
    return doc


def default_parallel(runs, gpus_visible: list[int]) -> int:
    need_gpu = max((r.resources.gpus for r in runs), default=0)
    if need_gpu:
        return max(1, len(gpus_visible) // need_gpu)
    cpus = max((r.resources.cpus for r in runs), default=1)
    return max(1, (os.cpu_count() or 1) // cpus)


def visible_gpus() -> list[int]:
    """GPU indices this machine offers (CUDA_VISIBLE_DEVICES, else nvidia-smi), without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [int(x) for x in env.split(",") if x.strip().isdigit()]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return list(range(sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))))


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
                progress: bool | None = None, runs_per_gpu: int = 1, where: str | None = None) -> dict:
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
    rows = plan.plan_rows(runs, s.contexts, gpu=gpu, mfu=mfu)
    tot = plan.totals([r for r in rows if only is None or r["run_id"] in only], gpu, mfu)
    old = check_root(root, s.name)
    check_executor(executor)
    # everything is valid: now, and only now, the root appears
    root.mkdir(parents=True, exist_ok=True)
    doc = new_record(s, str(p), text, root, rows, runs, tot, old)
    record.save(root, doc)
    picked = f" ({len(only)} selected by --where)" if only is not None else ""
    log(f"sweep {s.name}: {len(runs)} runs planned{picked}, {tot['gpu_hours']:.3g} GPU-hours at MFU {mfu:g}")
    return submit(doc, runs, root, executor, only=only, max_parallel=max_parallel, device=device,
                  train_fn=train_fn, progress=progress, runs_per_gpu=runs_per_gpu)


def submit(doc: dict, runs, root: Path, executor: str, *, only: set[str] | None = None, max_parallel: int | None = None,
           device: str = "auto", train_fn: str = TRAIN_FN, progress: bool | None = None,
           runs_per_gpu: int = 1) -> dict:
    """Submit the runs of `doc` that are neither done nor active (restricted to `only` run ids if given).
    `runs` are the PlannedRuns (same order as doc["runs"]). Returns a summary of what was submitted."""
    from costlaw.sweeps.status import live_queue, run_state

    by_id = {r.run_id: r for r in runs}
    recs = {r["run_id"]: r for r in doc["runs"]}
    prior = [record.last_job(r) for r in doc["runs"]]
    states = slurm_states([j["job_id"] for j in prior if j and j["executor"] == "slurm"])
    queued = live_queue(doc)
    todo, skipped_done, skipped_active, active_jobs = [], [], [], {}
    for rec in doc["runs"]:
        st, _ = run_state(root, rec, states, queued)
        rd = RunDir(run_path(root, rec["run_id"]))
        if st in ("pending", "running"):
            skipped_active.append(rec["run_id"])
            active_jobs[rec["run_id"]] = record.last_job(rec)
        elif only is not None and rec["run_id"] not in only:
            if rd.is_done():
                skipped_done.append(rec["run_id"])
        elif rd.is_done() and not (st == "failed" and only is not None):
            skipped_done.append(rec["run_id"])
        else:
            if rd.is_done():  # resubmitting a failed run: it resumes from its checkpoint, so DONE must go
                rd.file(DONE).unlink()
            todo.append(by_id[rec["run_id"]])
    sub = {"at": record.now(), "executor": executor, "submitted": len(todo), "skipped_done": len(skipped_done),
           "skipped_active": len(skipped_active), "argv": sys.argv[1:], "pid": os.getpid(),
           "queued": [r.run_id for r in todo] if executor == "local" else []}
    doc["submissions"].append(sub)
    record.save(root, doc)
    if skipped_done or skipped_active:
        log(f"skipping {len(skipped_done)} finished runs (DONE) and {len(skipped_active)} queued or running")
    if not todo:
        log("nothing to submit")
        return sub

    def tasks_for(r):
        from costlaw.sweeps.worker import RunTask

        threads = r.resources.cpus if executor != "debug" else 0
        return RunTask(str(root), r.config.to_dict(), r.run_id, sweep=doc["name"], parent_id=r.parent_id,
                       threads=threads, device=device, gpus=r.resources.gpus,
                       checkpoint_wait_s=max(5.0, r.resources.signal_delay_s - 15.0), train_fn=train_fn)

    def note(run_id: str, job_id: str, ex: str, folder: Path):
        recs[run_id]["jobs"].append({"job_id": str(job_id), "executor": ex, "folder": str(folder),
                                     "submitted": record.now()})

    folder = root / "submitit"
    if executor == "slurm":
        _submit_slurm(todo, tasks_for, note, folder, doc["name"], active_jobs)
        record.save(root, doc)
    elif executor == "local":
        try:
            sub["outcome"] = _run_local(todo, tasks_for, note, folder, root, doc, max_parallel, progress,
                                         runs_per_gpu)
        finally:
            sub["queued"] = []  # nothing waits in this process's queue any more
    else:
        sub["outcome"] = _run_debug(todo, tasks_for, note, folder, root, doc)
    record.save(root, doc)
    return sub


def resubmit(root: str | Path, executor: str | None = None, *, max_parallel: int | None = None, device: str = "auto",
             train_fn: str = TRAIN_FN, progress: bool | None = None, runs_per_gpu: int = 1) -> dict:
    """`costlaw sweep resubmit --failed`: the runs that failed, were preempted and are not running, or never
    finished, again under their run ids (they resume from their checkpoints). Default executor: the last one."""
    from costlaw.sweeps import status

    root = Path(root).resolve()
    doc = record.load(root)
    executor = executor or (doc["submissions"][-1]["executor"] if doc.get("submissions") else "local")
    check_executor(executor)
    st = status.collect(root)
    pick = {r["run_id"] for r in st["runs"] if r["state"] in status.RESUBMIT}
    if not pick:
        log("nothing to resubmit: " + ", ".join(f"{v} {k}" for k, v in st["counts"].items() if v))
        return {"executor": executor, "submitted": 0}
    log(f"resubmitting {len(pick)} runs with --executor {executor}")
    return submit(doc, planned_from_record(doc), root, executor, only=pick, max_parallel=max_parallel, device=device,
                  train_fn=train_fn, progress=progress, runs_per_gpu=runs_per_gpu)


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


def _slurm_params(res, name: str, dependency: str | None = None) -> dict:
    p = {"name": name, "timeout_min": res.time_min, "cpus_per_task": res.cpus, "nodes": 1,
         "tasks_per_node": max(1, res.gpus), "slurm_array_parallelism": res.array_parallelism,
         "slurm_signal_delay_s": res.signal_delay_s}
    if res.gpus:
        p["gpus_per_node"] = res.gpus
    if res.mem_gb:
        p["mem_gb"] = res.mem_gb
    for k in ("partition", "account", "qos", "constraint"):
        if getattr(res, k):
            p[f"slurm_{k}"] = getattr(res, k)
    if res.setup:
        p["slurm_setup"] = list(res.setup)
    if dependency:
        p["slurm_dependency"] = dependency
        p["slurm_additional_parameters"] = {"kill-on-invalid-dep": "yes"}
    return p


def _submit_slurm(todo, tasks_for, note, folder: Path, sweep: str, active_jobs: dict) -> None:
    import submitit

    job_of: dict[str, str] = {}  # run id -> Slurm job id ("123" or "123_4") in this submission
    array_of: dict[str, tuple[str, int, int]] = {}  # run id -> (array id, index, array size)
    stages = list(dict.fromkeys(r.stage for r in todo))
    for stage in stages:
        group = [r for r in todo if r.stage == stage]
        free = [r for r in group if r.parent_id is None or (r.parent_id not in job_of and
                                                             r.parent_id not in active_jobs)]
        chained = [r for r in group if r not in free]
        res = group[0].resources
        name = f"{sweep}-{stage}"

        def make(dep=None, res=res, name=name):
            ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm", slurm_max_num_timeout=res.max_num_timeout)
            ex.update_parameters(**_slurm_params(res, name, dep))
            return ex

        def submit_array(runs, dep=None):
            ex = make(dep)
            with ex.batch():
                jobs = [ex.submit(tasks_for(r)) for r in runs]
            for i, (r, j) in enumerate(zip(runs, jobs)):
                job_of[r.run_id] = j.job_id
                if len(runs) > 1:
                    array_of[r.run_id] = (j.job_id.split("_")[0], i, len(runs))
                note(r.run_id, j.job_id, "slurm", folder / "%j")
            return jobs

        if free:
            jobs = submit_array(free)
            log(f"{stage}: {_n(len(free))} as Slurm job {jobs[0].job_id.split('_')[0]}"
                + (f" (array of {len(free)}, at most {res.array_parallelism} at once)" if len(free) > 1 else ""))
        if not chained:
            continue
        # a stage's runs line up with their parent array when each parent has one child per group (a stage
        # with its own axes has several: group g holds every parent's g-th child): one aftercorr array each
        groups: dict[int, list] = {}
        seen: dict[str, int] = {}
        for r in chained:
            g = seen.get(r.parent_id, 0)
            seen[r.parent_id] = g + 1
            groups.setdefault(g, []).append(r)
        singles = []
        for members in groups.values():
            parents = [array_of.get(r.parent_id) for r in members]
            if all(parents) and len({p[0] for p in parents}) == 1 and sorted(p[1] for p in parents) == list(
                    range(parents[0][2])):
                ordered = [r for _, r in sorted(zip((p[1] for p in parents), members), key=lambda x: x[0])]
                jobs = submit_array(ordered, f"aftercorr:{parents[0][0]}")
                log(f"{stage}: {_n(len(ordered))} as Slurm array {jobs[0].job_id.split('_')[0]}, task i after "
                    f"parent array {parents[0][0]} task i (aftercorr)")
            else:
                singles.extend(members)
        for r in singles:
            parent_job = job_of.get(r.parent_id) or active_jobs[r.parent_id]["job_id"]
            submit_array([r], f"afterok:{parent_job}")
        if singles:
            log(f"{stage}: {_n(len(singles))} as single Slurm jobs, each after its parent's job (afterok)")


def _run_local(todo, tasks_for, note, folder: Path, root: Path, doc: dict, max_parallel: int | None,
               progress: bool | None, runs_per_gpu: int = 1) -> dict:
    """Throttled local runs. `runs_per_gpu` > 1 packs several runs on each GPU (small models leave most of
    an H100 idle, so packing them can beat one run at a time; studies measure which is faster)."""
    import submitit

    from costlaw.costmodel.core.progress import Progress
    from costlaw.sweeps.status import dir_status

    gpus = visible_gpus()
    need = max(r.resources.gpus for r in todo)
    if need > len(gpus):
        raise CostlawError(f"resources.gpus: runs need {need} GPUs but this machine shows {len(gpus)}; "
                           "lower gpus (0 trains on CPU) or use --executor slurm")
    # one slot per (GPU, packed run); slots interleave GPUs so runs spread over GPUs before packing
    slots = [g for _ in range(runs_per_gpu) for g in gpus]
    limit = max_parallel or default_parallel(todo, slots)
    free_gpus = list(slots)
    pending = largest_first(todo)
    running: dict[str, tuple] = {}
    outcome: dict[str, str] = {}
    ids = {r.run_id for r in todo}
    t0 = time.monotonic()
    bar = Progress(len(todo), f"{doc['name']} (local, {limit} at a time)", "runs", every_s=None,
                   bar=False if progress is False else None)
    bar.log(f"[costlaw sweep] {bar.desc}: {len(todo)} runs")

    def advance(msg: str) -> None:
        bar.update(1)
        bar.log(f"[costlaw sweep] [{bar.done:.0f}/{len(todo)}] {msg}")

    try:
        while pending or running:
            for rid, (job, g, r) in list(running.items()):
                if not job.done():
                    continue
                del running[rid]
                free_gpus.extend(g)
                st = dir_status(RunDir(run_path(root, rid)))
                outcome[rid] = st if st in ("completed", "diverged", "failed") else "failed"  # no DONE: it died
                advance(f"{rid} {r.stage} {r.label or ''}: {outcome[rid]}")
                record.save(root, doc)
            for r in list(pending):
                if len(running) >= limit:
                    break
                if r.parent_id in ids:
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
                ex = submitit.LocalExecutor(folder=folder / "%j", max_num_timeout=r.resources.max_num_timeout)
                ex.update_parameters(timeout_min=r.resources.time_min, signal_delay_s=r.resources.signal_delay_s,
                                     tasks_per_node=max(1, r.resources.gpus), gpus_per_node=r.resources.gpus,
                                     visible_gpus=g, setup=list(r.resources.setup))
                job = ex.submit(tasks_for(r))
                note(r.run_id, job.job_id, "local", folder / "%j")
                running[r.run_id] = (job, g, r)
                pending.remove(r)
                bar.log(f"[costlaw sweep] started {r.run_id} {r.stage} {r.label or ''} (pid {job.job_id})")
                record.save(root, doc)
            if pending or running:
                time.sleep(0.5)
    finally:
        bar.close()
    counts: dict[str, int] = {}
    for v in outcome.values():
        counts[v] = counts.get(v, 0) + 1
    log(f"local: {len(todo)} runs in {time.monotonic() - t0:.1f} s: "
        + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return counts


def _run_debug(todo, tasks_for, note, folder: Path, root: Path, doc: dict) -> dict:
    import submitit

    from costlaw.sweeps.status import dir_status

    ex = submitit.AutoExecutor(folder=folder / "debug" / "%j", cluster="debug")
    outcome: dict[str, str] = {}
    ids = {r.run_id for r in todo}
    for r in todo:
        if r.parent_id in ids and outcome.get(r.parent_id) != "completed":
            outcome[r.run_id] = "skipped"
            log(f"{r.run_id} {r.stage}: skipped (parent {r.parent_id} {outcome.get(r.parent_id)})")
            continue
        job = ex.submit(tasks_for(r))
        note(r.run_id, job.job_id, "debug", folder / "debug" / "%j")
        log(f"running {r.run_id} {r.stage} {r.label or ''} in-process")
        job.result()
        rd = RunDir(run_path(root, r.run_id))
        outcome[r.run_id] = dir_status(rd)
        log(f"{r.run_id}: {outcome[r.run_id]}")
    counts: dict[str, int] = {}
    for v in outcome.values():
        counts[v] = counts.get(v, 0) + 1
    return counts


def _distinct(free: list[int], n: int) -> list[int] | None:
    """The first n distinct GPU ids among the free slots, or None when fewer are free."""
    out: list[int] = []
    for g in free:
        if g not in out:
            out.append(g)
        if len(out) == n:
            return out
    return out if n == 0 else None
