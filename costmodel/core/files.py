"""Files that other processes read: one atomic write, strict JSON, append-only JSON lines.

Every whole-file write goes to a unique temporary name in the target's directory, is fsynced, and is moved
into place with `os.replace`, so a reader sees the old file or the new one, never half of one, and two
writers never share a temporary file. JSON lines are appended one complete line per write and flushed, so a
crash leaves whole lines only, or a torn last line that `repair_jsonl` removes before a resumed writer
appends to it.

JSON here is strict: NaN and infinities become null (JSON has neither; DuckDB and browsers refuse them),
numpy and torch scalars become Python numbers, tuples become lists. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path


def clean_json(obj):
    """`obj` as strict JSON values: non-finite floats to None, scalars with `.item()` (numpy, torch) and
    arrays with `.tolist()` to Python values, dict keys to strings, tuples to lists."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):  # numpy's float64 too: it subclasses float
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if hasattr(obj, "tolist") and getattr(obj, "ndim", 0):  # numpy arrays
        return clean_json(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return clean_json(obj.item())
    return obj


def dumps(obj, indent: int | None = None, sort_keys: bool = False) -> str:
    return json.dumps(clean_json(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: int = 0o644):
    """A binary file that becomes `path` when the block ends without an error (fsynced, then `os.replace`),
    and leaves nothing behind when it raises. For writers that stream (torch.save, savefig)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600; the store may read as another user
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def move_into_place(tmp: str | Path, path: str | Path) -> None:
    """A complete file another library wrote (a DuckDB database) moved over `path` in its directory: fsynced
    first, so a crash leaves the old file or the whole new one."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def write_json_atomic(path: str | Path, obj, indent: int | None = 2) -> None:
    write_atomic(path, dumps(obj, indent=indent) + "\n")


def append_jsonl(path: str | Path, obj) -> None:
    """Append one JSON line in a single write and flush it."""
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
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def clean_tmp(directory: str | Path) -> int:
    """Remove the temporary files that killed writers left in `directory` (`.NAME.*.tmp`). Returns how many."""
    directory = Path(directory)
    n = 0
    for p in directory.glob(".*.tmp") if directory.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n
