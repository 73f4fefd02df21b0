"""Which runs are compared: every completed hybrid extension in the store and its dense twin, read from the
store's runs and evals tables."""

from __future__ import annotations

import json

from costlaw.costmodel import ModelConfig
from costlaw.costmodel.core.errors import CostlawError

EVALS = ("val_loss", "position_loss", "retrieval", "inference")
RUN_COLUMNS = ("run_id", "stage", "status", "base_run_id", "seq_len", "seed", "gpu", "device", "val_loss", "tokens",
               "tokens_per_s", "tokens_per_s_wall", "train_s", "compile_s", "wall_s", "mfu", "config_json")


def load(db) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Every run (by id, with its ModelConfig under "cfg") and its evals parsed into {eval, tags, metrics}."""
    from costlaw.analysis.store import query_rows

    cols, rows = query_rows(db, f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY run_id")
    runs = {}
    for row in rows:
        r = dict(zip(cols, row))
        doc = json.loads(r.pop("config_json") or "{}")
        model = (doc.get("config") or {}).get("model")
        r["cfg"] = ModelConfig.from_dict(model) if model else None
        runs[r["run_id"]] = r
    cols, rows = query_rows(db, "SELECT run_id, eval, tags, metric, value FROM evals WHERE eval IN ("
                            + ", ".join(f"'{e}'" for e in EVALS) + ") ORDER BY run_id, eval, tags, metric")
    grouped: dict[tuple, dict] = {}
    for run_id, name, tags, metric, value in rows:
        e = grouped.setdefault((run_id, name, tags), {"eval": name, "tags": json.loads(tags), "metrics": {}})
        e["metrics"][metric] = value
    evals: dict[str, list[dict]] = {}
    for (run_id, _, _), e in grouped.items():
        evals.setdefault(run_id, []).append(e)
    return runs, evals


def hybrid_extensions(runs: dict[str, dict]) -> list[dict]:
    """The completed hybrid runs started from another run, in a stable order."""
    found = [r for r in runs.values() if r["status"] == "completed" and r["base_run_id"] and r["cfg"] is not None
             and r["cfg"].family == "hybrid"]
    return sorted(found, key=lambda r: (r["base_run_id"], r["seq_len"], r["run_id"]))


def _is_dense(cfg: ModelConfig | None) -> bool:
    return cfg is not None and cfg.family == "gqa"


def twin(hybrid: dict, runs: dict[str, dict]) -> dict:
    """The hybrid's dense twin: the completed run with the same base_run_id and seq_len, every layer full and the
    same model otherwise (narrowed to the hybrid's seed when there are several); exactly one, or an error."""
    h = hybrid["cfg"]
    found = [r for r in runs.values() if r["status"] == "completed" and r["base_run_id"] == hybrid["base_run_id"]
             and r["seq_len"] == hybrid["seq_len"] and _is_dense(r["cfg"])]
    if len(found) > 1:
        found = [r for r in found if r["seed"] == hybrid["seed"]]
    if not found:
        raise CostlawError(f"hybrid run {hybrid['run_id']}: no dense twin found (a completed run with base_run_id "
                           f"{hybrid['base_run_id']}, seq_len {hybrid['seq_len']} and all {h.n_layers} layers full); "
                           "ingest the dense extension of the same checkpoint")
    if len(found) > 1:
        raise CostlawError(f"hybrid run {hybrid['run_id']}: {len(found)} dense twins with seed {hybrid['seed']} "
                           f"({', '.join(r['run_id'] for r in found)}); keep one per base run and seed in the store")
    dense = found[0]
    if dense["cfg"].with_layout(()) != h.with_layout(()):
        raise CostlawError(f"hybrid run {hybrid['run_id']}: its dense twin {dense['run_id']} differs in more than "
                           "the attention layout; pair extensions of one model only")
    return dense
