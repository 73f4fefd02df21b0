"""Candidates fitted from the store's completed runs through the group-fit pipeline (analysis/fits), reusing the
store's stored fits of the same runs and options; several stores are read as one (analysis.store.union).

Each candidate's law is fitted to its **config means**: one point per config (ModelConfig id: a shape and head
layout), the mean loss over the config's seeds. Two reasons. (1) Fitted to every run, the Huber objective on log
residuals (delta 1e-3, in effect least absolute deviations) is flat wherever the curve passes between the seeds
of each config, so the optimum is not unique and a refit from it does not move: a bootstrap that resamples
configs with their seeds (what a prediction for an untrained config needs) then has no spread at all (measured
on studies/gqa-heads-steps (8,2): 200 of 200 refits stayed at the start). (2) On config means the pipeline's
bootstrap over rows *is* the bootstrap over configs, seeds resampled together, and a stored fit keeps its draws.
Held-out error is about the same either way (`costlaw validate`; the numbers are in analysis/validate). With one
run per config (the paper's ladders) the means are the runs.

The runs themselves measure the run-to-run noise (analysis/recommend/noise.py) that prediction intervals add.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import replace

from costlaw.analysis.recommend.candidates import (
    FAMILIES,
    MIN_SIZES,
    Candidate,
    FitSet,
    hybrid_label,
    pair_label,
    policy_label,
)
from costlaw.analysis.recommend.fitsfile import on_dense
from costlaw.analysis.shape import Anchor, Template
from costlaw.costmodel import KVPolicy, paper_ffn
from costlaw.costmodel.attention import Full, decode_layout
from costlaw.costmodel.core.errors import CostlawError

RUN_COLUMNS = ("run_id, model_id, seed, sweep, stage, seq_len, family, d_model, n_layers, n_heads, n_kv_heads, "
               "head_dim, ffn_dim, vocab_size, tied_embeddings, rope_theta, layout, n_full_layers, kv_method, kv_keep, "
               "kv_budget, params_non_embedding, val_loss, final_loss, tokens, config_json, fingerprint, done_mtime_ns")


def runs_sql(sweep: str | None = None) -> str:
    """The query `load_runs` reads (and the fits table records as a fit's source_query)."""
    where = "status = 'completed'"
    if sweep:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", sweep):
            raise CostlawError(f"--sweep: {sweep!r} is not a sweep name; names use letters, digits, . _ -")
        where += f" AND sweep = '{sweep}'"
    return f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY run_id"


def load_runs(db, sweep: str | None = None):
    """Completed runs (pandas) with `loss` = val_loss, else final_loss, of one store or several (`db` a list:
    stacked with a `store` column, a run several hold kept once; analysis.store.union)."""
    from costlaw.analysis.store.union import as_list, query_stores

    dbs = as_list(db)
    df = query_stores(dbs, runs_sql(sweep))
    if len(dbs) == 1:
        df = df.drop(columns="store")
    if len(df):
        df["loss"] = df["val_loss"].where(df["val_loss"].notna(), df["final_loss"])
    return df


def stores_text(db) -> str:
    from costlaw.analysis.store.union import as_list

    dbs = as_list(db)
    return f"store {dbs[0]}" if len(dbs) == 1 else f"stores {', '.join(dbs)}"


def fit_store(db, *, families=FAMILIES, n_boot: int = 200, seed: int = 0, min_sizes: int = MIN_SIZES,
              train_context: int | None = None, sweep: str | None = None,
              progress: Callable[[str], None] | None = None, refit: bool = False, store: bool = True,
              noise: str = "constant", lack_of_fit: bool = False, context: int | None = None,
              keep_grid: int = 0) -> FitSet:
    """Every candidate the store's completed runs cover (see `fit_runs`); `db` one results file or a list of them.
    A candidate whose runs, options and fitter a fits table already holds a fit of takes that fit (never with
    `refit`); the others are fitted and, with `store` and a single store, written to its fits table (under the
    store's write lock), so the next call reuses them; a file that cannot be written is read all the same
    (fit_status["not_stored"] says why). With several stores, stored fits are looked up in every one and new ones
    are written to none: a fit of runs from several studies belongs to no one study's file, and a refit costs
    seconds. `fit_status` of the result says which laws were reused and which fitted."""
    from costlaw.analysis.fits import lookup
    from costlaw.analysis.fits import store as store_fits
    from costlaw.analysis.store.union import as_list

    dbs = as_list(db)
    df = load_runs(dbs, sweep)
    if not len(df):
        raise CostlawError(f"--db: {', '.join(dbs)} {'has' if len(dbs) == 1 else 'have'} no completed runs"
                           + (f" in sweep {sweep!r}" if sweep else "")
                           + "; run a sweep and `costlaw ingest` its root first")
    kv = kv_policy_rows(dbs, sweep)

    def look(fps):
        out = {}
        for d in dbs:
            out.update(lookup(d, fps))
        return out

    fs = fit_runs(df, kv, source=stores_text(dbs), families=families, n_boot=n_boot, seed=seed,
                  min_sizes=min_sizes, train_context=train_context, progress=progress,
                  lookup=None if refit else look, noise=noise, lack_of_fit=lack_of_fit, context=context,
                  keep_grid=keep_grid)
    attach_retrieval(fs, retrieval_rows(dbs, sweep))
    if context is not None and fs.train_context is not None and context > fs.train_context:
        from costlaw.analysis.validate.context import context_evidence

        fs.context_evidence = context_evidence(dbs, sweep)
    fs.fit_status["refit"] = bool(refit)
    fresh = {c.fit_extra["data_fingerprint"] for c in fs.candidates
             if c.label in fs.fit_status["fitted"] and not c.base}
    if fresh and len(dbs) > 1:
        fs.fit_status["not_stored"] = "several --db given: new fits are stored in none of them"
    elif store and fresh:
        try:
            fs.fit_status["stored"] = len(store_fits(dbs[0], fs.to_json(), source_query=runs_sql(sweep),
                                                     only=fresh))
        except (CostlawError, OSError) as e:
            # The fits table is a cache: a results file this user cannot write, or one an ingest holds past the
            # wait, still gets its recommendation; the laws are fitted again next time.
            fs.fit_status["not_stored"] = " ".join(str(e).split())
            if progress:
                progress(f"fits not stored: {fs.fit_status['not_stored']}")
    return fs


def retrieval_rows(db, sweep):
    """Passkey accuracy per (run, context, depth) of completed runs, of one store or several."""
    return _eval_rows(db, sweep, "SELECT t.run_id, t.context, t.depth, t.accuracy, t.samples FROM retrieval t",
                      ("run_id", "context", "depth"))


def attach_retrieval(fs, rows) -> None:
    """Each candidate's passkey accuracy (for --min-retrieval): the mean over depths (weighted by samples) on its
    largest ladder runs, at the longest context measured on them. Compressed candidates carry the accuracy of
    their own kv_policy evaluation (set in _policies_from_store) and keep it."""
    if rows is None or not len(rows):
        return
    for c in fs.candidates:
        if c.base or not c.ladder:
            continue
        top = max(p["N"] for p in c.ladder)
        ids = {p["run_id"] for p in c.ladder if p["N"] == top}
        g = rows[rows["run_id"].isin(ids) & rows["accuracy"].notna()]
        if not len(g):
            continue
        g = g[g["context"] == g["context"].max()]
        w = g["samples"].fillna(1).clip(lower=1)
        c.retrieval = float((g["accuracy"] * w).sum() / w.sum())
        c.retrieval_source = (f"passkey accuracy {c.retrieval:.2f} at context {int(g['context'].iloc[0])}, "
                              f"{len(g)} (run, depth) rows on its largest runs (N {top:.3g})")


def kv_policy_rows(db, sweep):
    """The kv_policy_evals view with each run's stage, family and layout, of one store or several."""
    return _eval_rows(db, sweep, "SELECT k.*, r.stage, r.family AS run_family, r.layout, r.base_run_id "
                                 "FROM kv_policy_evals k", ("run_id", "context", "policy", "keep", "budget"))


def _eval_rows(db, sweep, select: str, keys: tuple[str, ...]):
    """`select` (a view aliased, joined here to its runs) over the completed runs of one store or several.
    query_stores keeps one row per run; an eval view has several rows per run, and several stores may hold the
    same run's evals: each row (by `keys`) is kept once."""
    import pandas as pd

    from costlaw.analysis.store import query_df
    from costlaw.analysis.store.union import as_list

    runs_sql(sweep)  # checks the sweep name before it goes into SQL
    where = "WHERE r.status = 'completed'" + (f" AND r.sweep = '{sweep}'" if sweep else "")
    frames = [query_df(d, f"{select} JOIN runs r USING (run_id) {where}", engine="pandas") for d in as_list(db)]
    if len(frames) == 1:
        return frames[0]
    df = pd.concat(frames, ignore_index=True)
    keys = [c for c in keys if c in df.columns]
    return df.drop_duplicates(keys).reset_index(drop=True) if len(df) else df


def measured_context(runs, families, min_sizes: int, context: int | None, notes: list[str]) -> int:
    """The training context whose runs fit the laws: without `context`, the pretraining seq_len with the most
    runs; with it, among the seq_lens at which some candidate of `families` has >= min_sizes sizes, the one
    nearest `context` (in log distance, the longer on a tie), with a note when that is not the most common one."""
    import math

    pre = runs[runs["stage"].fillna("pretrain") == "pretrain"]
    counts = (pre if len(pre) else runs)["seq_len"].value_counts()
    common = int(counts.index[0])  # the ladder's own context: pretraining runs outnumber any one extension
    if context is None:
        return common
    fam = runs[runs["family"].isin(families)]
    fittable = []
    for T, g in fam.groupby("seq_len"):
        sizes = g.groupby(["family", "n_heads", "n_kv_heads", "head_dim"])["params_non_embedding"].nunique()
        if len(sizes) and sizes.max() >= min_sizes:
            fittable.append(int(T))
    if not fittable:
        return common
    best = min(fittable, key=lambda T: (abs(math.log(T / context)), -T))
    if best != common:
        notes.append(f"laws fitted on losses measured at seq_len {best}, the measured context nearest "
                     f"{context} ({', '.join(str(T) for T in sorted(fittable))} can fit laws; --train-context "
                     "picks another)")
    return best


def _mode(s):
    return s.mode().iloc[0]


def _group_key(row) -> tuple:
    fam = row["family"]
    key = (fam, int(row["n_heads"]), int(row["n_kv_heads"]), int(row["head_dim"]))
    if fam == "hybrid":
        # one hybrid candidate per sparse pattern: the share of full layers is the group's median, because
        # small ladders round a fixed share differently at each depth (1 of 3 layers, 2 of 4, ...)
        layout = decode_layout(json.loads(row["layout"]))
        key += (next(s.spec() for s in layout if not isinstance(s, Full)),)
    elif fam == "compressed":
        key += (row["kv_method"], float(row["kv_keep"]) if row["kv_keep"] == row["kv_keep"] else None)
    return key


def fit_runs(df, kv=None, *, source: str = "runs", families=FAMILIES, n_boot: int = 200, seed: int = 0,
             min_sizes: int = MIN_SIZES, train_context: int | None = None,
             progress: Callable[[str], None] | None = None,
             lookup: Callable[[list[str]], dict] | None = None, noise: str = "constant",
             lack_of_fit: bool = False, law: str = "gqa-size", x_extra: tuple[str, ...] = (),
             context: int | None = None, keep_grid: int = 0) -> FitSet:
    """Group completed pretraining runs by candidate and fit each group with >= min_sizes distinct N through the
    group-fit pipeline (analysis/fits): L(N) = (a/N)^b + E on params_non_embedding and the config means of loss
    (module doc), bootstrap over configs; then each candidate's run-to-run noise (`noise`: "constant" or "size",
    `lack_of_fit`: add the config means' excess scatter; analysis/recommend/noise.py).

    df: rows of the store's `runs` table (RUN_COLUMNS) plus `loss`; kv: the `kv_policy_evals` view (or None).
    Only runs at one training context are pooled (pretraining and extension runs alike: each loss is measured at
    the length its run trained at): `train_context`, else `measured_context` (the one nearest `context`, the
    context a recommendation is for, among those that can fit a law; without `context`, the most common).
    lookup: data fingerprints -> stored fit entries (analysis.fits.lookup); groups it returns are not refitted.
    law, x_extra: another registered law of N and these columns of df (constant within a config), e.g. the
    shape-aware law `costlaw validate --law gqa-size-shape` compares against gqa-size.
    """
    from costlaw.analysis.fits import FitOptions, fit_groups, make_groups

    options = FitOptions(law=law, x=("params_non_embedding", *x_extra), y="loss", bootstrap=n_boot, seed=seed)
    notes: list[str] = []
    df = df[df["loss"].notna() & df["params_non_embedding"].notna()]
    stage = df["stage"].fillna("pretrain")
    pre = df[stage != "compress"]  # losses measured where a run was trained: pretraining or an extension
    if len(pre) < len(df):
        notes.append(f"{len(df) - len(pre)} compress-stage run(s) left out of the size fits")
    if not len(pre):
        raise CostlawError("--db: no completed pretraining run has a loss; train a ladder first")
    if train_context is None:
        train_context = measured_context(pre, families, min_sizes, context, notes)
    sel = pre[pre["seq_len"] == train_context]
    if not len(sel):
        raise CostlawError(f"--train-context: no completed run trained at seq_len {train_context}; the store has "
                           f"{', '.join(str(int(x)) for x in sorted(pre['seq_len'].unique()))}")
    if len(sel) < len(pre):
        notes.append(f"{len(pre) - len(sel)} run(s) at other training contexts left out (fits use seq_len "
                     f"{train_context}; --train-context picks another)")
    sel = sel[sel["family"].isin(families)]
    groups: dict[tuple, list] = {}
    for idx, row in sel.iterrows():
        groups.setdefault(_group_key(row), []).append(idx)
    show_dh = sel["head_dim"].nunique() > 1
    cands, parts, runs = [], [], {}
    for key in sorted(groups, key=lambda k: (FAMILIES.index(k[0]), -k[1], -k[2], k[3:])):
        g = sel.loc[groups[key]].sort_values(["params_non_embedding", "run_id"])
        fam, n_h, n_kv, d_h = key[:4]
        base = pair_label(n_h, n_kv, d_h if show_dh else None)
        tmpl = _template_from_runs(g, n_h, n_kv, d_h)
        group = {"family": fam, "n_heads": n_h, "n_kv_heads": n_kv, "head_dim": d_h, "seq_len": train_context}
        if fam == "hybrid":
            sparse = key[4]
            frac = float((g["n_full_layers"] / g["n_layers"]).median())
            label = hybrid_label(base, frac, sparse)
            tmpl = replace(tmpl, sparse=sparse, full_fraction=frac)
            group.update(sparse=sparse)
        elif fam == "compressed":
            policy = json.loads(g.iloc[-1]["config_json"])["config"]["model"]["kv_policy"]
            label = policy_label(base, policy, True)
            tmpl = replace(tmpl, kv_policy=policy)
            group.update(kv_method=key[4], kv_keep=key[5])
        else:
            label = base
        ladder = [_point(r, x_extra) for r in g.itertuples()]
        means, fps = config_means(g, x_extra)
        runs.update(fps)
        cands.append(Candidate(label=label, family=fam, template=tmpl, law=options.law, ladder=ladder,
                               n_points=len(means), n_runs=len(g), n_max=float(g["params_non_embedding"].max()),
                               group=group, x_extra=tuple(x_extra)))
        parts.append((group, means))
    fit_in = make_groups(parts, options, labels=[c.label for c in cands], runs=runs, min_sizes=min_sizes)
    stored = lookup([g.fingerprint for g in fit_in if g.fingerprint]) if lookup else {}
    if stored and progress:
        progress(f"{sum(g.fingerprint in stored for g in fit_in)} law(s) reused from the fits table")
    status: dict = {"reused": [], "fitted": []}
    for cand, f in zip(cands, fit_groups(fit_in, options, stored=stored, say=progress)):
        if f.fitted:
            cand.apply_fit(f.entry)
            cand.measure_noise(noise, lack_of_fit)
            status["reused" if f.reused else "fitted"].append(cand.label)
        else:
            cand.reason = f.entry["reason"]
    if kv is not None and len(kv):
        cands.extend(_policies_from_store(kv, cands, sel, train_context, show_dh, notes, keep_grid))
    if not cands:
        raise CostlawError(f"--families: no completed run of {', '.join(families)} at seq_len {train_context}; "
                           "widen --families")
    n_cfg = sum(c.n_points for c in cands if not c.base)
    src = f"{source}: {len(sel)} completed runs ({n_cfg} configs) at seq_len {train_context}"
    return FitSet(cands, src, notes, options.law, int(train_context), options=options, fit_status=status)


def _point(r, x_extra=()) -> dict:
    """A ladder point: one run (its config's id, shape and seed, its loss and the law's other variables)."""
    pt = {"N": float(r.params_non_embedding), "d_model": int(r.d_model), "n_layers": int(r.n_layers),
          "loss": float(r.loss), "run_id": r.run_id, **{x: float(getattr(r, x)) for x in x_extra}}
    if getattr(r, "model_id", None) is not None:
        pt["model_id"] = r.model_id
    seed = getattr(r, "seed", None)
    if seed is not None and seed == seed:
        pt["seed"] = int(seed)
    return pt


def config_means(g, x_extra=()):
    """One row per config (model_id, else shape and N) of a candidate's runs: N, the extra columns, the mean loss
    over its seeds, and a run id and ingest fingerprint joining its runs' (what the stored fit is keyed by)."""
    import pandas as pd

    key = g["model_id"] if "model_id" in g.columns else (g["params_non_embedding"].astype(str) + "/"
                                                         + g["d_model"].astype(str) + "x" + g["n_layers"].astype(str))
    rows, fps = [], {}
    for _, c in g.groupby(key.to_numpy(), sort=False):
        c = c.sort_values("run_id")
        rid = "+".join(c["run_id"])
        have_fp = "fingerprint" in c.columns and c["fingerprint"].notna().all()
        fp = "+".join(str(f) for f in c["fingerprint"]) if have_fp else None
        fps[rid] = fp
        row = {"run_id": rid, "params_non_embedding": float(c["params_non_embedding"].iloc[0]),
               "loss": float(c["loss"].mean()), "runs": len(c)}
        row.update({x: float(c[x].iloc[0]) for x in x_extra})
        rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", "params_non_embedding", *x_extra, "loss", "runs"]), fps


def _template_from_runs(g, n_h, n_kv, d_h) -> Template:
    paper = all(int(f) == paper_ffn(int(d)) for f, d in zip(g["ffn_dim"], g["d_model"]))
    ratio = None if paper else float((g["ffn_dim"] / g["d_model"]).median())
    anchors = tuple(sorted({Anchor(float(r.params_non_embedding), int(r.n_layers), int(r.d_model))
                            for r in g.itertuples()}, key=lambda a: a.n_params))
    return Template(n_heads=n_h, n_kv_heads=n_kv, head_dim=d_h, vocab_size=int(_mode(g["vocab_size"])),
                    tied_embeddings=bool(_mode(g["tied_embeddings"])), rope_theta=float(_mode(g["rope_theta"])),
                    ffn_ratio=ratio, anchors=anchors)


def _policies_from_store(kv, cands, sel, train_context, show_dh, notes, keep_grid: int = 0) -> list[Candidate]:
    """Compressed-on-dense candidates: for each dense GQA candidate and (policy, keep) measured on its runs,
    ΔNLL from its largest run at the largest context measured (the closest to where it is used); measured on
    two or more sizes there, also ΔNLL(N), a power law in N (`delta_law`), which the search uses at N*. A policy
    measured at two or more sizes and keep ratios also gets ΔNLL(N, keep) (`keep_law`), which gives the ΔNLL(N) of a
    keep measured on one size only and, with `keep_grid` > 0, that many candidates at keep ratios between the
    measured ones (geometric steps), so the search can pick a keep no run measured."""
    out = []
    kv = with_dense_run(kv)
    kv = kv[kv["keep"].notna() & kv["dense_run"].isin(sel["run_id"])]
    kv = kv[kv["run_family"] == "gqa"]
    if not len(kv):
        return out
    if kv["delta_nll"].isna().any():
        kv = kv.copy()
        kv["delta_nll"] = kv["delta_nll"].fillna(kv["nll"] - kv["nll_full"])
    by_label = {c.label: c for c in cands if c.family == "gqa"}
    joint = {}
    for key, gp in kv[kv["delta_nll"].notna()].groupby(["n_heads", "n_kv_heads", "head_dim", "policy"]):
        joint[key] = keep_law(gp[gp["context"] == gp["context"].max()])
    for (n_h, n_kv, d_h, pol, keep), g in kv.groupby(["n_heads", "n_kv_heads", "head_dim", "policy", "keep"]):
        base = by_label.get(pair_label(int(n_h), int(n_kv), int(d_h) if show_dh else None))
        if base is None or g["delta_nll"].isna().all():
            continue
        if pol not in _methods():
            notes.append(f"kv_policy evals of {pol!r} skipped: not a costmodel KV method")
            continue
        jl = joint.get((n_h, n_kv, d_h, pol))
        g = g[g["delta_nll"].notna()]
        g = g[g["context"] == g["context"].max()]
        top = g[g["params_non_embedding"] == g["params_non_embedding"].max()]
        delta = float(top["delta_nll"].mean())
        src = (f"kv_policy eval: ΔNLL {delta:+.4g} at keep {keep:g}, context {int(top['context'].iloc[0])}, "
               f"on run {top['dense_run'].iloc[0]} (N {float(top['params_non_embedding'].iloc[0]):.3g})")
        c = on_dense(base, KVPolicy(pol, keep=float(keep)).to_dict(), delta, src)
        c.delta_law, c.keep_law = delta_law(g), jl
        if c.delta_law is not None:
            c.delta_source += (f"; ΔNLL(N) = {math.exp(c.delta_law['a']):.4g}·N^{c.delta_law['b']:+.3f} over "
                               f"{c.delta_law['sizes']} sizes")
        elif jl is not None and jl["keep_min"] <= keep <= jl["keep_max"]:
            c.delta_law = delta_law_at(jl, float(keep))
            c.delta_source += f"; ΔNLL(N) from {keep_law_text(jl)}"
        if "retrieval_accuracy" in top and top["retrieval_accuracy"].notna().any():
            c.retrieval = float(top["retrieval_accuracy"].mean())
            c.retrieval_source = (f"kv_policy eval: retrieval {c.retrieval:.2f} at keep {keep:g}, context "
                                  f"{int(top['context'].iloc[0])}, on run {top['dense_run'].iloc[0]}")
        out.append(c)
    if keep_grid > 0:
        out += _interpolated(joint, by_label, {(c.base, c.template.kv_policy["method"], c.template.kv_policy["keep"])
                                               for c in out}, show_dh, keep_grid)
    return out


def _interpolated(joint, by_label, measured, show_dh, n: int) -> list[Candidate]:
    """Candidates at `n` keep ratios in geometric steps across each keep law's measured range, away from the keeps
    measured (within 2%), their ΔNLL(N) from the law; no retrieval measured, so --min-retrieval excludes them."""
    import numpy as np

    out = []
    for (n_h, n_kv, d_h, pol), jl in joint.items():
        base = by_label.get(pair_label(int(n_h), int(n_kv), int(d_h) if show_dh else None))
        if jl is None or base is None or pol not in _methods():
            continue
        near = [k for b, p, k in measured if b == base.label and p == pol]
        for k in np.geomspace(jl["keep_min"], jl["keep_max"], n + 2)[1:-1]:
            k = float(f"{k:.3g}")
            if any(abs(k / m - 1) < 0.02 for m in near):
                continue
            law = delta_law_at(jl, k)
            delta = math.exp(law["a"] + law["b"] * math.log(jl["n_max"]))
            c = on_dense(base, KVPolicy(pol, keep=k).to_dict(), delta,
                         f"interpolated from {keep_law_text(jl)}; no run measured keep {k:g}")
            c.delta_law, c.keep_law = law, jl
            out.append(c)
    return out


def keep_law(g) -> dict | None:
    """log ΔNLL = a + b log N + c log(1/keep - 1) by least squares over the mean ΔNLL of each (size, keep < 1) one
    policy was measured at on one base: zero at keep 1, growing as the cache shrinks, a power law in N at each keep
    as `delta_law` is. None with fewer than two sizes, two keep ratios or four points, or a ΔNLL <= 0."""
    import numpy as np

    per = g[g["keep"] < 1].groupby(["params_non_embedding", "keep"])["delta_nll"].mean()
    if len(per) < 4 or (per <= 0).any():
        return None
    n = per.index.get_level_values(0).to_numpy(dtype=float)
    k = per.index.get_level_values(1).to_numpy(dtype=float)
    if len(set(n)) < 2 or len(set(k)) < 2:
        return None
    x = np.column_stack([np.ones(len(per)), np.log(n), np.log(1 / k - 1)])
    y = np.log(per.to_numpy(dtype=float))
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    rms = float(np.sqrt(np.mean((y - x @ coef) ** 2)))
    return {"a": float(coef[0]), "b": float(coef[1]), "c": float(coef[2]), "n_min": float(n.min()),
            "n_max": float(n.max()), "keep_min": float(k.min()), "keep_max": float(k.max()), "sizes": len(set(n)),
            "keeps": len(set(k)), "points": len(per), "rms_log": rms}


def delta_law_at(jl: dict, keep: float) -> dict:
    """The ΔNLL(N) power law a keep law gives at `keep` (delta_law's form)."""
    return {"a": jl["a"] + jl["c"] * math.log(1 / keep - 1), "b": jl["b"], "n_min": jl["n_min"], "n_max": jl["n_max"],
            "sizes": jl["sizes"], "keep": keep}


def keep_law_text(jl: dict) -> str:
    return (f"ΔNLL(N, keep) = {math.exp(jl['a']):.4g}·N^{jl['b']:+.3f}·(1/keep - 1)^{jl['c']:.3f} over {jl['sizes']} "
            f"sizes × {jl['keeps']} keeps (rms {jl['rms_log']:.3f} in log ΔNLL)")


def delta_law(g) -> dict | None:
    """log ΔNLL = a + b log N by least squares over the sizes a policy was measured on (the mean ΔNLL per size);
    None with fewer than two sizes or a ΔNLL <= 0, which a power law cannot take."""
    import numpy as np

    per = g.groupby("params_non_embedding")["delta_nll"].mean()
    if len(per) < 2 or (per <= 0).any():
        return None
    x, y = np.log(per.index.to_numpy(dtype=float)), np.log(per.to_numpy(dtype=float))
    b, a = np.polyfit(x, y, 1)
    return {"a": float(a), "b": float(b), "n_min": float(per.index.min()), "n_max": float(per.index.max()),
            "sizes": int(len(per))}


def with_dense_run(kv):
    """kv_policy rows with `dense_run`, the run whose cache they compressed: `costlaw kv-eval` writes its rows into
    a compress-stage run of its own that names the dense run (base_run_id); rows written into a dense run itself
    name that run."""
    if "base_run_id" not in kv.columns:
        return kv.assign(dense_run=kv["run_id"])
    evaluated = (kv["stage"] == "compress") & kv["base_run_id"].notna()
    return kv.assign(dense_run=kv["base_run_id"].where(evaluated, kv["run_id"]))


def _methods():
    from costlaw.costmodel import METHODS

    return METHODS
