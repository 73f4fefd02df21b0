"""The Slurm executor: one job array per stage (`executor.batch()`, `slurm_array_parallelism`), with resources,
partition / account / qos / constraint passed through. A later stage's run depends on its own parent run's job:
when the stage's runs line up one to one with the parent stage's array, one array with
`--dependency=aftercorr:<parent array>` (task i waits for parent task i); otherwise one job per run with
`afterok:<parent job>`. `--kill-on-invalid-dep=yes` cancels a child whose parent failed, so it shows up as failed
and `resubmit --failed` picks it up.

Submitting returns once the arrays are queued. A Ctrl-C or SIGTERM meanwhile never splits an sbatch call from the
record of its job ids (sweeps.interrupt.deferred): the arrays submitted so far are in sweep.json, the rest are not
submitted, and a resubmit submits them.
"""

from __future__ import annotations

from pathlib import Path

from costlaw.sweeps.fuse import members as unit_runs
from costlaw.sweeps.interrupt import Interrupts


def _n(k: int) -> str:
    return f"{k} run" if k == 1 else f"{k} runs"


def log(msg: str) -> None:
    import sys

    print(f"[costlaw sweep] {msg}", file=sys.stderr, flush=True)


class _Stop(Exception):
    """A signal came between two arrays."""


def slurm_params(res, name: str, dependency: str | None = None) -> dict:
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


def submit_slurm(todo, tasks_for, note, folder: Path, sweep: str, active_jobs: dict, interrupts: Interrupts) -> list:
    """Submit `todo` as job arrays, stage by stage; returns the runs left unsubmitted because a Ctrl-C or SIGTERM
    came (each array is submitted and recorded whole, then the signal stops the rest)."""
    arrays = _Arrays(tasks_for, note, folder, interrupts)
    try:
        for stage in dict.fromkeys(r.stage for r in todo):
            _submit_stage(arrays, [r for r in todo if r.stage == stage], f"{sweep}-{stage}", active_jobs)
    except _Stop:
        return [r for r in todo if unit_runs(r)[0].run_id not in arrays.job_of]
    return []


class _Arrays:
    """Submits arrays and remembers, per run, its Slurm job id and its place in its array."""

    def __init__(self, tasks_for, note, folder: Path, interrupts: Interrupts):
        self.tasks_for, self.note, self.folder, self.interrupts = tasks_for, note, folder, interrupts
        self.job_of: dict[str, str] = {}  # run id -> Slurm job id ("123" or "123_4") in this submission
        self.array_of: dict[str, tuple[str, int, int]] = {}  # run id -> (array id, index, array size)

    def submit(self, runs, name: str, dep: str | None = None):
        import submitit

        if self.interrupts.is_set():
            raise _Stop
        res = runs[0].resources
        ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster="slurm",
                                   slurm_max_num_timeout=res.max_num_timeout)
        ex.update_parameters(**slurm_params(res, name, dep))
        with self.interrupts.deferred():  # sbatch and the record of its job ids, whole
            with ex.batch():
                jobs = [ex.submit(self.tasks_for(r)) for r in runs]
            for i, (r, j) in enumerate(zip(runs, jobs)):
                for m in unit_runs(r):  # a fused group's members all name its job (sweeps/fuse.py)
                    self.job_of[m.run_id] = j.job_id
                    if len(runs) > 1:
                        self.array_of[m.run_id] = (j.job_id.split("_")[0], i, len(runs))
                self.note(r.run_id, j.job_id, "slurm", self.folder / "%j")
        return jobs


def _submit_stage(arrays: _Arrays, group: list, name: str, active_jobs: dict) -> None:
    stage = group[0].stage
    res = group[0].resources
    free = [r for r in group if r.parent_id is None or (r.parent_id not in arrays.job_of and
                                                         r.parent_id not in active_jobs)]
    chained = [r for r in group if r not in free]
    if free:
        jobs = arrays.submit(free, name)
        log(f"{stage}: {_n(len(free))} as Slurm job {jobs[0].job_id.split('_')[0]}"
            + (f" (array of {len(free)}, at most {res.array_parallelism} at once)" if len(free) > 1 else ""))
    if not chained:
        return
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
        parents = [arrays.array_of.get(r.parent_id) for r in members]
        if all(parents) and len({p[0] for p in parents}) == 1 and sorted(p[1] for p in parents) == list(
                range(parents[0][2])):
            ordered = [r for _, r in sorted(zip((p[1] for p in parents), members), key=lambda x: x[0])]
            jobs = arrays.submit(ordered, name, f"aftercorr:{parents[0][0]}")
            log(f"{stage}: {_n(len(ordered))} as Slurm array {jobs[0].job_id.split('_')[0]}, task i after "
                f"parent array {parents[0][0]} task i (aftercorr)")
        else:
            singles.extend(members)
    held = []
    for r in singles:
        parent_job = arrays.job_of.get(r.parent_id) or (active_jobs.get(r.parent_id) or {}).get("job_id")
        if parent_job is None or (active_jobs.get(r.parent_id) or {}).get("executor", "slurm") != "slurm":
            held.append(r)  # its parent trains outside Slurm: no job to wait for
            continue
        arrays.submit([r], name, f"afterok:{parent_job}")
    if len(singles) > len(held):
        log(f"{stage}: {_n(len(singles) - len(held))} as single Slurm jobs, each after its parent's job (afterok)")
    if held:
        log(f"{stage}: {_n(len(held))} not submitted: their parents train outside Slurm (a local or hand-started "
            "trainer holds the parent's lock); resubmit once the parents complete")
