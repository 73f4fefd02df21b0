"""Candidates fitted from the store's completed runs (one law per candidate, bootstrap over runs), through the
group-fit pipeline (analysis/fits), reusing the store's stored fits of the same runs and options."""

from __future__ import annotations

import json
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

RUN_COLUMNS = ("run_id, sweep, stage, seq_len, family, d_model, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, "
               "vocab_size, tied_embeddings, rope_theta, layout, n_full_layers, kv_method, kv_keep, kv_budget, "
               "params_non_embedding, val_loss, final_loss, tokens, config_json, fingerprint")


def runs_sql(sweep: str | None = None) -> str:
    """The query `load_runs` reads (and the fits table records as a fit's source_query)."""
    where = "status = 'completed'"
    if sweep:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", sweep):
            raise CostlawError(f"--sweep: {sweep!r} is not a sweep name; names use letters, digits, . _ -")
        where += f" AND sweep = '{sweep}'"
    return f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY run_id"


def load_runs(db, sweep: str | None = None):
    """Completed runs (pandas) with `loss` = val_loss, else final_loss."""
    from costlaw.analysis.store import query_df

    df = query_df(db, runs_sql(sweep), engine="pandas")
    if len(df):
        df["loss"] = df["val_loss"].where(df["val_loss"].notna(), df["final_loss"])
    return df


def fit_store(db, *, families=FAMILIES, n_boot: int = 200, seed: int = 0, min_sizes: int = MIN_SIZES,
              train_context: int | None = None, sweep: str | None = None,
              progress: Callable[[str], None] | None = None, refit: bool = False, store: bool = True) -> FitSet:
    """Every candidate the store's completed runs cover (see `fit_runs`). A candidate whose runs, options and
    fitter the store's fits table already holds a fit of takes that fit (never with `refit`); the others are
    fitted and, with `store`, written to the fits table (under the store's write lock), so the next call reuses
    them; a file that cannot be written is read all the same (fit_status["not_stored"] says why). `fit_status`
    of the result says which laws were reused and which fitted."""
    from costlaw.analysis.fits import lookup
    from costlaw.analysis.fits import store as store_fits

    df = load_runs(db, sweep)
    if not len(df):
        raise CostlawError(f"--db: {db} has no completed runs" + (f" in sweep {sweep!r}" if sweep else "")
                           + "; run a sweep and `costlaw ingest` its root first")
    kv = kv_policy_rows(db, sweep)
    fs = fit_runs(df, kv, source=f"store {db}", families=families, n_boot=n_boot, seed=seed,
                  min_sizes=min_sizes, train_context=train_context, progress=progress,
                  lookup=None if refit else (lambda fps: lookup(db, fps)))
    fs.fit_status["refit"] = bool(refit)
    fresh = {c.fit_extra["data_fingerprint"] for c in fs.candidates
             if c.label in fs.fit_status["fitted"] and not c.base}
    if store and fresh:
        try:
            fs.fit_status["stored"] = len(store_fits(db, fs.to_json(), source_query=runs_sql(sweep), only=fresh))
        except (CostlawError, OSError) as e:
            # The fits table is a cache: a results file this user cannot write, or one an ingest holds past the
            # wait, still gets its recommendation; the laws are fitted again next time.
            fs.fit_status["not_stored"] = " ".join(str(e).split())
            if progress:
                progress(f"fits not stored: {fs.fit_status['not_stored']}")
    return fs


def kv_policy_rows(db, sweep):
    from costlaw.analysis.store import query_df

    where = "WHERE r.status = 'completed'" + (f" AND r.sweep = '{sweep}'" if sweep else "")
    return query_df(db, "SELECT k.*, r.stage, r.family AS run_family, r.layout FROM kv_policy_evals k "
                        f"JOIN runs r USING (run_id) {where}", engine="pandas")


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
             lookup: Callable[[list[str]], dict] | None = None) -> FitSet:
    """Group completed pretraining runs by candidate and fit each group with >= min_sizes distinct N through the
    group-fit pipeline (analysis/fits): L(N) = (a/N)^b + E on params_non_embedding and loss, bootstrap over runs.

    df: rows of the store's `runs` table (RUN_COLUMNS) plus `loss`; kv: the `kv_policy_evals` view (or None).
    Only runs at one training context are pooled: `train_context`, else the seq_len with the most runs.
    lookup: data fingerprints -> stored fit entries (analysis.fits.lookup); groups it returns are not refitted.
    """
    from costlaw.analysis.fits import FitOptions, fit_groups, make_groups

    options = FitOptions(law="gqa-size", x=("params_non_embedding",), y="loss", bootstrap=n_boot, seed=seed)
    notes: list[str] = []
    df = df[df["loss"].notna() & df["params_non_embedding"].notna()]
    pre = df[df["stage"].fillna("pretrain") == "pretrain"]
    if len(pre) < len(df):
        notes.append(f"{len(df) - len(pre)} extend/compress-stage run(s) left out of the size fits")
    if not len(pre):
        raise CostlawError("--db: no completed pretraining run has a loss; train a ladder first")
    if train_context is None:
        counts = pre["seq_len"].value_counts()
        train_context = int(counts.index[0])
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
    cands, parts = [], []
    for key in sorted(groups, key=lambda k: (FAMILIES.index(k[0]), -k[1], -k[2], k[3:])):
        g = sel.loc[groups[key]].sort_values("params_non_embedding")
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
        ladder = [{"N": float(r.params_non_embedding), "d_model": int(r.d_model), "n_layers": int(r.n_layers),
                   "loss": float(r.loss), "run_id": r.run_id} for r in g.itertuples()]
        cands.append(Candidate(label=label, family=fam, template=tmpl, law=options.law, ladder=ladder,
                               n_points=len(g), n_max=float(g["params_non_embedding"].max()), group=group))
        parts.append((group, g))
    fps = sel["fingerprint"] if "fingerprint" in sel.columns else [None] * len(sel)
    fit_in = make_groups(parts, options, labels=[c.label for c in cands], runs=dict(zip(sel["run_id"], fps)),
                         min_sizes=min_sizes)
    stored = lookup([g.fingerprint for g in fit_in if g.fingerprint]) if lookup else {}
    if stored and progress:
        progress(f"{sum(g.fingerprint in stored for g in fit_in)} law(s) reused from the fits table")
    status: dict = {"reused": [], "fitted": []}
    for cand, f in zip(cands, fit_groups(fit_in, options, stored=stored, say=progress)):
        if f.fitted:
            cand.apply_fit(f.entry)
            status["reused" if f.reused else "fitted"].append(cand.label)
        else:
            cand.reason = f.entry["reason"]
    if kv is not None and len(kv):
        cands.extend(_policies_from_store(kv, cands, sel, train_context, show_dh, notes))
    if not cands:
        raise CostlawError(f"--families: no completed run of {', '.join(families)} at seq_len {train_context}; "
                           "widen --families")
    src = f"{source}: {len(sel)} completed runs at seq_len {train_context}"
    return FitSet(cands, src, notes, options.law, int(train_context), options=options, fit_status=status)


def _template_from_runs(g, n_h, n_kv, d_h) -> Template:
    paper = all(int(f) == paper_ffn(int(d)) for f, d in zip(g["ffn_dim"], g["d_model"]))
    ratio = None if paper else float((g["ffn_dim"] / g["d_model"]).median())
    anchors = tuple(sorted({Anchor(float(r.params_non_embedding), int(r.n_layers), int(r.d_model))
                            for r in g.itertuples()}, key=lambda a: a.n_params))
    return Template(n_heads=n_h, n_kv_heads=n_kv, head_dim=d_h, vocab_size=int(_mode(g["vocab_size"])),
                    tied_embeddings=bool(_mode(g["tied_embeddings"])), rope_theta=float(_mode(g["rope_theta"])),
                    ffn_ratio=ratio, anchors=anchors)


def _policies_from_store(kv, cands, sel, train_context, show_dh, notes) -> list[Candidate]:
    """Compressed-on-dense candidates: for each dense GQA candidate and (policy, keep) measured on its runs,
    ΔNLL from its largest run at the largest context measured (the closest to where it is used)."""
    out = []
    kv = kv[kv["keep"].notna() & kv["run_id"].isin(sel["run_id"])]
    kv = kv[kv["run_family"] == "gqa"]
    if not len(kv):
        return out
    if kv["delta_nll"].isna().any():
        kv = kv.copy()
        kv["delta_nll"] = kv["delta_nll"].fillna(kv["nll"] - kv["nll_full"])
    by_label = {c.label: c for c in cands if c.family == "gqa"}
    for (n_h, n_kv, d_h, pol, keep), g in kv.groupby(["n_heads", "n_kv_heads", "head_dim", "policy", "keep"]):
        base = by_label.get(pair_label(int(n_h), int(n_kv), int(d_h) if show_dh else None))
        if base is None or g["delta_nll"].isna().all():
            continue
        if pol not in _methods():
            notes.append(f"kv_policy evals of {pol!r} skipped: not a costmodel KV method")
            continue
        g = g[g["delta_nll"].notna()]
        g = g[g["context"] == g["context"].max()]
        top = g[g["params_non_embedding"] == g["params_non_embedding"].max()]
        delta = float(top["delta_nll"].mean())
        src = (f"kv_policy eval: ΔNLL {delta:+.4g} at keep {keep:g}, context {int(top['context'].iloc[0])}, "
               f"on run {top['run_id'].iloc[0]} (N {float(top['params_non_embedding'].iloc[0]):.3g})")
        out.append(on_dense(base, KVPolicy(pol, keep=float(keep)).to_dict(), delta, src))
    return out


def _methods():
    from costlaw.costmodel import METHODS

    return METHODS
