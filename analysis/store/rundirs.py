"""Reading run directories by their documented format (docs/run-directory.md); imports nothing from runs.

`find_run_dirs` finds run directories (a directory holding config.json); `classify` sorts each by its small files:
complete (DONE present and its id/status agree with config.json and summary.json), incomplete (no DONE:
still running, preempted or killed) or corrupt. The large files of complete runs are parsed in bulk:
`parse_steps` reads every metrics.jsonl of a batch in one multi-threaded polars `scan_ndjson` (strict
types) and falls back to one run at a time (and to Python's json, which also takes NaN) only when that
scan fails, so a bad file costs time only when there is one, and is named with its line.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from costlaw.analysis.store.flatten import Corrupt, canonical_json
from costlaw.costmodel.core.rundir import CONFIG, DONE, EVALS, METRICS, SUMMARY, TERMINAL

STEP_SCHEMA = {"step": pl.Int64, "tokens": pl.Int64, "loss": pl.Float64, "lr": pl.Float64,
               "grad_norm": pl.Float64, "tokens_per_s": pl.Float64, "time_s": pl.Float64}
_STEP_INTS = ("step", "tokens")


@dataclass
class Found:
    """One run directory after classification."""

    path: Path
    state: str  # complete | incomplete | corrupt
    run_id: str | None = None
    reason: str = ""  # why corrupt; for incomplete, what is known (last step, summary status)
    doc: dict = field(default_factory=dict)  # config.json
    summary: dict = field(default_factory=dict)
    done_mtime_ns: int = 0
    fingerprint: str = ""
    sizes: tuple[int, int] = (-1, -1)  # metrics.jsonl, evals.jsonl bytes when classified (-1: absent)


def find_run_dirs(root: Path) -> list[Path]:
    """Directories under root (root included) holding config.json, without descending into them."""
    out: list[Path] = []
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        if any(e.name == CONFIG and e.is_file() for e in entries):
            out.append(Path(d))
            continue
        stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    return sorted(out)


def _load_json(path: Path, name: str):
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise Corrupt(f"{name}: missing") from None
    try:
        return json.loads(data), data
    except (ValueError, UnicodeDecodeError) as e:
        raise Corrupt(f"{name}: not valid JSON ({e})") from None


def _object(value, name: str) -> dict:
    if not isinstance(value, dict):
        raise Corrupt(f"{name}: must be a JSON object, got {type(value).__name__}")
    return value


def classify(path: Path) -> Found:
    """Read config.json, DONE and summary.json (never the JSONL files of a complete run) and classify."""
    try:
        doc, config_bytes = _load_json(path / CONFIG, CONFIG)
        doc = _object(doc, CONFIG)
        run_id = doc.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            raise Corrupt("config.json: run_id missing")
    except Corrupt as e:
        state = "corrupt" if (path / DONE).exists() else "incomplete"
        return Found(path, state, reason=str(e))
    try:
        done_stat = (path / DONE).stat()
    except FileNotFoundError:
        return Found(path, "incomplete", run_id, reason=_progress(path))
    try:
        done, done_bytes = _load_json(path / DONE, DONE)
        done = _object(done, DONE)
        summary, summary_bytes = _load_json(path / SUMMARY, SUMMARY)
        summary = _object(summary, SUMMARY)
        if done.get("run_id") != run_id:
            raise Corrupt(f"DONE: run_id {done.get('run_id')!r} disagrees with config.json's {run_id!r}")
        if summary.get("run_id") not in (None, run_id):
            raise Corrupt(f"summary.json: run_id {summary.get('run_id')!r} disagrees with config.json's {run_id!r}")
        if done.get("status") not in TERMINAL:
            raise Corrupt(f"DONE: status {done.get('status')!r} is not one of {', '.join(TERMINAL)}")
        if summary.get("status") != done["status"]:
            raise Corrupt(f"summary.json: status {summary.get('status')!r} disagrees with DONE's {done['status']!r}")
    except Corrupt as e:
        return Found(path, "corrupt", run_id, reason=str(e))
    h = hashlib.sha256()
    for part in (config_bytes, summary_bytes, done_bytes):
        h.update(len(part).to_bytes(8, "little") + part)
    sizes = (file_size(path / METRICS), file_size(path / EVALS))
    for size in sizes:
        h.update(size.to_bytes(8, "little", signed=True))
    return Found(path, "complete", run_id, doc=doc, summary=summary, done_mtime_ns=done_stat.st_mtime_ns,
                 fingerprint=h.hexdigest(), sizes=sizes)


def _progress(path: Path) -> str:
    """What an incomplete run has got to: its last whole metrics line and its summary's status, if any.
    A torn last line (a writer killed mid-append) is expected here and ignored."""
    parts = []
    try:
        with open(path / METRICS, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read().split(b"\n")
        for line in reversed(tail):
            try:
                step = json.loads(line).get("step")
            except (ValueError, AttributeError):
                continue
            parts.append(f"last step {step}")
            break
    except FileNotFoundError:
        parts.append("no metrics yet")
    try:
        status = json.loads((path / SUMMARY).read_bytes()).get("status")
        parts.append(f"summary status {status}")
    except (FileNotFoundError, ValueError, AttributeError):
        pass
    return "no DONE; " + ", ".join(parts)


# ---------------------------------------------------------------- metrics.jsonl
def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    return data if not data or data.endswith(b"\n") else data + b"\n"


def _lines(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line.strip())


def _steps_one(data: bytes) -> pl.DataFrame:
    """One run's metrics: polars (strict), else Python's json (accepts NaN, checks types line by line)."""
    n = _lines(data)
    if n == 0:
        return pl.DataFrame(schema=STEP_SCHEMA)
    try:
        df = pl.read_ndjson(io.BytesIO(data), schema=STEP_SCHEMA)
        if df.height == n and df["step"].null_count() == 0:
            return df
    except Exception:  # noqa: BLE001 -- any polars failure sends us to the line-by-line path that names the line
        pass
    cols: dict[str, list] = {k: [] for k in STEP_SCHEMA}
    for i, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            raise Corrupt(f"metrics.jsonl: line {i} is not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise Corrupt(f"metrics.jsonl: line {i} is not a JSON object")
        for k in STEP_SCHEMA:
            v = obj.get(k)
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise Corrupt(f"metrics.jsonl: line {i}: {k} must be a number, got {v!r}")
                if k in _STEP_INTS:
                    if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
                        raise Corrupt(f"metrics.jsonl: line {i}: {k} must be a whole number, got {v!r}")
                    v = int(v)
                else:
                    v = float(v) if math.isfinite(v) else None  # as runs/ writes NaN/inf: null
            elif k == "step":
                raise Corrupt(f"metrics.jsonl: line {i} has no step")
            cols[k].append(v)
    return pl.DataFrame(cols, schema=STEP_SCHEMA)


_GLOB = set("*?[]{}")  # polars reads a list of paths as globs: such a path would silently read nothing


def _scan_steps(runs: list[Found]) -> pl.DataFrame | None:
    """All the runs' metrics in one multi-threaded polars scan; None when that fails anywhere."""
    paths = {str(f.path / METRICS): f.run_id for f in runs if file_size(f.path / METRICS) > 0}
    if not paths:
        return pl.DataFrame(schema={"run_id": pl.String, **STEP_SCHEMA})
    if any(_GLOB & set(p) for p in paths):
        return None
    try:
        df = pl.scan_ndjson(list(paths), schema=STEP_SCHEMA, include_file_paths="_path").collect()
    except Exception:  # noqa: BLE001 -- a bad line somewhere: the per-run path finds and names it
        return None
    if df["step"].null_count() or df["_path"].n_unique() != len(paths):
        return None
    run_id = pl.col("_path").replace_strict(list(paths), list(paths.values()), return_dtype=pl.String)
    return df.select(run_id.alias("run_id"), *STEP_SCHEMA)


def file_size(path: Path) -> int:
    """Bytes in `path`, or -1 when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def parse_steps(runs: list[Found]) -> tuple[pl.DataFrame, dict[str, str]]:
    """Steps of complete runs (last line wins for a repeated step) and {run_id: reason} for bad files."""
    bad: dict[str, str] = {}
    steps = _scan_steps(runs)
    if steps is None:
        frames = []
        for f in runs:
            try:
                one = _steps_one(_read(f.path / METRICS))
            except Corrupt as e:
                bad[f.run_id] = str(e)
                continue
            frames.append(one.select(pl.lit(f.run_id, dtype=pl.String).alias("run_id"), *STEP_SCHEMA))
        steps = pl.concat(frames) if frames else pl.DataFrame(schema={"run_id": pl.String, **STEP_SCHEMA})
    negative = steps.filter(pl.col("step") < 0)["run_id"].unique().to_list()
    if negative:
        bad.update({rid: "metrics.jsonl: a step is negative" for rid in negative})
        steps = steps.filter(~pl.col("run_id").is_in(negative))
    # a run logged in order has strictly increasing steps; only otherwise (a resume) look for repeats
    repeats = (pl.col("run_id") == pl.col("run_id").shift()) & (pl.col("step") <= pl.col("step").shift())
    if steps.select(repeats.any()).item():
        steps = steps.unique(subset=["run_id", "step"], keep="last", maintain_order=True)
    return steps, bad


# ---------------------------------------------------------------- evals.jsonl
_TAGS_JSON: dict[tuple, str] = {}  # tags repeat across runs (contexts, buckets): serialise each set once


def _evals_lines(data: bytes) -> list[tuple[int, object]]:
    """(line number, parsed JSON) of each non-blank line; one decoder call for the whole file when it is
    clean, line by line (to name the bad line) when it is not."""
    numbered = [(i, line) for i, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    try:
        objs = json.loads(b"[" + b",".join(line for _, line in numbered) + b"]")
        if len(objs) == len(numbered):
            return [(i, obj) for (i, _), obj in zip(numbered, objs)]
    except (ValueError, UnicodeDecodeError):
        pass
    out = []
    for i, line in numbered:
        try:
            out.append((i, json.loads(line)))
        except (ValueError, UnicodeDecodeError) as e:
            raise Corrupt(f"evals.jsonl: line {i} is not valid JSON ({e})") from None
    return out


def parse_evals(f: Found) -> list[tuple]:
    """(run_id, eval, tags JSON, metric, value) rows; the last line wins for a repeated (eval, tags, metric)."""
    rows: dict[tuple, float | None] = {}
    for i, obj in _evals_lines(_read(f.path / EVALS)):
        if not isinstance(obj, dict) or not isinstance(obj.get("eval"), str):
            raise Corrupt(f"evals.jsonl: line {i} needs an object with a string eval")
        tags, metrics = obj.get("tags") or {}, obj.get("metrics")
        if not isinstance(tags, dict) or not isinstance(metrics, dict):
            raise Corrupt(f"evals.jsonl: line {i}: tags and metrics must be objects")
        for k, v in tags.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (str, int, float))):
                raise Corrupt(f"evals.jsonl: line {i}: tag {k} must be a string or a number, got {v!r}")
        key = tuple((k, type(v), v) for k, v in tags.items())  # 1 and 1.0 serialise differently
        key_tags = _TAGS_JSON.get(key)
        if key_tags is None:
            if len(_TAGS_JSON) > 100_000:  # per-sample tags: do not grow without bound
                _TAGS_JSON.clear()
            key_tags = _TAGS_JSON[key] = canonical_json(tags)
        for metric, v in metrics.items():
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise Corrupt(f"evals.jsonl: line {i}: metric {metric} must be a number, got {v!r}")
                v = float(v) if math.isfinite(v) else None
            rows[(obj["eval"], key_tags, metric)] = v
    return [(f.run_id, e, t, m, v) for (e, t, m), v in rows.items()]
