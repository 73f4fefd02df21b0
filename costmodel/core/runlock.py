"""One trainer per run directory: `<run_dir>/trainer.lock`, held by the process that trains, for its whole life.

A sweep's executor knows the PID of whatever it launched (submitit's controller, a Slurm step), which can die
while the trainer keeps training, or live on after it. So the trainer itself takes the lock: rank 0 opens
`trainer.lock`, takes an exclusive non-blocking `fcntl.flock` on it, writes who holds it (pid, process group,
hostname, start time, Slurm job) and keeps its mtime fresh from a heartbeat thread until it releases. A second
trainer on the same directory is refused with one line before it writes anything. The kernel drops a flock
when its holder dies however it dies, so a lock file left by a killed trainer is taken over by the next one.

Release (every exit path: `with RunLock(...)`, or `release()` in a `finally`) removes the file while still
holding the lock, so a finished run directory holds only what the store reads. An acquirer that opened the old
file just before it was removed finds the path gone or pointing at another inode after its flock succeeds, and
tries again on the new file.

Across hosts flock is not to be trusted: on NFS it is emulated with byte-range locks that some mounts keep
local to one client (`local_lock=flock`) and whose lease outlives a dead node, so two nodes can each believe
they hold it. So `trainer_alive` answers by flock only for a holder on this host, and for a holder on another
host by the heartbeat's age against `STALE_S`; an acquirer whose flock succeeded still refuses a lock whose
holder is on another host with a fresh heartbeat (unless that holder is this same Slurm job, requeued: Slurm
killed it before starting us). The heartbeat is a thread, not the training loop, because a live trainer goes
minutes without a log interval (corpus preparation, compilation, evaluation, a slow interval); that makes the
lock say "a trainer process is alive here", which is what resubmitting must not race with, hung or not.
Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.rundir import LOCK, utc_now

HEARTBEAT_S = 30.0  # how often a holder refreshes the lock file's mtime
# a holder on another host is alive while its heartbeat is younger than this: ten beats, which absorbs NFS
# attribute caching (acregmax is 60 s by default) and the clock skew between the nodes and the file server
STALE_S = 300.0
RETRY_S = 2.0  # an acquirer retries this long: `trainer_alive` holds a shared probe lock for microseconds


def lock_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOCK


def _host() -> str:
    return socket.gethostname()


def _read_info(path: Path) -> dict:
    """The holder's record, or {} when the file is absent, empty or mid-write."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _age(path: Path) -> float | None:
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None


def _foreign_and_fresh(info: dict, age: float | None) -> bool:
    """A holder on another host whose heartbeat is recent, and which is not an earlier run of this Slurm job."""
    if not info or info.get("hostname") == _host() or age is None or age >= STALE_S:
        return False
    job = os.environ.get("SLURM_JOB_ID")
    return not (job and info.get("slurm_job_id") == job)


def _holder_line(info: dict, age: float | None) -> str:
    if not info:
        return "another process (holder not recorded yet)"
    beat = f", heartbeat {age:.0f} s ago" if age is not None else ""
    return f"pid {info.get('pid')} on {info.get('hostname')} since {info.get('started')}{beat}"


class RunLock:
    """The trainer's hold on one run directory (see the module docstring). `role` is recorded for readers."""

    def __init__(self, run_dir: str | Path, role: str = "trainer"):
        self.run_dir = Path(run_dir)
        self.path = lock_path(self.run_dir)
        self.role = role
        self.fd: int | None = None
        self.info: dict = {}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _refuse(self, info: dict, age: float | None) -> CostlawError:
        return CostlawError(f"run_dir: {str(self.run_dir)!r} is being trained by {_holder_line(info, age)}; wait "
                            f"for it to finish, or remove {self.path} if that process is gone")

    def acquire(self) -> RunLock:
        """Take the lock or raise a one-line CostlawError naming the holder. Writes nothing when refused."""
        if self.fd is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + RETRY_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise self._refuse(_read_info(self.path), _age(self.path)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file between our open and our flock: lock the current one
        previous, age = _read_info(self.path), _age(self.path)
        if _foreign_and_fresh(previous, age):
            os.close(fd)
            raise self._refuse(previous, age)
        self.info = {"pid": os.getpid(), "pgid": os.getpgid(0), "hostname": _host(), "started": utc_now(),
                     "started_unix": time.time(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                     "role": self.role, "heartbeat_s": HEARTBEAT_S}
        data = (json.dumps(self.info) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self.fd = fd
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="costlaw-runlock", daemon=True)
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            # a file-server hiccup must not stop training (the next beat retries), and release() closes the fd
            # after waiting 5 s for a beat hung on the file server
            with contextlib.suppress(OSError, TypeError):
                os.utime(self.fd)

    def release(self) -> None:
        """Remove the lock file and drop the lock. Safe to call twice."""
        if self.fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        fd, self.fd = self.fd, None
        try:
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    os.unlink(self.path)  # while still locked: a waiting acquirer re-checks the inode
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)


def trainer_alive(run_dir: str | Path) -> dict | None:
    """The holder of `run_dir`'s trainer lock if a live process holds it, else None.

    The holder's record (pid, pgid, hostname, started, slurm_job_id, role) plus `heartbeat_age_s` and `checked`:
    "flock" when the holder is on this host (a shared, non-blocking flock probe: it fails while the holder lives,
    and a dead holder's lock was dropped by the kernel), "heartbeat" when it is on another host, where flock
    over NFS cannot be trusted (module docstring) and the holder counts as alive while its heartbeat is younger
    than `STALE_S`.
    """
    path = lock_path(run_dir)
    info, age = _read_info(path), _age(path)
    if age is None:
        return None
    if info.get("hostname") not in (None, _host()):
        return {**info, "heartbeat_age_s": age, "checked": "heartbeat"} if age < STALE_S else None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        return {**(info or _read_info(path)), "heartbeat_age_s": age, "checked": "flock"}
    finally:
        os.close(fd)
    return None
