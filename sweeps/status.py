"""Where a sweep stands: each run's state from its directory (the truth for finished runs), from its trainer's
lock (the truth for a live trainer), and from its last job, polled in one batch (one `sacct` call for every Slurm
job, `squeue` once for those sacct does not know yet; a process-group check for local jobs), with each run's
progress from the tail of its metrics.jsonl and the last lines of the logs of runs that failed.

States: pending (queued), running (its trainer holds the run's lock, or its job runs), completed, diverged,
failed (DONE says so, or its job ended without DONE), preempted (stopped at a checkpoint and not running),
incomplete (started, no job to watch), unknown (never submitted, or its job is unknown to Slurm).
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

from costlaw.costmodel.core import exitcodes
from costlaw.costmodel.core.rundir import LOG, METRICS, RunDir, run_path
from costlaw.costmodel.core.runlock import trainer_alive
from costlaw.sweeps import record
from costlaw.sweeps.jobs import local_job_alive, pid_alive, slurm_states, this_host
from costlaw.sweeps.legacy import migrate_pickles
from costlaw.sweeps.live import progress

STATES = ("pending", "running", "completed", "diverged", "failed", "preempted", "incomplete", "unknown")
TERMINAL = ("completed", "diverged", "failed")
SLURM_PENDING = {"PENDING", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}
RESUBMIT = ("failed", "preempted", "incomplete", "unknown")
FRESH_S = 120  # a Slurm job unknown to sacct and squeue this soon after submission is taken as pending


def tail(path: Path, n: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-n:]


def job_logs(job: dict) -> dict[str, Path]:
    """submitit's stdout/stderr of a job (task 0)."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(job["folder"], job_id=job["job_id"], task_id=0)
    return {"stdout": paths.stdout, "stderr": paths.stderr}


def dir_status(rd) -> str:
    """completed | diverged | failed (DONE says so), preempted (summary without DONE), incomplete (started),
    absent. Only DONE is terminal: a resubmitted failed run keeps its old summary until it finishes again."""
    try:
        if rd.is_done():
            return rd.done()["status"]
        s = rd.summary()
    except (ValueError, KeyError, OSError):  # a file written by hand or by a crashed writer: not finished
        return "incomplete"
    if s is not None and s.get("status") == "preempted":
        return "preempted"
    return "incomplete" if rd.exists() or s is not None else "absent"


def run_state(root: Path, run: dict, slurm: dict, live_queue: set) -> tuple[str, str | None]:
    """(state, job state) of one run."""
    state, js, _ = run_state_and_trainer(root, run, slurm, live_queue)
    return state, js


def run_state_and_trainer(root: Path, run: dict, slurm: dict, live_queue: set) -> tuple[str, str | None, dict | None]:
    """(state, job state, the live trainer's lock record or None) of one run. A run whose trainer holds its lock
    is running whatever its job says: the controller that launched it may be gone while it trains on."""
    rd = RunDir(run_path(root, run["run_id"]))
    dir_state = dir_status(rd)
    job = record.last_job(run)
    if dir_state in TERMINAL:
        return dir_state, (slurm.get(job["job_id"]) if job and job["executor"] == "slurm" else None), None
    holder = trainer_alive(rd.path)
    state, js = _job_state(run, job, dir_state, slurm, live_queue)
    if holder is not None:
        return "running", js, holder
    return state, js, None


def _job_state(run: dict, job: dict | None, dir_state: str, slurm: dict, live_queue: set) -> tuple[str, str | None]:
    if job is None or job["executor"] == "debug":
        if run["run_id"] in live_queue:
            return "pending", None
        if dir_state == "preempted":
            return "preempted", None
        return ("incomplete" if dir_state == "incomplete" else "unknown"), None
    if job["executor"] == "local":
        if local_job_alive(job):
            return ("running" if dir_state != "absent" else "pending"), "RUNNING"
        return ("preempted" if dir_state == "preempted" else "failed"), "ENDED"
    js = slurm.get(job["job_id"], "UNKNOWN")
    base = js.split()[0]  # "CANCELLED by 0" -> CANCELLED
    if base in SLURM_RUNNING:
        return "running", js
    if base in SLURM_PENDING:
        return "pending", js
    if base == "PREEMPTED" or dir_state == "preempted":
        return "preempted", js
    if base == "UNKNOWN":  # neither sacct nor squeue lists it: just submitted (their records lag), or purged
        return ("pending" if _age_s(job) < FRESH_S else "unknown"), js
    return "failed", js  # FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, or COMPLETED without DONE


def _age_s(job: dict) -> float:
    try:
        t = datetime.datetime.strptime(job["submitted"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except (KeyError, ValueError):
        return float("inf")
    return (datetime.datetime.now(datetime.UTC) - t).total_seconds()


def live_queue(doc: dict) -> set:
    """Runs waiting in the queue of a local submission whose process is still alive."""
    out: set = set()
    for sub in doc.get("submissions", []):
        if sub.get("queued") and sub.get("host") in (None, this_host()) and pid_alive(sub.get("pid")):
            out.update(sub["queued"])
    return out


def collect(root: str | Path, n_lines: int = 8) -> dict:
    root = Path(root).resolve()
    doc = record.load(root)
    migrated = migrate_pickles(root)
    jobs = [record.last_job(r) for r in doc["runs"]]
    slurm = slurm_states([j["job_id"] for j in jobs if j and j["executor"] == "slurm"])
    queued = live_queue(doc)
    runs, counts = [], {s: 0 for s in STATES}
    for run in doc["runs"]:
        state, js, holder = run_state_and_trainer(root, run, slurm, queued)
        counts[state] += 1
        job = record.last_job(run)
        entry = {"run_id": run["run_id"], "stage": run["stage"], "label": run["label"], "state": state,
                 "job_id": job["job_id"] if job else None, "job_state": js,
                 "attempts": len(run.get("jobs", [])),
                 "trainer": ({k: holder.get(k) for k in ("pid", "pgid", "hostname", "started", "heartbeat_age_s",
                                                         "checked")} if holder else None),
                 **progress(run_path(root, run["run_id"]) / METRICS, run, state)}
        if state in ("failed", "preempted", "incomplete"):
            entry.update(_failure(root, run, job, n_lines))
        runs.append(entry)
    return {"name": doc["name"], "root": str(root), "total": len(runs), "counts": counts, "runs": runs,
            "migrated_pickles": migrated, "at": record.now()}


def exit_code(st: dict, only: set | None = None, finished: bool = False) -> int:
    """The exit code a sweep's state means (costmodel.core.exitcodes): FAILED when a run (of `only`, if given)
    failed or diverged, or, once the executor is `finished` with them, did not complete; OK otherwise."""
    bad = ("failed", "diverged") + (("preempted", "incomplete", "unknown") if finished else ())
    runs = [r for r in st["runs"] if only is None or r["run_id"] in only]
    return exitcodes.FAILED if any(r["state"] in bad for r in runs) else exitcodes.OK


def _failure(root: Path, run: dict, job: dict | None, n: int) -> dict:

    rd = RunDir(run_path(root, run["run_id"]))
    out: dict = {"error": None, "train_log": tail(rd.file(LOG), n)}
    try:
        s = rd.summary()
        out["error"] = s.get("error") if s else None
    except ValueError:
        out["error"] = "summary.json does not parse"
    if job is not None and job["executor"] != "debug":
        logs = job_logs(job)
        out["stderr"] = tail(logs["stderr"], n)
        out["stderr_path"] = str(logs["stderr"])
    return out


COLUMNS = ("run_id", "stage", "point", "state", "step", "loss", "tok/s", "ETA", "job", "job state", "attempts")
# on a narrow terminal: these columns go first, then the point's label is truncated (to MIN_POINT characters at
# least), then these go too
DROP_FIRST = ("attempts", "job state", "job", "stage")
DROP_LAST = ("tok/s", "loss")
MIN_POINT = 12


def _row(r: dict) -> dict:
    from costlaw.costmodel.core.units import si
    from costlaw.sweeps.live import duration

    step = r.get("step")
    total = r.get("total_steps")
    job_state = r["job_state"] or "-"
    if r.get("trainer") and r["state"] == "running" and job_state in ("-", "ENDED"):
        job_state = f"trainer pid {r['trainer'].get('pid')}"
    return {"run_id": r["run_id"], "stage": r["stage"], "point": r["label"] or "-", "state": r["state"],
            "step": f"{step}/{total}" if step is not None and total else (str(step) if step is not None else "-"),
            "loss": f"{r['loss']:.4g}" if r.get("loss") is not None else "-",
            "tok/s": si(r["tokens_per_s"]) if r.get("tokens_per_s") else "-",
            "ETA": duration(r.get("eta_s")) or "-", "job": r["job_id"] or "-", "job state": job_state,
            "attempts": r["attempts"]}


def fit_table(rows: list[dict], width: int | None) -> str:
    """rows as a table no wider than `width` (None: as wide as it is): DROP_FIRST's columns dropped, then the
    point labels truncated, then DROP_LAST's columns dropped."""
    from costlaw.costmodel.core.units import table

    columns = [c for c in COLUMNS if c in rows[0]]

    def wide(cols, rs) -> int:
        return max(len(line) for line in table(rs, cols).splitlines())

    if width is None:
        return table(rows, columns)
    for c in DROP_FIRST:
        if wide(columns, rows) <= width:
            break
        columns.remove(c)
    excess = wide(columns, rows) - width
    longest = max(len(r["point"]) for r in rows)
    if excess > 0 and longest > MIN_POINT:
        keep = max(MIN_POINT, longest - excess)
        rows = [{**r, "point": r["point"] if len(r["point"]) <= keep else r["point"][:keep - 1] + "~"} for r in rows]
    for c in DROP_LAST:
        if wide(columns, rows) <= width:
            break
        columns.remove(c)
    return table(rows, columns)


def render(st: dict, all_runs: bool = False, max_rows: int = 40, width: int | None = None) -> str:
    """Counts, a table of the runs with their progress (of the unfinished ones only on a large sweep), then each
    failure's logs. `width` fits the table to a terminal (columns dropped, labels truncated)."""
    counts = {k: v for k, v in st["counts"].items() if v}
    out = [f"sweep {st['name']} at {st['root']}: {st['total']} runs: "
           + ", ".join(f"{v} {k}" for k, v in counts.items())]
    if st.get("migrated_pickles"):
        out.append(f"rewrote {st['migrated_pickles']} queued job pickle(s) from before costlaw's one namespace")
    shown = st["runs"] if all_runs or st["total"] <= max_rows else [r for r in st["runs"] if r["state"] != "completed"]
    listed = shown if all_runs else shown[:max_rows]
    rows = [_row(r) for r in listed]
    if rows:
        out.append(fit_table(rows, width))
    if len(rows) < len(shown):
        out.append(f"... {len(shown) - len(rows)} more not shown (--all lists every run)")
    for r in st["runs"]:
        if r["state"] not in ("failed", "preempted", "incomplete"):
            continue
        out.append("")
        out.append(f"{r['state']}: {r['run_id']} {r['stage']} {r['label']} (job {r['job_id'] or '-'}, "
                   f"{r['job_state'] or 'no job state'})")
        if r.get("error"):
            out.append(f"  error: {r['error']}")
        if r.get("stderr"):
            out.append(f"  {r['stderr_path']}:")
            out.extend(f"    {line}" for line in r["stderr"])
        if r.get("train_log"):
            out.append("  train.log:")
            out.extend(f"    {line}" for line in r["train_log"])
    return "\n".join(out)


def running_lines(st: dict) -> list[str]:
    """One plain line per pending or running run, for a watch that is not on a terminal."""
    out = []
    for r in st["runs"]:
        if r["state"] not in ("pending", "running"):
            continue
        row = _row(r)
        out.append(f"  {r['run_id']} {r['state']} step {row['step']} loss {row['loss']} tok/s {row['tok/s']} "
                   f"ETA {row['ETA']}  {row['point']}")
    return out


def wait(root: str | Path, poll_s: float = 5.0, timeout_s: float | None = None, echo=None, stop=None) -> dict:
    """Poll until no run is pending or running (one batched poll per interval), or a signal comes to `stop` (a
    sweeps.interrupt.Interrupts)."""
    t0 = time.monotonic()
    last = None
    while True:
        st = collect(root)
        c = st["counts"]
        line = ", ".join(f"{v} {k}" for k, v in c.items() if v)
        if echo and line != last:
            echo(f"{time.monotonic() - t0:6.0f} s  {line}")
            last = line
        if not c["pending"] and not c["running"]:
            return st
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            return st
        if stop is not None:
            if stop.sleep(poll_s) or stop.is_set():
                return st
        else:
            time.sleep(poll_s)
