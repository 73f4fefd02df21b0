"""Fits in the store's fits table: `lookup` finds stored entries by data_fingerprint (read-only), `store_rows` /
`store` turn a fits document into one row per fitted entry (written under the store's write lock by write_fits).

Each row's `doc` is a fits document (analysis/fits/doc.py) holding that one entry, so a row can be read back
on its own (`costlaw query ... "SELECT doc FROM fits"`, then `costlaw recommend --fits`).
"""

from __future__ import annotations

import json
import re

from costlaw.analysis.fits.doc import fit_fields

FINGERPRINTS_FROM = 4  # the schema version that gave fits their data_fingerprint and doc columns
_HEX = re.compile(r"[0-9a-f]{64}")
_EXTRA = ("grad_norm", "r2_ceiling", "n_starts", "n_refined", "n_at_best", "success", "message", "reason", "residuals",
          "at_bounds", "not_identified", "n_used", "n_unidentified", "n_bootstrap",
          "n_failed")


def lookup(db, fingerprints) -> dict[str, dict]:
    """data_fingerprint -> the stored entry's fit fields, for each fingerprint the fits table holds (the newest
    row when several do: they are fits of the same data with the same options and fitter, so they agree)."""
    from costlaw.analysis.store.query import connect_readonly
    from costlaw.analysis.store.schema import version

    fps = sorted({f for f in fingerprints if f})
    bad = [f for f in fps if not _HEX.fullmatch(f)]
    if bad:
        raise ValueError(f"not a data fingerprint: {bad[0]!r}")
    if not fps:
        return {}
    con = connect_readonly(db)
    try:
        if version(con) < FINGERPRINTS_FROM:  # an older store has no keyed fits yet; the next write migrates it
            return {}
        rows = con.execute("SELECT data_fingerprint, doc FROM fits WHERE list_contains(?, data_fingerprint) "
                           "ORDER BY created, fit_id", [fps]).fetchall()
    finally:
        con.close()
    out = {}
    for fp, text in rows:
        try:
            doc = json.loads(text) if text else None
        except json.JSONDecodeError:
            continue  # a row some other writer left malformed is refitted, never trusted
        for e in doc.get("candidates", []) if isinstance(doc, dict) else []:
            if isinstance(e, dict) and e.get("data_fingerprint") == fp and isinstance(e.get("params"), dict):
                out[fp] = fit_fields(e)
    return out


def store_rows(doc: dict, source_query: str | None = None, only=None) -> list[dict]:
    """Rows for `analysis.store.write_fits`: one per fitted entry of `doc` with a data_fingerprint (`only`: just
    these fingerprints)."""
    head = {k: v for k, v in doc.items() if k not in ("candidates", "kv_policies", "notes")}
    rows = []
    for e in doc.get("candidates", []):
        fp = e.get("data_fingerprint")
        if e.get("params") is None or not fp or (only is not None and fp not in only):
            continue
        group = dict(e.get("group") or {})
        if e.get("label"):
            group["label"] = e["label"]
        rows.append({"law": doc["law"], "group_keys": group, "params": e["params"], "objective": e.get("objective"),
                     "r2": e.get("r2"), "n_points": e.get("n_points"), "stderr": e.get("stderr"),
                     "ci95": e.get("ci95"), "source_query": source_query,
                     "extra": {k: e[k] for k in _EXTRA if k in e}, "data_fingerprint": fp,
                     "doc": {**head, "candidates": [e]}})
    return rows


def store(db, doc: dict, source_query: str | None = None, only=None) -> list[str]:
    """Write `doc`'s fitted entries to `db`'s fits table (see store_rows); returns their fit ids."""
    from costlaw.analysis.store.fits import write_fits

    rows = store_rows(doc, source_query, only)
    return write_fits(db, rows) if rows else []
