"""Where and with what a run ran: versions, GPU, host, Slurm ids, and the code itself.

Provenance without prose: besides git's HEAD and a dirty flag, a run records `source_sha256`, a hash of every
source file of the costlaw packages as they were loaded (whatever git says, it names the code that ran), and
`git_diff_sha256`, a hash of the uncommitted diff against HEAD when there is one (HEAD plus that diff is the
tree that ran). Two runs with the same `source_sha256` ran the same code. `torchao`: its version if the process
loaded it (an fp8 run does, runs/fp8.py), else None. Standard library only.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from costlaw import SUBPACKAGES

# Slurm variables worth keeping with a run (the job, its array task, the node)
SLURM_VARS = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
              "slurm_array_task_id": "SLURM_ARRAY_TASK_ID", "slurm_procid": "SLURM_PROCID",
              "slurm_nodelist": "SLURM_JOB_NODELIST"}
_SOURCE_SUFFIXES = (".py", ".toml", ".html", ".md")


def package_dirs() -> dict[str, Path]:
    """`costlaw` and each of its subpackages -> the folder it is loaded from."""
    out = {}
    for name in ("costlaw", *(f"costlaw.{s}" for s in SUBPACKAGES)):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            out[name] = Path(list(spec.submodule_search_locations)[0]).resolve()
    return out


@functools.cache
def source_sha256() -> str:
    """sha256 over (package-relative path, bytes) of every source file of the costlaw packages."""
    h = hashlib.sha256()
    for name, folder in sorted(package_dirs().items()):
        for p in sorted(folder.rglob("*")):
            if p.suffix in _SOURCE_SUFFIXES and p.is_file() and "__pycache__" not in p.parts:
                rel = f"{name}/{p.relative_to(folder).as_posix()}"
                data = p.read_bytes()
                h.update(f"{rel}\0{len(data)}\0".encode() + data)
    return h.hexdigest()


def _git(where: Path, *args: str, timeout: float = 30) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.decode(errors="replace") if out.returncode == 0 else None


@functools.cache
def git_state(path: str | None = None) -> tuple[str | None, bool | None, str | None]:
    """(commit, dirty, sha256 of `git diff HEAD` or None when clean) of the checkout holding `path` (default: this
    source tree); (None, None, None) outside a git checkout."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    commit = _git(where, "rev-parse", "HEAD", timeout=10)
    if commit is None:
        return None, None, None
    diff = _git(where, "diff", "HEAD", "--no-ext-diff", "--binary")
    dirty = None if diff is None else bool(diff.strip())
    return commit.strip(), dirty, hashlib.sha256(diff.encode()).hexdigest() if dirty else None


def env_info(device: str = "cpu") -> dict:
    """Where and with what a run ran: GPU, versions, the code (git and source hashes), host, Slurm ids."""
    try:
        from importlib.metadata import version

        costlaw_version = version("costlaw")
    except Exception:  # not installed (running from a source tree)
        costlaw_version = None
    gpu = torch_version = cuda = numpy_version = None
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:
        pass
    try:
        import torch

        torch_version, cuda = torch.__version__, torch.version.cuda
        if device.startswith("cuda") and torch.cuda.is_available():
            gpu = torch.cuda.get_device_name()
    except ImportError:
        pass
    commit, dirty, diff_sha = git_state()
    env = {"gpu": gpu, "device": device, "torch": torch_version, "cuda": cuda,
           "python": platform.python_version(), "numpy": numpy_version,
           "git_commit": commit, "git_dirty": dirty, "git_diff_sha256": diff_sha, "source_sha256": source_sha256(),
           "hostname": socket.gethostname(), "costlaw": costlaw_version, "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "torchao": getattr(sys.modules.get("torchao"), "__version__", None)}
    env.update({k: os.environ.get(v) for k, v in SLURM_VARS.items()})
    return env
