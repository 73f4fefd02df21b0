"""The run directory: the files a worker writes for the store (docs/run-directory.md is the contract).

Every whole-file write goes to a temporary name in the same directory and is moved into place with
`os.replace`, so a reader sees the old file or the new one, never half of one. `metrics.jsonl` and
`evals.jsonl` are appended one complete line per write and flushed, so a crash leaves a valid prefix
(and `repair_jsonl` drops a torn last line before a resumed run appends to it). `DONE` is written last.

No torch at import time: the store's tests and the sweep planner use these writers without it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

FORMAT = 1
TERMINAL = ("completed", "diverged", "failed")
STATUSES = TERMINAL + ("preempted",)

CONFIG, METRICS, EVALS, SUMMARY, DONE = "config.json", "metrics.jsonl", "evals.jsonl", "summary.json", "DONE"
CHECKPOINT, LOG = "checkpoint.pt", "train.log"

# Slurm variables worth keeping with a run (the job, its array task, the node)
SLURM_VARS = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
              "slurm_array_task_id": "SLURM_ARRAY_TASK_ID", "slurm_procid": "SLURM_PROCID",
              "slurm_nodelist": "SLURM_JOB_NODELIST"}


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jsonable(obj):
    """JSON has no NaN/inf: write them as null so every reader (json, DuckDB) parses the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    return obj


def dumps(obj, indent: int | None = None) -> str:
    return json.dumps(_jsonable(obj), indent=indent, sort_keys=False, allow_nan=False)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the store may read as another user
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | Path, obj) -> None:
    write_atomic(path, dumps(obj, indent=2) + "\n")


def append_jsonl(path: str | Path, obj) -> None:
    """Append one JSON line in a single write and flush it (a crash leaves whole lines only, or a torn
    last line that `repair_jsonl` removes)."""
    line = (dumps(obj) + "\n").encode()
    with open(path, "ab") as f:
        f.write(line)
        f.flush()


def repair_jsonl(path: str | Path) -> int:
    """Drop a torn (unterminated) last line left by a crash mid-write. Returns the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)
    return len(data) - keep


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


# ---------------------------------------------------------------- the run directory
class RunDir:
    """One run directory. Writers follow docs/run-directory.md; readers are for the worker itself
    (resume, idempotence) and for tests, not for the store (which reads the files by their format)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # ---- writers
    def write_config(self, cfg, base_run_id: str | None = None, sweep: str | None = None,
                     extra: dict | None = None) -> dict:
        """config.json: what this run is. `cfg` is a RunConfig (or anything with to_dict/run_id/model)."""
        self.path.mkdir(parents=True, exist_ok=True)
        doc = {"format": FORMAT, "run_id": cfg.run_id, "model_id": cfg.model.config_id, "config": cfg.to_dict(),
               "base_run_id": base_run_id, "sweep": sweep, "created": utc_now()}
        if extra:
            doc.update(extra)
        write_json_atomic(self.file(CONFIG), doc)
        return doc

    def append_metrics(self, row: dict) -> None:
        append_jsonl(self.file(METRICS), row)

    def append_eval(self, name: str, tags: dict, metrics: dict) -> None:
        append_jsonl(self.file(EVALS), {"eval": name, "tags": tags, "metrics": metrics})

    def write_summary(self, summary: dict) -> None:
        status = summary.get("status")
        if status not in STATUSES:
            raise ValueError(f"summary status {status!r} is not one of {', '.join(STATUSES)}")
        write_json_atomic(self.file(SUMMARY), {"format": FORMAT, **summary})

    def write_done(self, run_id: str, status: str) -> None:
        """DONE, last of all, and only for a terminal status."""
        if status not in TERMINAL:
            raise ValueError(f"DONE is only written for {', '.join(TERMINAL)}, not {status!r}")
        write_atomic(self.file(DONE), json.dumps({"run_id": run_id, "status": status}) + "\n")

    def log(self, line: str) -> None:
        """train.log: human-readable, timestamped."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.file(LOG), "a") as f:
            f.write(f"{utc_now()} {line}\n")

    def reset(self) -> None:
        """Start over: remove everything a previous attempt wrote (a fresh, non-resumed run)."""
        for name in (DONE, SUMMARY, METRICS, EVALS, CHECKPOINT, CONFIG):
            with contextlib.suppress(FileNotFoundError):
                self.file(name).unlink()

    def clean_tmp(self) -> int:
        """Remove temporary files a killed writer left behind (`.NAME.*.tmp`). Returns how many."""
        n = 0
        for p in self.path.glob(".*.tmp") if self.path.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
        return n

    # ---- readers
    def exists(self) -> bool:
        return self.file(CONFIG).exists()

    def is_done(self) -> bool:
        return self.file(DONE).exists()

    def done(self) -> dict | None:
        return read_json(self.file(DONE)) if self.is_done() else None

    def finished_or_claim(self, run_id: str) -> dict | None:
        """The summary if this directory holds the finished run `run_id` (training is idempotent), else None;
        a directory that holds another run is refused."""
        if self.is_done():
            return self.summary()
        existing = self.config()
        if existing is not None and existing.get("run_id") != run_id:
            from costlaw.costmodel.errors import CostlawError

            raise CostlawError(f"run_dir: {str(self.path)!r} holds run {existing.get('run_id')}, not {run_id}; "
                               "use the run's own directory (<root>/runs/<run_id>)")
        return None

    def config(self) -> dict | None:
        return read_json(self.file(CONFIG)) if self.file(CONFIG).exists() else None

    def summary(self) -> dict | None:
        return read_json(self.file(SUMMARY)) if self.file(SUMMARY).exists() else None

    def metrics(self) -> list[dict]:
        return read_jsonl(self.file(METRICS))

    def evals(self) -> list[dict]:
        return read_jsonl(self.file(EVALS))

    def status(self) -> str:
        """completed | diverged | failed (DONE), preempted (summary without DONE), running/incomplete, or absent."""
        if self.is_done():
            return self.done()["status"]
        s = self.summary()
        if s is not None:
            return s["status"]
        return "incomplete" if self.exists() else "absent"


# ---------------------------------------------------------------- environment
def git_state(path: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding `path` (default: this source tree); (None, None) if none."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None, None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
        return commit.stdout.strip(), (bool(dirty.stdout.strip()) if dirty.returncode == 0 else None)
    except (OSError, subprocess.TimeoutExpired):
        return None, None


def env_info(device: str = "cpu") -> dict:
    """Where and with what a run ran: GPU, versions, git commit + dirty flag, host, Slurm ids."""
    import numpy

    try:
        from importlib.metadata import version

        costlaw_version = version("costlaw")
    except Exception:  # not installed (running from a source tree)
        costlaw_version = None
    gpu = None
    torch_version = None
    cuda = None
    if "torch" in sys.modules or device != "cpu":
        import torch

        torch_version = torch.__version__
        cuda = torch.version.cuda
        if device.startswith("cuda") and torch.cuda.is_available():
            gpu = torch.cuda.get_device_name()
    else:
        try:
            import torch

            torch_version = torch.__version__
            cuda = torch.version.cuda
        except ImportError:
            pass
    commit, dirty = git_state()
    env = {"gpu": gpu, "device": device, "torch": torch_version, "cuda": cuda,
           "python": platform.python_version(), "numpy": numpy.__version__,
           "git_commit": commit, "git_dirty": dirty, "hostname": socket.gethostname(),
           "costlaw": costlaw_version, "platform": platform.platform(), "cpu_count": os.cpu_count()}
    env.update({k: os.environ.get(v) for k, v in SLURM_VARS.items()})
    return env
