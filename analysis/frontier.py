"""Loss vs inference cost frontiers: every completed run priced at each context, and its Pareto sets.

A point is a completed run (its val_loss, else final loss) priced by `costmodel.costs` at context T from its
own ModelConfig (the run's config.json in the store), so runs trained at a short context are compared at the
context they would serve. Runs whose kv_policy evals measured a KV policy at a keep ratio add compressed
points: the same model with that policy, at loss + measured ΔNLL.

A point is on the Pareto set (of a family, or of all families) when no other point has a loss and a cost
that are both no higher, one of them strictly lower. Sets are computed per context, per cost (M_infer bytes,
C_infer FLOPs per token), per family and across families ("all").
"""

from __future__ import annotations

import json

import numpy as np

from costlaw.costmodel import KVPolicy, ModelConfig, costs
from costlaw.costmodel.core.errors import CostlawError

COSTS = {"memory": "m_infer_bytes", "flops": "c_infer_flops_per_token"}


def pareto_mask(cost, loss) -> np.ndarray:
    """True for the non-dominated points of (cost, loss), both to be minimised."""
    cost, loss = np.asarray(cost, float), np.asarray(loss, float)
    keep = np.zeros(len(cost), bool)
    order = np.lexsort((loss, cost))  # by cost, then loss
    best = np.inf
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and cost[order[j]] == cost[order[i]]:
            j += 1
        group = order[i:j]
        m = loss[group].min()
        if m < best:
            keep[group[loss[group] == m]] = True
            best = m
        i = j
    return keep


def run_label(n_heads: int, n_kv_heads: int, family: str, layout: str | None, policy: dict | None = None) -> str:
    label = f"{int(n_heads)},{int(n_kv_heads)}"
    if family == "hybrid" and layout:
        from costlaw.costmodel.attention import Full, decode_layout

        specs = decode_layout(json.loads(layout))
        label += f" hybrid {next((s.spec() for s in specs if not isinstance(s, Full)), '')}"
    if policy:
        amount = f"keep={policy['keep']:g}" if policy.get("keep") is not None else f"budget={policy.get('budget')}"
        label += f" {policy['method']} {amount}"
    return label


def points(db, contexts: list[int], dtype: str = "bf16", sweep: str | None = None):
    """One row per (point, context): run_id, label, family, N, loss, m_infer_bytes, c_infer_flops_per_token..."""
    from costlaw.analysis.recommend import kv_policy_rows, load_runs

    runs = load_runs(db, sweep)
    runs = runs[runs["loss"].notna()] if len(runs) else runs
    if not len(runs):
        raise CostlawError(f"--db: {db} has no completed runs with a loss; run a sweep and `costlaw ingest` it first")
    kv = kv_policy_rows(db, sweep)
    return points_from(runs, kv, contexts, dtype)


def points_from(runs, kv, contexts: list[int], dtype: str = "bf16"):
    """The points at each context T: the runs trained at the seq_len nearest T (recommend's measured context,
    analysis.recommend.fromstore), so that one family's points compare losses measured alike, and the KV policies
    measured on them. Compress-stage runs are no points of their own: a trained policy's loss is its training
    objective, and kv-eval's runs hold rows of the dense run they evaluated. `attrs["notes"]` says what was left out."""
    import pandas as pd

    from costlaw.analysis.recommend.candidates import FAMILIES
    from costlaw.analysis.recommend.fromstore import measured_context, with_dense_run

    if kv is not None and len(kv):
        kv = with_dense_run(kv)
    notes: list[str] = []
    stage = runs["stage"].fillna("pretrain") if "stage" in runs.columns else pd.Series("pretrain", index=runs.index)
    if (stage == "compress").any():
        notes.append(f"{int((stage == 'compress').sum())} compress-stage run(s) are no points of their own (their "
                     "KV policies are measured on their dense runs)")
    runs = runs[stage != "compress"]
    if not len(runs):
        raise CostlawError("--db: only compress-stage runs have a loss; ingest the dense runs they compress too")
    at = {T: measured_context(runs, FAMILIES, 1, T, []) for T in contexts}
    for T, used in at.items():
        if (runs["seq_len"] != used).any():
            notes.append(f"context {T}: points are the runs trained at seq_len {used}, the nearest measured; "
                         f"{int((runs['seq_len'] != used).sum())} run(s) at other seq_lens left out")
    items = []
    for r in runs.itertuples():
        cfg = ModelConfig.from_dict(json.loads(r.config_json)["config"]["model"])
        pol = cfg.kv_policy.to_dict() if cfg.kv_policy else None
        items.append((r.run_id, run_label(r.n_heads, r.n_kv_heads, r.family, r.layout, pol), cfg.family, cfg,
                      float(r.loss), None, int(r.seq_len)))
        if kv is not None and len(kv):
            mine = kv[(kv["dense_run"] == r.run_id) & kv["keep"].notna()]
            if len(mine) and cfg.kv_policy is None:
                mine = mine[mine["context"] == mine["context"].max()]
                for (pol_name, keep), g in mine.groupby(["policy", "keep"]):
                    delta = g["delta_nll"].where(g["delta_nll"].notna(), g["nll"] - g["nll_full"]).mean()
                    if not np.isfinite(delta):
                        continue
                    try:
                        p = KVPolicy(pol_name, keep=float(keep))
                    except CostlawError:
                        continue  # a policy name costmodel cannot price
                    c2 = cfg.replace(kv_policy=p)
                    items.append((r.run_id, run_label(r.n_heads, r.n_kv_heads, r.family, r.layout, p.to_dict()),
                                  "compressed", c2, float(r.loss) + float(delta), float(delta), int(r.seq_len)))
    rows = []
    for run_id, label, family, cfg, loss, delta, seq_len in items:
        for T in contexts:
            if seq_len != at[T]:
                continue
            c = costs(cfg, T, dtype=dtype)
            rows.append({"run_id": run_id, "label": label, "family": family, "context": T, "loss": loss,
                         "delta_nll": delta, "train_context": seq_len, "n_params": c["params_non_embedding"],
                         "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                         "n_kv_heads": cfg.n_kv_heads, "m_infer_bytes": float(c["m_infer_bytes"]),
                         "kv_cache_bytes": float(c["kv_cache_bytes"]),
                         "c_infer_flops_per_token": float(c["c_infer_flops_per_token"])})
    df = mark_pareto(pd.DataFrame(rows))
    df.attrs["notes"] = notes
    return df


def mark_pareto(df):
    """Adds pareto_<cost> (within the family) and pareto_<cost>_all (across families) per context."""
    for name, col in COSTS.items():
        df[f"pareto_{name}"] = False
        df[f"pareto_{name}_all"] = False
        for _, g in df.groupby("context"):
            df.loc[g.index, f"pareto_{name}_all"] = pareto_mask(g[col], g["loss"])
            for _, gf in g.groupby("family"):
                df.loc[gf.index, f"pareto_{name}"] = pareto_mask(gf[col], gf["loss"])
    return df


def pareto_sets(df) -> list[dict]:
    """The Pareto points, one entry per (context, cost, family|all), cheapest first."""
    out = []
    for T, g in df.groupby("context"):
        for name, col in COSTS.items():
            fams = [(f, gf[gf[f"pareto_{name}"]]) for f, gf in g.groupby("family")]
            fams.append(("all", g[g[f"pareto_{name}_all"]]))
            for fam, sel in fams:
                sel = sel.sort_values(col)
                out.append({"context": int(T), "cost": name, "family": fam,
                            "points": [{"run_id": r.run_id, "label": r.label, "family": r.family,
                                        "n_params": int(r.n_params), "loss": float(r.loss),
                                        col: float(getattr(r, col))} for r in sel.itertuples()]})
    return out
