"""Reading run directories by their documented format (docs/run-directory.md); imports nothing from runs.

`classify` sorts a run directory (found by analysis/store/scan.py) by its small files: complete (DONE present,
the directory named by its run id, ids and statuses agreeing across config.json, summary.json and DONE),
incomplete (no DONE: still running, preempted or killed; a problem found is its reason) or corrupt (DONE
present and something wrong). It never raises: whatever a directory holds, the answer is a Found. Files are
read through analysis/store/reading.py (regular files only, strict JSON).

The large files of complete runs are parsed in bulk: `parse_steps` reads every metrics.jsonl of a batch in
one multi-threaded polars `scan_ndjson` (strict types) and falls back to one run at a time (Python's json,
which also takes NaN, with the same checks) only when that scan fails, so a bad file costs time only when
there is one, and is named with its line and key.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from polars.exceptions import PanicException

from costlaw.analysis.store.flatten import FLOAT, INT, canonical_json, coerce
from costlaw.analysis.store.reading import (
    Corrupt,
    OutOfRange,
    file_size,
    loads,
    read_bytes,
    read_doc,
    read_tail,
    regular_size,
    shown,
    text_of,
)
from costlaw.costmodel.core.rundir import CONFIG, DONE, EVALS, METRICS, SUMMARY, TERMINAL

STEP_SCHEMA = {"step": pl.Int64, "tokens": pl.Int64, "loss": pl.Float64, "lr": pl.Float64,
               "grad_norm": pl.Float64, "tokens_per_s": pl.Float64, "time_s": pl.Float64}
_STEP_TYPES = {k: INT if t == pl.Int64 else FLOAT for k, t in STEP_SCHEMA.items()}
_FLOATS = [k for k, t in STEP_SCHEMA.items() if t == pl.Float64]
POLARS_ERRORS = (Exception, PanicException)  # a polars panic is a BaseException: a bad file must not escape

__all__ = ["Found", "classify", "parse_steps", "parse_evals", "file_size", "shown", "METRICS", "EVALS", "DONE"]


@dataclass
class Found:
    """One run directory after classification."""

    path: Path
    state: str  # complete | incomplete | corrupt
    run_id: str | None = None
    reason: str = ""  # why corrupt; for incomplete, what is known (last step, summary status, a problem)
    doc: dict = field(default_factory=dict)  # config.json
    summary: dict = field(default_factory=dict)
    done_mtime_ns: int = 0
    fingerprint: str = ""
    sizes: tuple[int, int] = (-1, -1)  # metrics.jsonl, evals.jsonl bytes when classified (-1: absent)


def _has_done(path: Path) -> bool:
    return os.path.lexists(path / DONE)


def classify(path: Path) -> Found:
    """Read config.json, DONE and summary.json (never the JSONL files of a complete run) and classify."""
    try:
        return _classify(path)
    except Exception as e:  # noqa: BLE001 -- a shape no check foresaw: this run is reported, the others go on
        state = "corrupt" if _has_done(path) else "incomplete"
        return Found(path, state, reason=f"unreadable ({type(e).__name__}: {str(e)[:200]})")


def _classify(path: Path) -> Found:
    done_present = _has_done(path)
    run_id = None
    try:
        doc, config_bytes, _ = read_doc(path / CONFIG, CONFIG)
        run_id = doc.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            run_id = None
            raise Corrupt("config.json: run_id missing (or not a string)")
        if run_id != path.name:
            raise Corrupt(f"config.json: run_id {run_id} is not its directory's name ({shown(path.name)}); a run "
                          f"lives in <root>/runs/<run_id>: move it to .../runs/{run_id}")
    except Corrupt as e:
        if done_present:
            return Found(path, "corrupt", run_id, reason=str(e))
        return Found(path, "incomplete", run_id, reason=f"no DONE; {e}")
    if not done_present:
        return Found(path, "incomplete", run_id, reason=_progress(path))
    try:
        done, done_bytes, done_stat = read_doc(path / DONE, DONE)
        summary, summary_bytes, _ = read_doc(path / SUMMARY, SUMMARY)
        if done.get("run_id") != run_id:
            raise Corrupt(f"DONE: run_id {_show(done.get('run_id'))} disagrees with config.json's {run_id!r}")
        if summary.get("run_id") not in (None, run_id):
            raise Corrupt(f"summary.json: run_id {_show(summary.get('run_id'))} disagrees with config.json's "
                          f"{run_id!r}")
        if done.get("status") not in TERMINAL:
            raise Corrupt(f"DONE: status {_show(done.get('status'))} is not one of {', '.join(TERMINAL)}")
        if summary.get("status") != done["status"]:
            raise Corrupt(f"summary.json: status {_show(summary.get('status'))} disagrees with DONE's "
                          f"{done['status']!r}")
        sizes = (regular_size(path / METRICS, METRICS), regular_size(path / EVALS, EVALS))
    except Corrupt as e:
        return Found(path, "corrupt", run_id, reason=str(e))
    h = hashlib.sha256()
    for part in (config_bytes, summary_bytes, done_bytes):
        h.update(len(part).to_bytes(8, "little") + part)
    for size in sizes:
        h.update(size.to_bytes(8, "little", signed=True))
    return Found(path, "complete", run_id, doc=doc, summary=summary, done_mtime_ns=done_stat.st_mtime_ns,
                 fingerprint=h.hexdigest(), sizes=sizes)


def _show(value, bare: bool = False) -> str:
    """`value` cut to one short phrase for a reason; `bare` prints a string without quotes."""
    text = shown(value) if bare and isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _progress(path: Path) -> str:
    """What an incomplete run has got to: its last whole metrics line and its summary's status, if any.
    A torn last line (a writer killed mid-append) is expected here and ignored."""
    parts = []
    try:
        tail = read_tail(path / METRICS, METRICS, 8192)
        if tail is None:
            parts.append("no metrics yet")
        for line in reversed((tail or b"").split(b"\n")):
            try:
                step = loads(line.decode("utf-8"), METRICS).get("step")
            except (Corrupt, ValueError, AttributeError):
                continue
            parts.append(f"last step {_show(step, bare=True)}")
            break
    except Corrupt as e:
        parts.append(str(e))
    try:
        status = read_doc(path / SUMMARY, SUMMARY)[0].get("status")
        parts.append(f"summary status {_show(status, bare=True)}")
    except Corrupt:
        pass  # no summary yet (or one being replaced): the status is simply unknown
    return "no DONE; " + ", ".join(parts)


# ---------------------------------------------------------------- metrics.jsonl
def _read(path: Path, name: str) -> bytes:
    got = read_bytes(path, name)
    data = b"" if got is None else got[0]
    return data if not data or data.endswith(b"\n") else data + b"\n"


def _finite(df: pl.DataFrame) -> bool:
    """No infinity in the float columns: polars refuses such literals today; if one ever reads as infinity,
    the line-by-line path decides what it means (null for Infinity, an error for 1e400)."""
    return not df.select(pl.any_horizontal(pl.col(_FLOATS).is_infinite().any())).item()


def _steps_one(data: bytes) -> pl.DataFrame:
    """One run's metrics: polars (strict), else Python's json line by line, which names the bad line and key."""
    text = text_of(data, METRICS)
    lines = text.split("\n")
    n = sum(1 for line in lines if line.strip())
    if n == 0:
        return pl.DataFrame(schema=STEP_SCHEMA)
    try:
        df = pl.read_ndjson(io.BytesIO(data), schema=STEP_SCHEMA)
        if df.height == n and df["step"].null_count() == 0 and _finite(df):
            return df
    except POLARS_ERRORS:  # any polars failure sends us to the line-by-line path
        pass
    cols: dict[str, list] = {k: [] for k in STEP_SCHEMA}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"metrics.jsonl: line {i}"
        obj = loads(line, where, check=False)  # only the columns read are checked, as polars does
        if not isinstance(obj, dict):
            raise Corrupt(f"{where}: not a JSON object (got {type(obj).__name__})")
        if obj.get("step") is None:
            raise Corrupt(f"{where} has no step")
        for k, typ in _STEP_TYPES.items():
            cols[k].append(coerce(obj.get(k), typ, f"{where}: {k}"))
    return pl.DataFrame(cols, schema=STEP_SCHEMA)


_GLOB = set("*?[]{}")  # polars reads a list of paths as globs: such a path would silently read nothing


def _scan_steps(runs: list[Found]) -> pl.DataFrame | None:
    """All the runs' metrics in one multi-threaded polars scan; None when that fails anywhere."""
    paths = {str(f.path / METRICS): f.run_id for f in runs if f.sizes[0] > 0}
    if not paths:
        return pl.DataFrame(schema={"run_id": pl.String, **STEP_SCHEMA})
    if any(_GLOB & set(p) for p in paths):
        return None
    try:
        df = pl.scan_ndjson(list(paths), schema=STEP_SCHEMA, include_file_paths="_path").collect()
    except POLARS_ERRORS:  # a bad line somewhere: the per-run path finds and names it
        return None
    if df["step"].null_count() or df["_path"].n_unique() != len(paths) or not _finite(df):
        return None
    run_id = pl.col("_path").replace_strict(list(paths), list(paths.values()), return_dtype=pl.String)
    return df.select(run_id.alias("run_id"), *STEP_SCHEMA)


def parse_steps(runs: list[Found]) -> tuple[pl.DataFrame, dict[str, str]]:
    """Steps of complete runs (last line wins for a repeated step) and {run_id: reason} for bad files."""
    bad: dict[str, str] = {}
    steps = _scan_steps(runs)
    if steps is None:
        frames = []
        for f in runs:
            try:
                one = _steps_one(_read(f.path / METRICS, METRICS))
            except Corrupt as e:
                bad[f.run_id] = str(e)
                continue
            except Exception as e:  # noqa: BLE001 -- a shape no check foresaw: this run only
                bad[f.run_id] = f"metrics.jsonl: unreadable ({type(e).__name__}: {str(e)[:200]})"
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
    text = text_of(data, EVALS)
    numbered = [(i, line) for i, line in enumerate(text.split("\n"), 1) if line.strip()]
    try:
        objs = loads("[" + ",".join(line for _, line in numbered) + "]", EVALS)
        if len(objs) == len(numbered):
            return [(i, obj) for (i, _), obj in zip(numbered, objs)]
    except Corrupt:
        pass
    return [(i, loads(line, f"evals.jsonl: line {i}")) for i, line in numbered]


def _tag(v, where: str) -> None:
    """A tag is a string, or a number a tag column can hold: a whole number within 64 bits or a finite float."""
    if isinstance(v, OutOfRange):
        coerce(v, FLOAT, where)  # raises, saying it is out of range
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise Corrupt(f"{where}: must be a string or a number, got {_show(v)}")
    if isinstance(v, int):
        coerce(v, INT, where)
    elif isinstance(v, float) and coerce(v, FLOAT, where) is None:
        raise Corrupt(f"{where}: {v} is not a finite number; a tag names a result")


def parse_evals(f: Found) -> list[tuple]:
    """(run_id, eval, tags JSON, metric, value) rows; the last line wins for a repeated (eval, tags, metric)."""
    rows: dict[tuple, float | None] = {}
    for i, obj in _evals_lines(_read(f.path / EVALS, EVALS)):
        where = f"evals.jsonl: line {i}"
        if not isinstance(obj, dict) or not isinstance(obj.get("eval"), str):
            raise Corrupt(f"{where} needs an object with a string eval")
        tags, metrics = obj.get("tags"), obj.get("metrics")
        tags = {} if tags is None else tags
        if not isinstance(tags, dict) or not isinstance(metrics, dict):
            raise Corrupt(f"{where}: tags and metrics must be objects")
        for k, v in tags.items():
            if v is not None:
                _tag(v, f"{where}: tag {k}")
        key = tuple((k, type(v), v) for k, v in tags.items())  # 1 and 1.0 serialise differently
        key_tags = _TAGS_JSON.get(key)
        if key_tags is None:
            if len(_TAGS_JSON) > 100_000:  # per-sample tags: do not grow without bound
                _TAGS_JSON.clear()
            key_tags = _TAGS_JSON[key] = canonical_json(tags)
        for metric, v in metrics.items():
            rows[(obj["eval"], key_tags, metric)] = coerce(v, FLOAT, f"{where}: metric {metric}")
    return [(f.run_id, e, t, m, v) for (e, t, m), v in rows.items()]
