"""Job liveness without one call per job: one `sacct` (submitit's batched watcher) plus one `squeue` for the
jobs sacct does not list yet, and a process check for local jobs."""

from __future__ import annotations

import os
import shutil
import subprocess


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
