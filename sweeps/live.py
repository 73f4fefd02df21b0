"""A run's progress for `costlaw sweep status`: step / total, last loss, tokens/s and ETA, from the last lines of
its metrics.jsonl. Read from the end (a bounded read, however long the file), so watching a large sweep costs a
few KB per run per refresh.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

TAIL_BYTES = 16 * 1024  # metrics lines are ~200 B: the last two always fit


def last_lines(path: Path, n: int = 2) -> list[dict]:
    """The last `n` complete JSON lines of `path` (oldest first); a torn last line (a writer mid-append) is left
    out, and so is anything that does not parse."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            chunk = f.read()
    except OSError:
        return []
    lines = chunk.split(b"\n")
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first may be a line's tail
    out = []
    for raw in reversed(lines):
        if len(out) == n:
            break
        try:
            row = json.loads(raw)
        except ValueError:
            continue
        if isinstance(row, dict):
            out.append(row)
    return out[::-1]


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def progress(metrics: Path, run: dict, state: str) -> dict:
    """`step`, `total_steps`, `loss`, `tokens_per_s`, `eta_s` (running runs only) and `updated_s` (seconds since
    the last metrics line) of one run; None where unknown. `run` is its sweep.json record (its plan row)."""
    total = run.get("steps")
    out = {"step": None, "total_steps": total, "loss": None, "tokens_per_s": None, "eta_s": None, "updated_s": None}
    rows = last_lines(metrics)
    if not rows:
        return out
    last = rows[-1]
    step, tokens = _num(last.get("step")), _num(last.get("tokens"))
    out["step"] = int(step) if step is not None else None
    out["loss"] = _num(last.get("loss"))
    tps = _num(last.get("tokens_per_s"))
    if tps is None and len(rows) == 2:  # a trainer that does not log it: the last interval's rate
        t0, t1 = _num(rows[0].get("time_s")), _num(last.get("time_s"))
        k0 = _num(rows[0].get("tokens"))
        if None not in (t0, t1, k0, tokens) and t1 > t0:
            tps = (tokens - k0) / (t1 - t0)
    out["tokens_per_s"] = tps
    with contextlib.suppress(OSError):
        out["updated_s"] = max(0.0, time.time() - metrics.stat().st_mtime)
    if state == "running" and tps and step and total and tokens and step < total:
        out["eta_s"] = (total - step) * (tokens / step) / tps
    return out


def duration(seconds: float | None) -> str | None:
    """`42s`, `7m05s`, `3h12m`, `2d04h`."""
    if seconds is None:
        return None
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
