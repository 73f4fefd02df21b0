"""`ingest(root, db)`: load finished run directories into the results database. The only writer.

1. Scan `root` for run directories and classify them from their small files (no lock held yet).
2. Take `<db>.lock`, open the database, migrate it to the current schema and recreate the views.
3. For each complete run: unchanged (same fingerprint as the stored copy) -> nothing; new -> insert;
   stored with an older DONE (a requeued or resubmitted run) -> replace its rows; otherwise skip and say why.
4. Parse the runs to load in batches (config/summary -> one `runs` row, metrics -> `steps` in bulk,
   evals -> `evals`), drop the ones whose files turn out bad or changed under us, and write each batch in
   one transaction: a run's rows are all there or none are.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from costlaw.analysis.store.flatten import Corrupt, run_row, runs_schema
from costlaw.analysis.store.lock import DEFAULT_WAIT_S, connect, write_lock
from costlaw.analysis.store.schema import SCHEMA_VERSION, V2_EVAL_TAGS, migrate
from costlaw.analysis.store.views import create_views
from costlaw.costmodel.core.errors import CostlawError

if TYPE_CHECKING:
    from costlaw.analysis.store.rundirs import Found

BATCH_BYTES = 128 << 20  # metrics bytes parsed per transaction: bounds memory on big roots

EVALS_COLUMNS = ("run_id", "eval", "tags", "metric", "value")


@dataclass
class IngestReport:
    db: str
    root: str
    ingested: list[str] = field(default_factory=list)  # run ids new to the database
    replaced: list[str] = field(default_factory=list)  # run ids whose newer DONE replaced the stored rows
    unchanged: list[str] = field(default_factory=list)
    incomplete: list[dict] = field(default_factory=list)  # {dir, run_id, reason}
    corrupt: list[dict] = field(default_factory=list)  # {dir, run_id, reason}
    skipped: list[dict] = field(default_factory=list)  # duplicates and stale copies: {dir, run_id, reason}
    steps_rows: int = 0
    evals_rows: int = 0
    schema_version: int = SCHEMA_VERSION
    migrated_from: int = SCHEMA_VERSION
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        n = len(self.ingested) + len(self.replaced)
        return (f"ingested {n} ({len(self.ingested)} new, {len(self.replaced)} replaced), "
                f"unchanged {len(self.unchanged)}, incomplete {len(self.incomplete)}, corrupt {len(self.corrupt)}, "
                f"skipped {len(self.skipped)}  [{self.steps_rows} step rows, {self.evals_rows} eval rows, "
                f"{self.seconds:.2f} s]")


def _item(f: Found, reason: str | None = None) -> dict:
    return {"dir": str(f.path), "run_id": f.run_id, "reason": reason if reason is not None else f.reason}


def ingest(root, db, *, wait: float = DEFAULT_WAIT_S, progress: Callable[[str], None] | None = None,
           batch_bytes: int = BATCH_BYTES) -> IngestReport:
    """Load the complete run directories under `root` into `db` (created if absent); see the module doc."""
    from costlaw.analysis.store.rundirs import classify, find_run_dirs  # polars: imported when ingesting, not on import

    t0 = time.perf_counter()
    root, db = Path(root), Path(db)
    if not root.is_dir():
        raise CostlawError(f"--root: no such directory {str(root)!r}; give the directory the runs were written to")
    if not db.parent.is_dir():
        raise CostlawError(f"--db: directory {str(db.parent)!r} does not exist; create it or choose another path")
    report = IngestReport(db=str(db), root=str(root))
    found = [classify(p) for p in find_run_dirs(root)]
    complete: dict[str, Found] = {}
    for f in found:
        if f.state == "incomplete":
            report.incomplete.append(_item(f))
        elif f.state == "corrupt":
            report.corrupt.append(_item(f))
        else:
            other = complete.get(f.run_id)
            if other is None:
                complete[f.run_id] = f
                continue
            keep, drop = (f, other) if f.done_mtime_ns > other.done_mtime_ns else (other, f)
            complete[f.run_id] = keep
            report.skipped.append(_item(drop, f"duplicate of {keep.path} (whose DONE is newer)"))

    with write_lock(db, wait):
        con = connect(db, read_only=False, wait=wait)
        try:
            con.execute("BEGIN TRANSACTION")
            report.migrated_from = migrate(con, db)
            create_views(con)
            con.execute("COMMIT")
            stored = {r[0]: r[1:] for r in
                      con.execute("SELECT run_id, fingerprint, done_mtime_ns, source_dir FROM runs").fetchall()}
            todo: list[tuple[Found, bool]] = []
            for rid, f in complete.items():
                if rid not in stored:
                    todo.append((f, False))
                    continue
                fingerprint, mtime, source = stored[rid]
                if fingerprint == f.fingerprint:
                    report.unchanged.append(rid)
                elif f.done_mtime_ns > (mtime or 0):
                    todo.append((f, True))
                else:
                    report.skipped.append(_item(f, f"differs from the stored copy (from {source}) but its DONE is "
                                                   "not newer; kept the stored one"))
            ingested_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
            for i, batch in enumerate(_batches(todo, batch_bytes)):
                if progress:
                    progress(f"batch {i + 1}: {len(batch)} runs")
                _load_batch(con, batch, ingested_at, report)
        finally:
            con.close()
    report.unchanged.sort()
    report.seconds = time.perf_counter() - t0
    return report


def _batches(todo: list[tuple[Found, bool]], limit: int):
    from costlaw.analysis.store.rundirs import METRICS, file_size

    batch, size = [], 0
    for item in todo:
        s = max(0, file_size(item[0].path / METRICS))
        if batch and size + s > limit:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += s
    if batch:
        yield batch


def _load_batch(con, batch: list[tuple[Found, bool]], ingested_at, report: IngestReport) -> None:
    import polars as pl

    from costlaw.analysis.store.rundirs import DONE, EVALS, METRICS, file_size, parse_evals, parse_steps

    bad: dict[str, tuple[Found, str, str]] = {}  # run_id -> (found, list name, reason)
    rows: dict[str, dict] = {}
    evals: list[tuple] = []
    for f, _ in batch:
        try:
            rows[f.run_id] = run_row(f.doc, f.summary, source_dir=str(f.path), done_mtime_ns=f.done_mtime_ns,
                                     fingerprint=f.fingerprint)
            evals.extend(parse_evals(f))
        except Corrupt as e:
            bad[f.run_id] = (f, "corrupt", str(e))
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # a shape the checks did not foresee
            bad[f.run_id] = (f, "corrupt", f"unreadable ({type(e).__name__}: {e})")
    steps, steps_bad = parse_steps([f for f, _ in batch if f.run_id not in bad])
    by_id = {f.run_id: f for f, _ in batch}
    for rid, reason in steps_bad.items():
        bad[rid] = (by_id[rid], "corrupt", reason)
    for f, _ in batch:  # a run requeued while we read it: its files are no longer the ones we classified
        try:
            mtime = (f.path / DONE).stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        now = (file_size(f.path / METRICS), file_size(f.path / EVALS))
        if f.run_id not in bad and (mtime != f.done_mtime_ns or now != f.sizes):
            bad[f.run_id] = (f, "incomplete", "changed while being ingested (requeued?); ingest again later")
    for rid, (f, kind, reason) in bad.items():
        getattr(report, kind).append(_item(f, reason))
        rows.pop(rid, None)
    if not rows:
        return
    keep = list(rows)
    if bad:
        steps = steps.filter(pl.col("run_id").is_in(keep))
        evals = [e for e in evals if e[0] in rows]
    n_steps = dict(steps.group_by("run_id").len().iter_rows())
    n_evals: dict[str, int] = {}
    for e in evals:
        n_evals[e[0]] = n_evals.get(e[0], 0) + 1
    for rid, row in rows.items():
        row["n_steps"], row["n_evals"] = n_steps.get(rid, 0), n_evals.get(rid, 0)
    # polars, not pyarrow, builds the frames: pyarrow's conversion of Python objects imports pandas (~1 s)
    runs_df = pl.from_dicts(list(rows.values()), schema=runs_schema()).with_columns(
        pl.lit(ingested_at, dtype=pl.Datetime("us")).alias("ingested_at"))
    evals_df = pl.DataFrame(list(zip(*evals)) if evals else [[] for _ in EVALS_COLUMNS], orient="col",
                            schema=dict(zip(EVALS_COLUMNS, (pl.String, pl.String, pl.String, pl.String, pl.Float64))))
    replaced = [f.run_id for f, again in batch if again and f.run_id in rows]
    tags = ", ".join(f"TRY_CAST(json_extract_string(tags, '$.{n}') AS {t}) AS \"{n}\"" for n, t in V2_EVAL_TAGS)
    con.register("_new_runs", runs_df.to_arrow())
    con.register("_new_steps", steps.to_arrow())
    con.register("_new_evals", evals_df.to_arrow())
    try:
        con.execute("BEGIN TRANSACTION")
        if replaced:
            con.execute("CREATE OR REPLACE TEMP TABLE _replaced AS SELECT unnest(?::VARCHAR[]) AS run_id", [replaced])
            for table in ("steps", "evals", "runs"):
                con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM _replaced)")
        con.execute("INSERT INTO runs BY NAME SELECT * FROM _new_runs")
        con.execute("INSERT INTO steps BY NAME SELECT * FROM _new_steps")
        con.execute(f"INSERT INTO evals BY NAME SELECT *, {tags} FROM _new_evals")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in ("_new_runs", "_new_steps", "_new_evals"):
            con.unregister(name)
    report.replaced.extend(replaced)
    report.ingested.extend(rid for rid in keep if rid not in set(replaced))
    report.steps_rows += steps.height
    report.evals_rows += len(evals)
