"""`write_fits(db, rows)`: the one other writer of the results database, for fitted laws.

It takes the same `<db>.lock` as ingest and upserts by `fit_id`: a row without one gets the hash of its
(law, data_fingerprint) when it has a fingerprint (analysis/fits/fingerprint.py: the runs, points, options and
fitter), else of (law, group keys, source query). So a fit of the same data is stored once, whichever command
made it (the last writer's group keys and doc stay), and a fit of changed data is a new row beside the old one,
still reused when a later call fits the old data again (another --sweep, say).
"""

from __future__ import annotations

import datetime as dt
import hashlib

from costlaw.analysis.store.flatten import canonical_json
from costlaw.analysis.store.lock import DEFAULT_WAIT_S, connect, write_lock
from costlaw.analysis.store.query import existing_db
from costlaw.analysis.store.schema import migrate
from costlaw.analysis.store.views import create_views
from costlaw.costmodel.core.errors import CostlawError

FIT_COLUMNS = ("fit_id", "created", "law", "group_keys", "params", "objective", "r2", "n_points", "stderr", "ci95",
               "source_query", "extra", "data_fingerprint", "doc")
_JSON = ("group_keys", "params", "stderr", "ci95", "extra", "doc")


def fit_id(law: str, group_keys, source_query, data_fingerprint: str | None = None) -> str:
    key = [law, group_keys, source_query] if data_fingerprint is None else [law, data_fingerprint]
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()[:16]


def _row(r: dict, now: dt.datetime) -> list:
    unknown = sorted(set(r) - set(FIT_COLUMNS))
    if unknown:
        raise CostlawError(f"fits.{unknown[0]}: unknown column; fits has {', '.join(FIT_COLUMNS)}")
    if not isinstance(r.get("law"), str) or not r["law"]:
        raise CostlawError("fits.law: missing; name the law that was fitted (e.g. \"power_plus_constant\")")
    if not isinstance(r.get("params"), dict):
        raise CostlawError("fits.params: must be a dict of parameter name -> value")
    out = dict(r)
    out.setdefault("fit_id", fit_id(r["law"], r.get("group_keys"), r.get("source_query"), r.get("data_fingerprint")))
    out.setdefault("created", now)
    for k in _JSON:
        if out.get(k) is not None and not isinstance(out[k], str):
            out[k] = canonical_json(out[k])
    return [out.get(c) for c in FIT_COLUMNS]


def write_fits(db, rows: list[dict], wait: float = DEFAULT_WAIT_S) -> list[str]:
    """Upsert fit rows into `db` (which ingest created); returns their fit ids."""
    db = existing_db(db)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    values = [_row(r, now) for r in rows]
    with write_lock(db, wait):
        con = connect(db, read_only=False, wait=wait)
        try:
            con.execute("BEGIN TRANSACTION")
            migrate(con, db)
            create_views(con)
            cols = ", ".join(FIT_COLUMNS)
            con.executemany(f"INSERT OR REPLACE INTO fits ({cols}) VALUES ({', '.join('?' * len(FIT_COLUMNS))})",
                            values)
            con.execute("COMMIT")
        finally:
            con.close()
    return [v[0] for v in values]
