"""Job liveness without one call per job: one `sacct` (submitit's batched watcher) plus one `squeue` for the
jobs sacct does not list yet, and a process check for local jobs: its controller's pid and its process group
(the local executor starts each controller in a session of its own, so the group holds the controller and its
tasks, and outlives a killed controller while a task still trains)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time


def pid_alive(pid) -> bool:
    try:
        pid = int(pid)
        os.kill(pid, 0)
    except (ValueError, TypeError, ProcessLookupError, PermissionError):
        return False
    try:  # a zombie (exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


_GROUPS_TTL_S = 0.5  # a status over many runs reads /proc once, not once per run
_groups: tuple[float, frozenset] = (float("-inf"), frozenset())


def _live_groups(marker: str) -> frozenset:
    """Process groups holding a live (not zombie) process of this user whose command line holds `marker`."""
    uid = os.getuid()
    out = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z" or entry.stat().st_uid != uid or int(fields[2]) in out:
                continue
        except (OSError, IndexError, ValueError):
            continue
        if marker in _cmdline(entry.name):
            out.add(int(fields[2]))
    return frozenset(out)


def group_alive(pgid, marker: str = "submitit") -> bool:
    """Whether a live (not zombie) process of this user whose command line holds `marker` is in process group
    `pgid`. A group whose only member is an exited, unreaped controller answers kill(0) but trains nothing, and
    the marker keeps a recycled group id from passing for a job. Without /proc, kill(0) answers."""
    global _groups
    try:
        pgid = int(pgid)
    except (TypeError, ValueError):
        return False
    if pgid <= 1:
        return False
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    at, groups = _groups
    if marker != "submitit" or time.monotonic() - at > _GROUPS_TTL_S:
        groups = _live_groups(marker)
        if marker == "submitit":
            _groups = (time.monotonic(), groups)
    return pgid in groups


def forget_groups() -> None:
    """Drop the /proc snapshot (after starting a job, whose group the snapshot cannot hold yet)."""
    global _groups
    _groups = (float("-inf"), frozenset())


def this_host() -> str:
    return socket.gethostname()


def local_job_alive(job: dict) -> bool:
    """A local job's controller, or any process of its group (a task whose controller was killed), lives. Only
    on the host that started it; elsewhere the run's trainer lock answers (status.run_state)."""
    if job.get("host") not in (None, this_host()):
        return False
    if job.get("pgid") is not None:
        return group_alive(job["pgid"])
    return pid_alive(job.get("job_id"))  # recorded before jobs had groups of their own


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm state of each job id ("123" or "123_4"). sacct records lag slurmctld by a second or two, so
    jobs sacct does not list yet are looked up with one squeue call."""
    if not job_ids or not shutil.which("sacct"):
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    w = SlurmInfoWatcher(delay_s=0)
    for j in job_ids:
        w.register_job(j)
    w.update()
    states = {j: w.get_state(j, mode="cache") for j in job_ids}
    missing = sorted({j.split("_")[0] for j in job_ids if states[j] == "UNKNOWN"})
    if missing and shutil.which("squeue"):
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(missing)],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return states
        seen = dict(line.split(None, 1) for line in out.stdout.splitlines() if " " in line)
        for j in job_ids:
            if states[j] == "UNKNOWN" and j in seen:
                states[j] = seen[j].strip()
    return states
