"""Sweeps submitted before costlaw became one import namespace keep working.

Their submitit pickles (`<root>/submitit/**/*.pkl`: a queued job's task, a requeued job's checkpoint) name
the old top-level modules (`sweeps.worker`), which no longer import. `migrate_pickles` rewrites each such
pickle with the new names (`costlaw.sweeps.worker`); `costlaw sweep status` and `resubmit` call it, so
running either once after upgrading lets queued jobs start. The task's `train_fn` string is mapped by
`RunTask.__setstate__` through `new_name`. Run ids do not change: they hash the config, not the code's paths.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from costlaw import SUBPACKAGES


def new_name(module: str) -> str:
    """`sweeps.worker` -> `costlaw.sweeps.worker`; any other name unchanged."""
    return f"costlaw.{module}" if module.partition(".")[0] in SUBPACKAGES else module


class _Renaming(pickle.Unpickler):
    renamed = 0

    def find_class(self, module, name):
        new = new_name(module)
        self.renamed += new != module
        return super().find_class(new, name)


def migrate_pickles(root: str | Path) -> int:
    """Rewrite the submitit pickles under `root` that name old modules; returns how many were rewritten."""
    import cloudpickle  # submitit's own pickler (a dependency of submitit)

    from costlaw.costmodel.core.files import write_atomic

    n = 0
    folder = Path(root) / "submitit"
    for path in sorted(folder.rglob("*.pkl")) if folder.is_dir() else []:
        data = path.read_bytes()
        if not any(f"{sub}.".encode() in data for sub in SUBPACKAGES):
            continue
        reader = _Renaming(io.BytesIO(data))
        try:
            obj = reader.load()
        except Exception:  # not a pickle of ours (or truncated by a killed writer): submitit reports it
            continue
        if reader.renamed:
            write_atomic(path, cloudpickle.dumps(obj))
            n += 1
    return n
