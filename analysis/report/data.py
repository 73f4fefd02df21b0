"""What the report reads from the store: runs with labels, training curves, loss by position, environment."""

from __future__ import annotations

import json

from costlaw.analysis.frontier import run_label

MAX_CURVE_RUNS = 40  # training curves: at most this many runs, spread over the config labels
MAX_CURVE_POINTS = 300  # per run


def labelled_runs(runs):
    """The store's completed runs (analysis.recommend.load_runs) with a config label per run."""
    runs = runs.copy()
    labels = []
    for r in runs.itertuples():
        model = json.loads(r.config_json)["config"]["model"] if r.config_json else {}
        labels.append(run_label(r.n_heads, r.n_kv_heads, r.family, r.layout, model.get("kv_policy")))
    runs["label"] = labels
    return runs


def pick_runs(runs, limit: int = MAX_CURVE_RUNS) -> list[str]:
    """Run ids to draw, round-robin over labels, largest N first within a label."""
    queues = [list(g.sort_values("params_non_embedding", ascending=False)["run_id"])
              for _, g in sorted(runs.groupby("label"), key=lambda t: t[0])]
    out: list[str] = []
    while len(out) < limit and any(queues):
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out


def _in(ids) -> str:
    return ", ".join("'" + i.replace("'", "") + "'" for i in ids)


def steps_frame(db, runs):
    from costlaw.analysis.store import query_df

    ids = pick_runs(runs)
    if not ids:
        return runs.iloc[0:0].assign(tokens=[], loss=[])
    df = query_df(db, f"SELECT run_id, step, tokens, loss FROM steps WHERE run_id IN ({_in(ids)}) "
                      "ORDER BY run_id, step", engine="pandas")
    parts = []
    for _, g in df.groupby("run_id"):
        k = max(1, len(g) // MAX_CURVE_POINTS)
        parts.append(g.iloc[::k] if k > 1 else g)
    import pandas as pd

    df = pd.concat(parts) if parts else df
    return df.merge(runs[["run_id", "label"]], on="run_id")


def position_frame(db, runs):
    """Loss by position at each run's largest evaluated context."""
    from costlaw.analysis.store import query_df

    df = query_df(db, "SELECT p.run_id, p.context, p.bucket, p.start_pos, p.end_pos, p.loss FROM position_loss p "
                      "JOIN runs r USING (run_id) WHERE r.status = 'completed'", engine="pandas")
    if len(df):
        top = df.groupby("run_id")["context"].transform("max")
        df = df[df["context"] == top]
        df = df[df["run_id"].isin(pick_runs(runs))]  # pick_runs draws from `runs`: a --sweep filter holds here
    return df.merge(runs[["run_id", "label"]], on="run_id")


def environment(db) -> dict:
    """Distinct GPUs, torch versions, git commits, ... over all ingested runs, with counts; and run statuses."""
    from costlaw.analysis.store import query_df

    out = {}
    for col in ("gpu", "device", "torch", "cuda", "python", "git_commit", "git_dirty", "hostname", "costlaw_version",
                "corpus", "tokenizer"):
        df = query_df(db, f"SELECT {col} AS value, count(*) AS runs FROM runs GROUP BY 1 ORDER BY 2 DESC, 1",
                      engine="pandas")
        out[col] = [{"value": None if v != v else v, "runs": int(n)} for v, n in zip(df["value"], df["runs"])]
    st = query_df(db, "SELECT status, count(*) AS runs FROM runs GROUP BY 1 ORDER BY 2 DESC", engine="pandas")
    out["status"] = [{"value": s, "runs": int(n)} for s, n in zip(st["status"], st["runs"])]
    sw = query_df(db, "SELECT coalesce(sweep, '(none)') AS value, count(*) AS runs FROM runs GROUP BY 1 ORDER BY 1",
                  engine="pandas")
    out["sweep"] = [{"value": s, "runs": int(n)} for s, n in zip(sw["value"], sw["runs"])]
    return out
