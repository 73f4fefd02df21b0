"""Checkpoint files: written with a JSON header beside them, read only through torch's safe loader.

`checkpoint.pt` (torch.save format) holds a run's model, optimizer, data position, RNG states and running
statistics. `checkpoint.json` beside it (strict JSON, written atomically after the checkpoint) names the run and
step it belongs to, so a reader refuses another run's checkpoint before it reads a byte of weights. A checkpoint
without a header (written before headers existed, or a process killed between the two writes) has its run id
read through a memory map, which unpickles the small structure but reads no tensor data.

Reading never executes code: every load is `torch.load(weights_only=True)`, which unpickles tensors, containers
and plain values only, so a pickle planted in a shared results folder is refused in one line instead of run.
Format 2 saves RNG states in that vocabulary (numpy's MT19937 state as ints and a list, Python's as lists).
Format 1 pickled numpy's state as an ndarray; those checkpoints still load, with exactly the numpy globals an
ndarray of ints needs allowed (`_reconstruct`, `ndarray`, `dtype`), none of which runs code.
"""

from __future__ import annotations

import random
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import atomic_file, read_json, write_json_atomic
from costlaw.costmodel.core.rundir import CHECKPOINT_HEADER, utc_now

FORMAT = 2  # 2: RNG states as tensors, ints and lists (1: numpy's state as an ndarray)


def _numpy_array_globals() -> list:
    """What a format-1 checkpoint's numpy RNG state needs: an ndarray of uint32 and its dtype. Pickles name the
    reconstructor by the module numpy had when they were written (numpy.core before 2.0, numpy._core after)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    allowed = [np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed.append((_reconstruct, f"{module}._reconstruct"))
    return allowed


LEGACY_GLOBALS = _numpy_array_globals()


def header_path(path: str | Path) -> Path:
    return Path(path).with_name(CHECKPOINT_HEADER)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """The checkpoint, then its header (both atomic). `state` needs "run_id"; "format", "step", "tokens" are
    copied into the header."""
    path = Path(path)
    with atomic_file(path) as f:
        torch.save(state, f)
    write_json_atomic(header_path(path), {"format": state.get("format", FORMAT), "run_id": state["run_id"],
                                          "step": state.get("step"), "tokens": state.get("tokens"),
                                          "checkpoint": path.name, "written": utc_now()})


def _refused(field: str, path: Path, error: Exception) -> CostlawError:
    text = str(error)
    culprit = re.search(r"GLOBAL ([\w.]+)", text)
    refusal = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if culprit:
        why = f"it references {culprit.group(1)}, which no checkpoint holds"
    elif refusal:
        why = f"the safe unpickler refused it: {refusal.group(1).strip()[:120]}"
    else:
        why = f"{type(error).__name__}: {(text.strip().splitlines() or [''])[0][:160]}"
    return CostlawError(f"{field}: {path} is not a checkpoint costlaw can load safely ({why}); remove it, or "
                        "rerun the run that should have written it")


def _safe_load(path: Path, field: str, mmap: bool = False, map_location="cpu") -> dict:
    try:
        with torch.serialization.safe_globals(LEGACY_GLOBALS), warnings.catch_warnings():
            # a foreign pickle's protocol draws a warning the refusal below already covers; errors stay one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # the safe unpickler's refusals, torn or foreign files: one line, never a traceback
        raise _refused(field, path, e) from None
    if not isinstance(state, dict):
        raise CostlawError(f"{field}: {path} holds a {type(state).__name__}, not a costlaw checkpoint; remove it")
    return state


def _check_owner(field: str, path: Path, found, run_id: str) -> None:
    if found != run_id:
        raise CostlawError(f"{field}: {path} belongs to run {found}, not {run_id}; remove it, or point at that "
                           "run's own directory")


def load_checkpoint(path: str | Path, run_id: str, field: str = "checkpoint", map_location="cpu") -> dict:
    """The checkpoint at `path`, which must belong to run `run_id`: checked from the header (or, without one, a
    memory-mapped read of the structure) before any weights are read. Errors are one line under `field`."""
    path = Path(path)
    header = header_path(path)
    if header.exists():
        try:
            owner = read_json(header).get("run_id")
        except (ValueError, AttributeError):
            raise CostlawError(f"{field}: {header} is not a checkpoint header (strict JSON with run_id); remove "
                               f"it to fall back on {path.name} itself") from None
        _check_owner(field, path, owner, run_id)
        state = None
    elif zipfile.is_zipfile(path):  # torch.save's format: the structure alone, storages mapped and unread
        peek = _safe_load(path, field, mmap=True)
        _check_owner(field, path, peek.get("run_id"), run_id)
        del peek
        state = None
    else:  # torch's pre-zip format cannot be mapped; the safe loader reads it whole, still running nothing
        state = _safe_load(path, field, map_location=map_location)
    if state is None:
        state = _safe_load(path, field, map_location=map_location)
    _check_owner(field, path, state.get("run_id"), run_id)  # a header left from before the checkpoint was replaced
    return state


# ---------------------------------------------------------------- RNG states
def rng_state(device: torch.device) -> dict:
    """Every RNG a run draws from, in types the safe loader accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    s = {"torch": torch.get_rng_state(),
         "numpy": {"name": name, "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                   "cached_gaussian": float(cached)},
         "python": [version, list(internal), gauss_next]}
    if device.type == "cuda":
        s["cuda"] = torch.cuda.get_rng_state(device)
    return s


def set_rng_state(s: dict, device: torch.device) -> None:
    """Restore `rng_state`'s output, or a format-1 checkpoint's (numpy's state as its get_state tuple)."""
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    if isinstance(n, dict):
        n = (n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(n)
    version, internal, gauss_next = s["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if device.type == "cuda" and "cuda" in s:
        torch.cuda.set_rng_state(s["cuda"], device)
