"""What the report reads from the store: runs with labels, training curves, loss by position, environment."""

from __future__ import annotations

import json

from costlaw.analysis.frontier import run_label

MAX_CURVE_RUNS = 40  # training curves: at most this many runs, spread over the config labels
MAX_CURVE_POINTS = 300  # per run


def labelled_runs(runs):
    """The store's completed runs (analysis.recommend.load_runs) with a config label and the tokenizer per run
    (the loss's unit: analysis.figures.style.loss_unit_of)."""
    runs = runs.copy()
    labels, tokenizers = [], []
    for r in runs.itertuples():
        config = json.loads(r.config_json)["config"] if r.config_json else {}
        model = config.get("model", {})
        labels.append(run_label(r.n_heads, r.n_kv_heads, r.family, r.layout, model.get("kv_policy")))
        tokenizers.append(config.get("data", {}).get("tokenizer"))
    runs["label"] = labels
    runs["tokenizer"] = tokenizers
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


def _stacked(db, sql: str):
    """One statement's rows from each store (a list or one), stacked; the runs' own rows, however many hold them."""
    import pandas as pd

    from costlaw.analysis.store import query_df
    from costlaw.analysis.store.union import as_list

    frames = [query_df(d, sql, engine="pandas") for d in as_list(db)]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def steps_frame(db, runs):
    ids = pick_runs(runs)
    if not ids:
        return runs.iloc[0:0].assign(tokens=[], loss=[], N=[])
    df = _stacked(db, f"SELECT run_id, step, tokens, loss FROM steps WHERE run_id IN ({_in(ids)}) "
                      "ORDER BY run_id, step")
    df = df.drop_duplicates(["run_id", "step"])
    parts = []
    for _, g in df.groupby("run_id"):
        k = max(1, len(g) // MAX_CURVE_POINTS)
        parts.append(g.iloc[::k] if k > 1 else g)
    import pandas as pd

    df = pd.concat(parts) if parts else df
    return df.merge(_sizes(runs), on="run_id")


def position_frame(db, runs):
    """Loss by position at each run's largest evaluated context."""
    df = _stacked(db, "SELECT p.run_id, p.context, p.bucket, p.start_pos, p.end_pos, p.loss FROM position_loss p "
                      "JOIN runs r USING (run_id) WHERE r.status = 'completed'")
    df = df.drop_duplicates(["run_id", "context", "bucket"])
    if len(df):
        top = df.groupby("run_id")["context"].transform("max")
        df = df[df["context"] == top]
        df = df[df["run_id"].isin(pick_runs(runs))]  # pick_runs draws from `runs`: a --sweep filter holds here
    return df.merge(_sizes(runs), on="run_id")


def _sizes(runs):
    """run_id, label and N (non-embedding parameters) per run: what the per-run figures colour and group by."""
    return runs[["run_id", "label", "params_non_embedding"]].rename(columns={"params_non_embedding": "N"})


def environment(db) -> dict:
    """Distinct GPUs, torch versions, git commits, ... over all ingested runs (of every store, each run once), with
    counts; and run statuses and sweeps."""
    cols = ("gpu", "device", "torch", "cuda", "python", "git_commit", "git_dirty", "hostname", "costlaw_version",
            "corpus", "tokenizer")
    df = _stacked(db, f"SELECT run_id, status, coalesce(sweep, '(none)') AS sweep, {', '.join(cols)} FROM runs")
    df = df.drop_duplicates("run_id")
    out = {}
    for col in (*cols, "status", "sweep"):
        counts = df[col].astype(object).where(df[col].notna(), None).value_counts(dropna=False)
        items = sorted(((None if v != v else v, int(n)) for v, n in counts.items()),
                       key=lambda t: (-t[1], str(t[0])) if col not in ("sweep",) else (str(t[0]),))
        out[col] = [{"value": v.item() if hasattr(v, "item") else v, "runs": n} for v, n in items]
    return out
