"""What `costlaw sweep submit` checks before anything is written or submitted: the executor is reachable, the root
is this sweep's, the device exists where the runs will train, and every run's estimated training memory fits the
device that will train it. Each failure is one line (`field: problem; fix`). Never imports torch: GPUs are found
through CUDA_VISIBLE_DEVICES and nvidia-smi.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from costlaw.costmodel import ConfigError, CostlawError
from costlaw.sweeps import record

EXECUTORS = ("slurm", "local", "debug")
DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def check_order(order: str, executor: str) -> None:
    from costlaw.sweeps.select import ORDERS

    if order not in ORDERS:
        raise CostlawError(f"--order: {order!r} is not one of {', '.join(ORDERS)}")
    if order != "longest" and executor != "local":
        raise CostlawError(f"--order: the {executor} executor does not choose which run starts next (Slurm's own "
                           "priority does, debug runs one at a time); use --executor local or drop --order")


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


# ---------------------------------------------------------------- this machine
def visible_gpus() -> list[int]:
    """GPU indices this machine offers (CUDA_VISIBLE_DEVICES, else nvidia-smi), without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [int(x) for x in env.split(",") if x.strip().isdigit()]
    return list(range(len(_nvidia_smi_memory())))


def _nvidia_smi_memory() -> list[int]:
    """Each GPU's memory in bytes as nvidia-smi reports it; [] without nvidia-smi or a GPU."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [int(float(line)) * 2**20 for line in out.stdout.split() if line.replace(".", "", 1).isdigit()]


def gpu_memory(gpus: list[int]) -> int | None:
    """The smallest memory among the GPUs `gpus` (indices as nvidia-smi numbers them), or None when unknown
    (no nvidia-smi: CUDA_VISIBLE_DEVICES alone names GPUs without saying how large they are)."""
    mem = _nvidia_smi_memory()
    known = [mem[g] for g in gpus if 0 <= g < len(mem)]
    return min(known) if known else None


def ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def machine_cpus() -> int:
    """The CPUs this process may run on (its affinity, as a cgroup or taskset leaves it), not the node's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def default_parallel(runs, gpus_visible: list[int]) -> int:
    need_gpu = max((r.resources.gpus for r in runs), default=0)
    if need_gpu:
        return max(1, len(gpus_visible) // need_gpu)
    cpus = max((r.resources.cpus for r in runs), default=1)
    return max(1, machine_cpus() // cpus)


def thread_share(cpus: int, parallel: int) -> int:
    """Torch CPU threads for one of `parallel` concurrent local trainers: its resources.cpus, but no more than an
    equal share of this machine's CPUs. Oversubscribed OpenMP threads spin against each other: two runs of two
    threads each on two cores trained about 40x slower than with one thread each (400 against 14-18K tokens/s,
    measured on a 2-core machine)."""
    return max(1, min(cpus, machine_cpus() // max(1, parallel)))


# ---------------------------------------------------------------- device and memory
def check_device(device: str, executor: str, runs) -> None:
    """`--device` is auto, cpu, cuda or cuda:N, and a cuda device exists where the runs train: on this machine for
    the local and debug executors, in each run's own GPUs (resources.gpus) for slurm and local jobs."""
    if not isinstance(device, str) or not DEVICE_RE.match(device):
        raise ConfigError("--device", f"{device!r} is not one of auto, cpu, cuda, cuda:N; use auto (a GPU when the "
                                      "run has one) or cpu")
    if executor in ("local", "debug"):
        gpus = visible_gpus()
        need = max((r.resources.gpus for r in runs), default=0)
        if executor == "local" and need > len(gpus):
            raise ConfigError("resources.gpus", f"runs need {need} GPUs but this machine shows {len(gpus)}; lower "
                                                "gpus (0 trains on CPU) or use --executor slurm")
        if device.startswith("cuda") and not gpus:
            raise ConfigError("--device", f"{device} asked for, but this machine shows no GPU (nvidia-smi lists none "
                                          "and CUDA_VISIBLE_DEVICES names none); use --device cpu or auto, or "
                                          "--executor slurm")
        if executor == "debug":  # in this process: every GPU of the machine is visible
            _check_index(device, len(gpus), "this machine shows")
            return
    if not device.startswith("cuda"):
        return
    no_gpu = [r for r in runs if r.resources.gpus < 1]
    if no_gpu:
        r = no_gpu[0]
        raise ConfigError("--device", f"{device} asked for, but stage {r.stage}'s runs have resources.gpus = 0, so "
                                      "their jobs see no GPU; set resources.gpus >= 1 or use --device auto")
    _check_index(device, min(r.resources.gpus for r in runs), "each job is given")


def check_libraries(runs) -> None:
    """The optional libraries runs' configs need are importable here: the local and debug executors train in this
    Python, and submitit's Slurm jobs run the Python that submitted them."""
    fp8 = next((r for r in runs if r.config.train.precision == "fp8"), None)
    if fp8 is not None and importlib.util.find_spec("torchao") is None:
        raise ConfigError("train.precision", f"stage {fp8.stage}'s runs ask for \"fp8\", which needs torchao, and "
                                             "this Python has none; pip install \"costlaw[fp8]\", or use \"bf16\"")


def _check_index(device: str, n: int, what: str) -> None:
    if device.startswith("cuda:") and int(device[5:]) >= n:
        raise ConfigError("--device", f"{device} asked for, but {what} {n} GPU(s), numbered from 0; use cuda:0..."
                                      f"cuda:{max(0, n - 1)} or cuda")


def check_memory(runs, executor: str, device: str, gpu: str, runs_per_gpu: int = 1) -> None:
    """Every run's estimated training memory (runs.config.train_memory_bytes) fits the device that trains it:
    slurm: the --gpu named (one per rank) for GPU runs, resources.mem_gb for CPU runs that give it; local and
    debug: this machine's GPUs (shared by runs_per_gpu runs) or its RAM. Unknown sizes are not checked."""
    from costlaw.costmodel.hardware import gpu as gpu_lookup
    from costlaw.runs.config import check_memory as fits

    local_gpus = visible_gpus() if executor != "slurm" else []
    local_mem = gpu_memory(local_gpus) if local_gpus else None
    ram = ram_bytes()
    for r in runs:
        on_gpu = device != "cpu" and (r.resources.gpus >= 1 if executor != "debug" else bool(local_gpus))
        if executor == "slurm":
            if on_gpu:
                g = gpu_lookup(gpu)
                fits(r.config, g.memory_bytes, f"a {g.name} (--gpu)")
            elif r.resources.mem_gb:
                fits(r.config, int(r.resources.mem_gb * 2**30), f"the job's {r.resources.mem_gb:g} GB "
                                                                "(resources.mem_gb)", device="cpu")
        elif on_gpu:
            if local_mem is not None:
                fits(r.config, local_mem, "this machine's GPU (nvidia-smi)",
                     share=runs_per_gpu if executor == "local" else 1)
        else:
            fits(r.config, ram, "this machine's RAM", device="cpu")


def check_plan_memory(runs, gpu: str) -> None:
    """`costlaw sweep plan`: GPU runs against the --gpu named, CPU runs against resources.mem_gb where given."""
    check_memory(runs, "slurm", "auto", gpu)
