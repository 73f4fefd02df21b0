"""`write_recommendations(db, rows)`: record `costlaw recommend` winners so trained runs can be checked against them.

One row per (winner, context). predicted_lo/predicted_hi hold the interval a trained run is checked against:
the prediction interval for a new run at `level` (fit uncertainty plus run-to-run noise; `interval_kind`
"prediction"), or the law's mean interval when no noise is known ("mean"); mean_lo/mean_hi always hold the
mean's. The `closed_loop` view joins each row to the completed runs of the same `model_id`
(ModelConfig.config_id, which ingest stores for every run), so once the recommended config is trained and
ingested, SQL shows whether its loss landed inside, and whether that run was held out (not one of the
`fit_run_ids` the law was fitted to). Writes take the same `<db>.lock` as ingest; a row whose `rec_id` is already
there is left as it was (first `recorded_at` kept).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math

from costlaw.analysis.store.flatten import canonical_json
from costlaw.analysis.store.lock import DEFAULT_WAIT_S, connect, write_lock
from costlaw.analysis.store.query import existing_db
from costlaw.analysis.store.schema import migrate
from costlaw.analysis.store.views import create_views
from costlaw.costmodel.core.errors import CostlawError

REC_COLUMNS = ("rec_id", "recorded_at", "model_id", "candidate", "family", "context", "target_loss", "predicted_loss",
               "predicted_lo", "predicted_hi", "extrapolation", "params_non_embedding", "n_star", "m_infer_bytes",
               "c_infer_flops_per_token", "dtype", "memory_budget", "flops_budget", "latency_target_ms", "gpu",
               "train_context", "source", "sweep", "model_json", "level", "interval_kind", "mean_lo", "mean_hi",
               "noise_sd", "noise_df", "weak_law", "outside_envelope", "fit_run_ids")
_NOT_HASHED = ("rec_id", "recorded_at", "source")  # the same recommendation read via another path is not new


def _hashable(v):
    # 12 significant digits: a refit that differs only in the last bits (BLAS summation order) is the same row
    if isinstance(v, float):
        return float(f"{v:.12g}")
    if isinstance(v, dict):
        return {k: _hashable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_hashable(x) for x in v]
    return v


def rec_id(row: dict) -> str:
    content = {k: _hashable(row.get(k)) for k in REC_COLUMNS if k not in _NOT_HASHED}
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()[:16]


def _num(v, kind=float):
    return None if v is None else kind(v)


def _finite(v):
    return None if v is None or not math.isfinite(v) else float(v)


def recommendation_rows(rec, *, source: str, sweep: str | None = None, train_context: int | None = None) -> list[dict]:
    """One row per context with a winner, from an `analysis.recommend.Recommendation`; `train_context` is
    the seq_len its laws were fitted at (FitSet.train_context)."""
    obj = rec.objective
    rows = []
    for T in rec.contexts:
        w = rec.winner(T)
        if w is None:
            continue
        cfg, price, iv = w.shape.config, w.prices[T], w.interval
        bounds = iv.bounds
        row = {"model_id": cfg.config_id, "candidate": w.label,
               "family": "compressed" if w.cand.base else w.cand.family, "context": int(T),
               "target_loss": float(rec.target), "predicted_loss": float(w.predicted),
               "predicted_lo": _num(bounds[0]) if bounds else None, "predicted_hi": _num(bounds[1]) if bounds else None,
               "level": float(iv.level) if bounds else None, "interval_kind": iv.kind if bounds else None,
               "mean_lo": _num(iv.mean_lo), "mean_hi": _num(iv.mean_hi), "noise_sd": _num(iv.noise_sd),
               "noise_df": _finite(iv.noise_df), "weak_law": "; ".join(w.weak) or None,
               "outside_envelope": w.outside,
               "fit_run_ids": sorted({p["run_id"] for p in w.cand.ladder if p.get("run_id")}) or None,
               "extrapolation": _num(w.extrapolation), "params_non_embedding": int(w.shape.n_params),
               "n_star": float(w.n_star), "m_infer_bytes": float(price["m_infer_bytes"]),
               "c_infer_flops_per_token": float(price["c_infer_flops_per_token"]), "dtype": obj.dtype,
               "memory_budget": _num(obj.memory_budget), "flops_budget": _num(obj.flops_budget),
               "latency_target_ms": _num(obj.latency_target_ms), "gpu": obj.gpu,
               "train_context": _num(train_context, int), "source": source, "sweep": sweep,
               "model_json": cfg.to_dict()}
        rows.append(row)
    return rows


def _values(r: dict, now: dt.datetime) -> list:
    unknown = sorted(set(r) - set(REC_COLUMNS))
    if unknown:
        raise CostlawError(f"recommendations.{unknown[0]}: unknown column; recommendations has "
                           f"{', '.join(REC_COLUMNS)}")
    for k in ("model_id", "candidate", "context", "target_loss", "predicted_loss", "model_json"):
        if r.get(k) is None:
            raise CostlawError(f"recommendations.{k}: missing; every recorded recommendation needs it")
    out = dict(r)
    out.setdefault("rec_id", rec_id(r))
    out.setdefault("recorded_at", now)
    if not isinstance(out["model_json"], str):
        out["model_json"] = canonical_json(out["model_json"])
    if out.get("fit_run_ids") is not None:
        out["fit_run_ids"] = [str(x) for x in out["fit_run_ids"]]
    return [out.get(c) for c in REC_COLUMNS]


def write_recommendations(db, rows: list[dict], wait: float = DEFAULT_WAIT_S) -> list[tuple[str, bool]]:
    """Insert recommendation rows into `db` (which ingest created), skipping rec_ids already there.
    Returns (rec_id, newly recorded) per row."""
    db = existing_db(db)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    values = [_values(r, now) for r in rows]
    ids = [v[0] for v in values]
    with write_lock(db, wait):
        con = connect(db, read_only=False, wait=wait)
        try:
            con.execute("BEGIN TRANSACTION")
            migrate(con, db)
            create_views(con)
            have = {r[0] for r in con.execute("SELECT rec_id FROM recommendations WHERE list_contains(?, rec_id)",
                                              [ids]).fetchall()}
            cols = ", ".join(REC_COLUMNS)
            new = [v for v in values if v[0] not in have]
            if new:
                con.executemany(f"INSERT INTO recommendations ({cols}) VALUES ({', '.join('?' * len(REC_COLUMNS))}) "
                                "ON CONFLICT (rec_id) DO NOTHING", new)
            con.execute("COMMIT")
        finally:
            con.close()
    seen: set[str] = set()
    out = []
    for i in ids:
        out.append((i, i not in have and i not in seen))
        seen.add(i)
    return out
