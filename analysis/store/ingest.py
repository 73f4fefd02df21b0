"""`ingest(root, db)`: load finished run directories into the results database. The only writer.

1. Refuse a --db that is not a costlaw store (a DuckDB file of something else) before touching anything.
2. Find the run directories (analysis/store/scan.py: symlinks followed, loops and unreadable places reported)
   and classify each from its small files (no lock held yet).
3. Take `<db>.lock`, open the database, migrate it to the current schema and recreate the views.
4. For each complete run: unchanged (same fingerprint as the stored copy) -> nothing; new -> insert;
   stored with an older DONE (a requeued or resubmitted run) -> replace its rows; otherwise skip and say why.
5. Parse the runs to load in batches (config/summary -> one `runs` row, metrics -> `steps` in bulk,
   evals -> `evals`), drop the ones whose files turn out bad or changed under us, and write each batch in
   one transaction: a run's rows are all there or none are.

Every run is isolated: whatever one run directory holds (an out-of-range number, a wrong type, a file that is
a directory or a FIFO, text that is not UTF-8), that run is reported with its reason and the others ingest.
Should the database refuse a batch that passed every check, the batch is written again one run per
transaction, so only the run it refuses is left out (reported corrupt, with the database's reason).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from costlaw.analysis.store.flatten import Corrupt, run_row, runs_schema
from costlaw.analysis.store.lock import DEFAULT_WAIT_S, check_store, connect, lock_path, write_lock
from costlaw.analysis.store.schema import SCHEMA_VERSION, V2_EVAL_TAGS, migrate
from costlaw.analysis.store.views import create_views
from costlaw.costmodel.core.errors import CostlawError

if TYPE_CHECKING:
    from costlaw.analysis.store.rundirs import Found

BATCH_BYTES = 128 << 20  # metrics bytes parsed per transaction: bounds memory on big roots

EVALS_COLUMNS = ("run_id", "eval", "tags", "metric", "value")
# what a database refuses because of one run's values; any other error (disk full, a damaged file) stops the ingest
_DATA_ERRORS = (duckdb.ConversionException, duckdb.ConstraintException, duckdb.InvalidInputException,
                duckdb.OutOfRangeException, duckdb.TypeMismatchException, duckdb.BinderException)


@dataclass
class IngestReport:
    db: str
    root: str
    ingested: list[str] = field(default_factory=list)  # run ids new to the database
    replaced: list[str] = field(default_factory=list)  # run ids whose newer DONE replaced the stored rows
    unchanged: list[str] = field(default_factory=list)
    incomplete: list[dict] = field(default_factory=list)  # {dir, run_id, reason}
    corrupt: list[dict] = field(default_factory=list)  # {dir, run_id, reason}
    skipped: list[dict] = field(default_factory=list)  # duplicates, stale copies, symlink loops: {dir, run_id, reason}
    unreadable: list[dict] = field(default_factory=list)  # places that could not be searched: {dir, run_id, reason}
    steps_rows: int = 0
    evals_rows: int = 0
    schema_version: int = SCHEMA_VERSION
    migrated_from: int = SCHEMA_VERSION
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def failed(self) -> bool:
        """Some run under the root could not be ingested: a corrupt run, or a place that could not be searched.
        (Incomplete runs are still going, and skipped ones have a better copy: neither is a failure.)"""
        return bool(self.corrupt or self.unreadable)

    def line(self) -> str:
        n = len(self.ingested) + len(self.replaced)
        return (f"ingested {n} ({len(self.ingested)} new, {len(self.replaced)} replaced), "
                f"unchanged {len(self.unchanged)}, incomplete {len(self.incomplete)}, corrupt {len(self.corrupt)}, "
                f"skipped {len(self.skipped)}, unreadable {len(self.unreadable)}  [{self.steps_rows} step rows, "
                f"{self.evals_rows} eval rows, {self.seconds:.2f} s]")


def _item(f: Found, reason: str | None = None) -> dict:
    from costlaw.analysis.store.reading import shown

    reason = reason if reason is not None else f.reason
    return {"dir": shown(f.path), "run_id": f.run_id, "reason": " ".join(reason.splitlines())}


def _check_db(db: Path, wait: float) -> None:
    """A --db that exists must be a DuckDB file that is a costlaw store (or an empty database); checked
    read-only, before the lock file is made, so that a refused file is left exactly as it was."""
    if db.is_dir():
        raise CostlawError(f"--db: {db} is a directory; give a results file (e.g. {db / 'results.duckdb'})")
    if not db.parent.is_dir():
        raise CostlawError(f"--db: directory {str(db.parent)!r} does not exist; create it or choose another path")
    if not db.exists() or lock_path(db).exists():
        # a file costlaw wrote before has its lock file, and the same check runs again under the lock (an open
        # that writes nothing leaves a DuckDB file byte-identical): concurrent ingests need not wait twice
        return
    con = connect(db, read_only=True, wait=wait)
    try:
        check_store(con, db)
    finally:
        con.close()


def ingest(root, db, *, wait: float = DEFAULT_WAIT_S, progress: Callable[[str], None] | None = None,
           batch_bytes: int = BATCH_BYTES) -> IngestReport:
    """Load the complete run directories under `root` into `db` (created if absent); see the module doc."""
    from costlaw.analysis.store.reading import shown
    from costlaw.analysis.store.rundirs import classify  # polars: imported when ingesting, not on import
    from costlaw.analysis.store.scan import scan

    t0 = time.perf_counter()
    root, db = Path(root), Path(db)
    if not root.is_dir():
        raise CostlawError(f"--root: no such directory {str(root)!r}; give the directory the runs were written to")
    _check_db(db, wait)
    report = IngestReport(db=str(db), root=str(root))
    searched = scan(root)
    report.skipped.extend(searched.skipped)
    report.unreadable.extend(searched.unreadable)
    found = [classify(p) for p in searched.dirs]
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
            report.skipped.append(_item(drop, f"duplicate of {shown(keep.path)} (whose DONE is newer)"))

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
        except duckdb.Error as e:  # the database itself failed (disk full, a damaged file): not one run's data
            done = len(report.ingested) + len(report.replaced)
            raise CostlawError(f"--db: writing {db} failed ({str(e).strip().splitlines()[0]}); {done} runs were "
                               "committed before it; fix the cause and ingest again") from None
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

    from costlaw.analysis.store.rundirs import DONE, EVALS, METRICS, file_size, parse_evals, parse_steps, shown

    by_id = {f.run_id: f for f, _ in batch}
    bad: dict[str, tuple[str, str]] = {}  # run_id -> (report list, reason)
    rows: dict[str, dict] = {}
    evals: dict[str, list[tuple]] = {}
    for f, _ in batch:
        rid = f.run_id
        try:
            rows[rid] = run_row(f.doc, f.summary, source_dir=shown(f.path), done_mtime_ns=f.done_mtime_ns,
                                fingerprint=f.fingerprint)
            evals[rid] = parse_evals(f)
        except Corrupt as e:
            bad[rid] = ("corrupt", str(e))
        except Exception as e:  # noqa: BLE001 -- a shape no check foresaw: this run is reported, the others go on
            where = "evals.jsonl" if rid in rows else "config.json / summary.json"
            bad[rid] = ("corrupt", f"{where}: unreadable ({type(e).__name__}: {str(e)[:200]})")
    steps, steps_bad = parse_steps([f for f, _ in batch if f.run_id not in bad])
    for rid, reason in steps_bad.items():
        bad[rid] = ("corrupt", reason)
    n_steps = dict(steps.group_by("run_id").len().iter_rows())
    for f, _ in batch:
        if f.run_id not in bad and (reason := _missing_steps(f, n_steps.get(f.run_id, 0))):
            bad[f.run_id] = ("corrupt", reason)
    for f, _ in batch:  # a run requeued while we read it: its files are no longer the ones we classified
        try:
            mtime = (f.path / DONE).stat().st_mtime_ns
        except OSError:
            mtime = None
        now = (file_size(f.path / METRICS), file_size(f.path / EVALS))
        if f.run_id not in bad and (mtime != f.done_mtime_ns or now != f.sizes):
            bad[f.run_id] = ("incomplete", "changed while being ingested (requeued?); ingest again later")
    for rid, (kind, reason) in bad.items():
        getattr(report, kind).append(_item(by_id[rid], reason))
        rows.pop(rid, None)
    if not rows:
        return
    if bad:
        steps = steps.filter(pl.col("run_id").is_in(list(rows)))
    n_evals = {rid: len(evals[rid]) for rid in rows}
    for rid, row in rows.items():
        row["n_steps"], row["n_evals"] = n_steps.get(rid, 0), n_evals[rid]
    replaced = {f.run_id for f, again in batch if again and f.run_id in rows}
    try:
        _write(con, list(rows.values()), steps, [e for rid in rows for e in evals[rid]], replaced, ingested_at)
        written = list(rows)
    except _refused():
        # one run's values that passed every check but the database's: write run by run, so it alone is left out
        written = []
        per_run = steps.partition_by("run_id", as_dict=True)
        for rid, row in rows.items():
            one = per_run.get((rid,), steps.clear())
            try:
                _write(con, [row], one, evals[rid], replaced & {rid}, ingested_at)
                written.append(rid)
            except _refused() as e:
                report.corrupt.append(_item(by_id[rid], f"the database refused its rows ({_line(e)})"))
    report.replaced.extend(rid for rid in written if rid in replaced)
    report.ingested.extend(rid for rid in written if rid not in replaced)
    report.steps_rows += sum(n_steps.get(rid, 0) for rid in written)
    report.evals_rows += sum(n_evals[rid] for rid in written)


def _missing_steps(f: Found, n: int) -> str | None:
    """A completed run that trained must have logged its steps (the last step is always logged); a run that
    trained none (an evaluation run: summary steps 0) or stopped early (diverged, failed) may have no lines."""
    from costlaw.analysis.store.rundirs import METRICS

    steps = f.summary.get("steps")
    if n or f.summary.get("status") != "completed" or (steps == 0 and not isinstance(steps, bool)):
        return None
    what = "missing" if f.sizes[0] < 0 else "empty" if f.sizes[0] == 0 else "without a line"
    return (f"{METRICS}: {what}, but summary.json says the run completed "
            f"{'its steps' if steps is None else f'{steps} steps'}; a completed run logs at least its last step")


def _refused():
    """What a database or frame builder raises for one run's values: those runs are reported, the rest written."""
    from polars.exceptions import PanicException, PolarsError

    return _DATA_ERRORS + (PolarsError, PanicException, ValueError, OverflowError, TypeError)


def _line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _write(con, rows: list[dict], steps, evals: list[tuple], replaced: set[str], ingested_at) -> None:
    """One transaction: the runs' rows, steps and evals (and the stored rows of replaced runs deleted)."""
    import polars as pl

    # polars, not pyarrow, builds the frames: pyarrow's conversion of Python objects imports pandas (~1 s)
    runs_df = pl.from_dicts(rows, schema=runs_schema()).with_columns(
        pl.lit(ingested_at, dtype=pl.Datetime("us")).alias("ingested_at"))
    evals_df = pl.DataFrame(list(zip(*evals)) if evals else [[] for _ in EVALS_COLUMNS], orient="col",
                            schema=dict(zip(EVALS_COLUMNS, (pl.String, pl.String, pl.String, pl.String, pl.Float64))))
    tags = ", ".join(f"TRY_CAST(json_extract_string(tags, '$.{n}') AS {t}) AS \"{n}\"" for n, t in V2_EVAL_TAGS)
    con.register("_new_runs", runs_df.to_arrow())
    con.register("_new_steps", steps.to_arrow())
    con.register("_new_evals", evals_df.to_arrow())
    try:
        con.execute("BEGIN TRANSACTION")
        if replaced:
            con.execute("CREATE OR REPLACE TEMP TABLE _replaced AS SELECT unnest(?::VARCHAR[]) AS run_id",
                        [sorted(replaced)])
            for table in ("steps", "evals", "runs"):
                con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM _replaced)")
        con.execute("INSERT INTO runs BY NAME SELECT * FROM _new_runs")
        con.execute("INSERT INTO steps BY NAME SELECT * FROM _new_steps")
        con.execute(f"INSERT INTO evals BY NAME SELECT *, {tags} FROM _new_evals")
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # a fatal error has already ended the transaction
            con.execute("ROLLBACK")
        raise
    finally:
        for name in ("_new_runs", "_new_steps", "_new_evals"):
            con.unregister(name)
