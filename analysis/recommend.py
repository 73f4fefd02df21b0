"""The cheapest config that reaches a target loss at a context length: the GQA paper's search (§4.1),
generalised across families.

1. **Candidates.** GQA head configs (n_h, n_kv) (the paper's 21 pairs n_h, n_kv in {1..32}, n_kv <= n_h, or
   whatever the data cover); hybrid layouts (n_h, n_kv, sparse pattern; the share of full layers is the
   median of its runs', so fit an ablation over that share one sweep at a time with --sweep); compressed
   caches (a dense candidate + a KV policy at a keep ratio).
2. **Laws.** Each GQA or hybrid candidate has its own L(N) = (a/N)^b + E, N = non-embedding parameters,
   fitted to the store's completed runs (`fitting.fit`, Huber in log space; bootstrap over runs for
   intervals) or read from a fits file. A candidate with runs at fewer than 4 sizes is listed, unfit.
   A compressed candidate has no law of its own: its loss is its dense base's law plus the ΔNLL its policy
   measured at that keep ratio (the store's kv_policy evals or the fits file's `kv_policies`), so its N*
   solves L(N) = L* − ΔNLL.
3. **Size to config.** N* = law.inverse(L*); `analysis.shape` turns N* into a ModelConfig with N >= N*
   (aspect ratio from the candidate's ladder, else the paper's anchors; d a multiple of 64).
4. **Price and pick.** `costmodel.costs` at each context; `analysis.objective` gives Z and the budgets; the
   lowest Z within every budget wins, per context. The loss is predicted (with a bootstrap 95% interval) at
   the rounded config's N, and the extrapolation distance is N* over the largest trained N.

Fits file (JSON, `--fits FILE`), format "costlaw-fits/1":

    {"format": "costlaw-fits/1",
     "law": "gqa-size",                       # any registered one-variable law with an inverse; default gqa-size
     "source": "free text: where these fits come from",
     "train_context": 8192,                   # optional: the seq_len the laws were fitted at
     "defaults": {"head_dim": 64, "vocab_size": 50304, "tied_embeddings": true, "rope_theta": 500000.0},
     "candidates": [
       {"n_heads": 32, "n_kv_heads": 8,       # required
        "family": "gqa",                      # gqa (default) | hybrid | compressed (a trained compressed ladder)
        "params": {"a": 1.2e7, "b": 0.3, "E": 2.1},     # the law's parameters; absent: listed as unfit
        "reason": "3 sizes",                  # why there are no params (optional)
        "bootstrap": {"a": [...], "b": [...], "E": [...]},   # optional samples -> the loss interval
        "ci95": {"a": [lo, hi], ...},         # optional, shown only
        "r2": 0.999, "n_points": 8,           # optional, shown only
        "ladder": [{"N": 1.9e7, "d_model": 512, "n_layers": 6, "loss": 3.1}, ...],  # optional: aspect ratios
        "n_max": 1.0e9,                       # optional largest trained N (default: the ladder's largest)
        "head_dim": 64, "vocab_size": ..., "tied_embeddings": ..., "rope_theta": ...,  # optional overrides
        "ffn_ratio": 4.0,                     # optional: d_ff/d (default: the paper's 8d/3 to a multiple of 32)
        "sparse": "sink_window(4,1024)", "full_fraction": 0.333,   # hybrid only
        "kv_policy": {"method": "locret", "keep": 0.25}            # family "compressed" only
       }, ...],
     "kv_policies": [                         # optional: compressed candidates on top of dense ones
       {"method": "snapkv", "keep": 0.25, "delta_nll": 0.031,
        "base": "32,8",                       # a GQA candidate label; absent: every fitted GQA candidate
        "context": 8192, "source": "..."}]}

`costlaw recommend --db X --fits-out F` writes the store's fits in this format (bootstrap samples included).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from analysis.objective import Objective
from analysis.shape import Anchor, Shape, Template, shape
from costmodel import KVPolicy, paper_ffn
from costmodel.attention import Full, decode_layout
from costmodel.errors import CostlawError
from costmodel.units import binary_bytes, si, table

FITS_FORMAT = "costlaw-fits/1"
HEADS = (1, 2, 4, 8, 16, 32)
PAPER_PAIRS = tuple((h, k) for h in HEADS for k in HEADS if k <= h)  # the paper's 21 candidates
FAMILIES = ("gqa", "hybrid", "compressed")
MIN_SIZES = 4
EXTRAPOLATION_WARN = 4.0
DEFAULT_STANDARD = "d/d_h,8"


# ---------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """One configuration family member the search can size: its law (or why it has none) and template."""

    label: str
    family: str
    template: Template
    law: str = "gqa-size"
    params: dict | None = None
    samples: dict | None = None  # name -> array of bootstrap draws
    ci95: dict | None = None
    r2: float | None = None
    n_points: int = 0
    ladder: list[dict] = field(default_factory=list)  # {"N", "d_model", "n_layers", "loss"}
    n_max: float | None = None
    reason: str | None = None  # why there is no law
    base: str | None = None  # compressed-on-dense: the dense candidate whose law it uses
    delta_nll: float = 0.0
    delta_source: str | None = None
    group: dict = field(default_factory=dict)  # the store columns that select its runs
    fit_extra: dict = field(default_factory=dict)

    @property
    def fitted(self) -> bool:
        return self.params is not None

    @property
    def n_heads(self) -> int:
        return self.template.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.template.n_kv_heads

    def to_json(self) -> dict:
        t = self.template
        d: dict = {"label": self.label, "family": "compressed" if self.base else self.family,
                   "n_heads": t.n_heads, "n_kv_heads": t.n_kv_heads, "head_dim": t.head_dim,
                   "vocab_size": t.vocab_size, "tied_embeddings": t.tied_embeddings, "rope_theta": t.rope_theta}
        if t.ffn_ratio is not None:
            d["ffn_ratio"] = t.ffn_ratio
        if t.sparse is not None:
            d.update(sparse=t.sparse, full_fraction=t.full_fraction)
        if t.kv_policy is not None:
            d["kv_policy"] = t.kv_policy
        if self.params is not None:
            d["params"] = _floats(self.params)
        if self.reason:
            d["reason"] = self.reason
        if self.samples is not None:
            d["bootstrap"] = {k: [float(x) for x in np.asarray(v)] for k, v in self.samples.items()}
        if self.ci95 is not None:
            d["ci95"] = {k: [float(x) for x in v] for k, v in self.ci95.items()}
        if self.r2 is not None:
            d["r2"] = float(self.r2)
        d["n_points"] = int(self.n_points)
        if self.ladder:
            d["ladder"] = [{k: (float(v) if k in ("N", "loss") else v) for k, v in p.items()} for p in self.ladder]
        if self.n_max is not None:
            d["n_max"] = float(self.n_max)
        if self.base:
            d.update(base=self.base, delta_nll=self.delta_nll, delta_source=self.delta_source)
        return d


def _floats(d: dict) -> dict:
    return {k: float(v) for k, v in d.items()}


def pair_label(n_heads: int, n_kv_heads: int, head_dim: int | None = None) -> str:
    return f"{n_heads},{n_kv_heads}" + (f" d_h={head_dim}" if head_dim is not None else "")


def hybrid_label(base: str, full_fraction: float, sparse: str) -> str:
    return f"{base} full={full_fraction:.2f} {sparse}"


def policy_label(base: str, policy: dict, trained: bool = False) -> str:
    amount = f"keep={policy['keep']:g}" if policy.get("keep") is not None else f"budget={policy['budget']}"
    return f"{base} {policy['method']} {amount}" + (" trained" if trained else "")


def _norm(label: str) -> str:
    return re.sub(r"\s+", " ", label.strip()).lower()


@dataclass
class FitSet:
    """Candidates with their laws, from the store or a fits file."""

    candidates: list[Candidate]
    source: str
    notes: list[str] = field(default_factory=list)
    law: str = "gqa-size"
    train_context: int | None = None  # the seq_len the laws were fitted at (None: unknown, e.g. a fits file)

    def get(self, label: str) -> Candidate | None:
        key = _norm(label)
        return next((c for c in self.candidates if _norm(c.label) == key), None)

    def to_json(self) -> dict:
        """The fits-file form (module doc); compressed-on-dense candidates become `kv_policies` entries."""
        dense = [c.to_json() for c in self.candidates if not c.base]
        pol = [{"base": c.base, "method": c.template.kv_policy["method"], "keep": c.template.kv_policy["keep"],
                "delta_nll": c.delta_nll, "source": c.delta_source} for c in self.candidates if c.base]
        return {"format": FITS_FORMAT, "law": self.law, "source": self.source, "notes": self.notes,
                "train_context": self.train_context, "candidates": dense, "kv_policies": pol}

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        os.replace(tmp, p)
        return p

    def fit_rows(self, source_query: str | None = None) -> list[dict]:
        """Rows for `analysis.store.write_fits`: one per fitted law."""
        rows = []
        for c in self.candidates:
            if not c.fitted or c.base:
                continue
            stderr = None
            if c.samples is not None:
                fin = {k: np.asarray(v, float)[np.isfinite(np.asarray(v, float))] for k, v in c.samples.items()}
                stderr = {k: float(np.std(v, ddof=1)) if len(v) > 1 else None for k, v in fin.items()}
            rows.append({"law": c.law, "group_keys": {**c.group, "label": c.label}, "params": _floats(c.params),
                         "r2": c.r2, "n_points": c.n_points, "stderr": stderr, "ci95": c.ci95,
                         "objective": c.fit_extra.get("objective"), "source_query": source_query,
                         "extra": {k: v for k, v in c.fit_extra.items() if k != "objective"}})
        return rows


# ---------------------------------------------------------------- fits file
def load_fits(path: str | Path) -> FitSet:
    """A fits file (schema in the module doc) as a FitSet; every problem is one line naming its JSON path."""
    from fitting import get_law

    p = Path(path)
    if not p.is_file():
        raise CostlawError(f"--fits: no such file {str(p)!r}; give a fits JSON (format {FITS_FORMAT!r}) or use --db")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CostlawError(f"--fits: {p} is not valid JSON ({e}); fix the file") from None
    if not isinstance(data, dict) or data.get("format") != FITS_FORMAT:
        raise CostlawError(f"--fits: {p} lacks \"format\": \"{FITS_FORMAT}\"; see `costlaw recommend --help`")
    law = get_law(data.get("law", "gqa-size"))
    if len(law.variables) != 1:
        raise CostlawError(f"--fits: law {law.name} has {len(law.variables)} variables; recommend needs a law of N "
                           "alone with an inverse, e.g. gqa-size")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise CostlawError("--fits: defaults must be an object, e.g. {\"head_dim\": 64}")
    entries = data.get("candidates")
    if not isinstance(entries, list) or not entries:
        raise CostlawError(f"--fits: {p} has no \"candidates\" list; add one entry per head config")
    cands = [_candidate_from_json(e, i, defaults, law) for i, e in enumerate(entries)]
    _dedupe_labels(cands)
    for i, e in enumerate(data.get("kv_policies", []) or []):
        cands.extend(_policies_from_json(e, i, cands))
    notes = [str(n) for n in data.get("notes", []) if n]
    tc = data.get("train_context")
    return FitSet(cands, f"fits file {p}" + (f" ({data['source']})" if data.get("source") else ""), notes, law.name,
                  int(tc) if isinstance(tc, int) and not isinstance(tc, bool) and tc > 0 else None)


def _need(e: dict, key: str, where: str, typ=int):
    v = e.get(key)
    if v is None:
        raise CostlawError(f"--fits: {where}.{key} is missing; give it")
    if typ is int and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise CostlawError(f"--fits: {where}.{key} must be a whole number >= 1, got {v!r}")
    if typ is float and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
        raise CostlawError(f"--fits: {where}.{key} must be a number, got {v!r}")
    return v


def _candidate_from_json(e, i: int, defaults: dict, law) -> Candidate:
    where = f"candidates[{i}]"
    if not isinstance(e, dict):
        raise CostlawError(f"--fits: {where} must be an object with n_heads, n_kv_heads and params")
    n_h, n_kv = _need(e, "n_heads", where), _need(e, "n_kv_heads", where)
    if n_h % n_kv:
        raise CostlawError(f"--fits: {where}: n_kv_heads {n_kv} does not divide n_heads {n_h}; fix the pair")
    family = e.get("family", "gqa")
    if family not in FAMILIES:
        raise CostlawError(f"--fits: {where}.family {family!r} is not one of {', '.join(FAMILIES)}")
    get = lambda k, dflt: e.get(k, defaults.get(k, dflt))  # noqa: E731
    sparse, frac, policy = None, None, None
    if family == "hybrid":
        sparse = e.get("sparse")
        frac = e.get("full_fraction")
        if not isinstance(sparse, str) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
            raise CostlawError(f"--fits: {where} is hybrid; give sparse (e.g. \"sink_window(4,1024)\") and "
                               "full_fraction in (0, 1]")
        from costmodel.attention import parse_spec

        try:
            sparse = parse_spec(sparse, f"{where}.sparse").spec()
        except CostlawError as err:
            raise CostlawError(f"--fits: {err}") from None
    if family == "compressed":
        try:
            policy = KVPolicy.from_dict(e.get("kv_policy")).to_dict()
        except CostlawError as err:
            raise CostlawError(f"--fits: {where}.{err}") from None
    ladder = []
    for j, pt in enumerate(e.get("ladder", []) or []):
        w = f"{where}.ladder[{j}]"
        if not isinstance(pt, dict):
            raise CostlawError(f"--fits: {w} must be an object with N, d_model, n_layers")
        N = _need(pt, "N", w, float)
        item = {"N": float(N), "d_model": _need(pt, "d_model", w), "n_layers": _need(pt, "n_layers", w)}
        if pt.get("loss") is not None:
            item["loss"] = float(_need(pt, "loss", w, float))
        ladder.append(item)
    try:
        template = Template(
            n_heads=n_h, n_kv_heads=n_kv, head_dim=int(get("head_dim", 64)), vocab_size=int(get("vocab_size", 50304)),
            tied_embeddings=bool(get("tied_embeddings", True)), rope_theta=float(get("rope_theta", 500_000.0)),
            ffn_ratio=get("ffn_ratio", None), sparse=sparse, full_fraction=frac, kv_policy=policy,
            anchors=tuple(Anchor(p["N"], p["n_layers"], p["d_model"]) for p in ladder))
        template.config(1, 64)  # validate the fixed fields once, here, with the JSON path
    except (TypeError, ValueError) as err:
        raise CostlawError(f"--fits: {where}: {str(err).splitlines()[0]}; fix the entry") from None
    base = pair_label(n_h, n_kv)
    label = (hybrid_label(base, frac, sparse) if family == "hybrid"
             else policy_label(base, policy, True) if family == "compressed" else base)
    label = e.get("label", label)
    cand = Candidate(label=label, family=family, template=template, law=law.name, ladder=ladder,
                     reason=e.get("reason"), n_points=int(e.get("n_points", len(ladder)) or 0))
    params = e.get("params")
    if params is not None:
        if not isinstance(params, dict):
            raise CostlawError(f"--fits: {where}.params must be an object {{{', '.join(law.params)}}}")
        try:
            law.theta_of(params)
        except CostlawError as err:
            raise CostlawError(f"--fits: {where}.{err}") from None
        cand.params = {k: float(params[k]) for k in law.params}
        cand.reason = None
    elif not cand.reason:
        cand.reason = "no params in the fits file"
    boot = e.get("bootstrap")
    if boot is not None:
        if not isinstance(boot, dict) or any(k not in boot for k in law.params):
            raise CostlawError(f"--fits: {where}.bootstrap must hold a list for each of {', '.join(law.params)}")
        arrs = {k: np.asarray(boot[k], dtype=float) for k in law.params}
        if len({len(a) for a in arrs.values()}) != 1 or len(arrs[law.params[0]]) < 2:
            raise CostlawError(f"--fits: {where}.bootstrap lists must have one equal length >= 2")
        cand.samples = arrs
    if e.get("ci95") is not None:
        cand.ci95 = {k: [float(x) for x in v] for k, v in e["ci95"].items()}
    if e.get("r2") is not None:
        cand.r2 = float(e["r2"])
    n_max = e.get("n_max")
    if n_max is not None:
        cand.n_max = float(_need(e, "n_max", where, float))
    elif ladder:
        cand.n_max = max(p["N"] for p in ladder)
    return cand


def _policies_from_json(e, i: int, cands: list[Candidate]) -> list[Candidate]:
    where = f"kv_policies[{i}]"
    if not isinstance(e, dict):
        raise CostlawError(f"--fits: {where} must be an object with method, keep and delta_nll")
    keep = _need(e, "keep", where, float)
    delta = _need(e, "delta_nll", where, float)
    try:
        policy = KVPolicy(e.get("method"), keep=keep).to_dict()
    except CostlawError as err:
        raise CostlawError(f"--fits: {where}: {err}") from None
    if e.get("base") is not None:
        base = next((c for c in cands if _norm(c.label) == _norm(str(e["base"]))), None)
        if base is None or base.family != "gqa":
            raise CostlawError(f"--fits: {where}.base {e['base']!r} is not a GQA candidate of this file; "
                               f"name one of {', '.join(c.label for c in cands if c.family == 'gqa')}")
        bases = [base]
    else:
        bases = [c for c in cands if c.family == "gqa" and c.fitted]
    src = e.get("source") or "fits file"
    if e.get("context"):
        src += f", measured at context {e['context']}"
    return [on_dense(b, policy, float(delta), src) for b in bases]


def on_dense(base: Candidate, policy: dict, delta: float, source: str) -> Candidate:
    """A compressed candidate: `base`'s law, shape and ladder, plus a KV policy and its measured ΔNLL."""
    return Candidate(label=policy_label(base.label, policy), family="compressed",
                     template=replace(base.template, kv_policy=policy), law=base.law, params=base.params,
                     samples=base.samples, ci95=base.ci95, r2=base.r2, n_points=base.n_points, ladder=base.ladder,
                     n_max=base.n_max, reason=(f"base {base.label} has no law: {base.reason}" if not base.fitted
                                               else None),
                     base=base.label, delta_nll=delta, delta_source=source,
                     group={**base.group, "kv_method": policy["method"], "kv_keep": policy["keep"]})


def _dedupe_labels(cands: list[Candidate]) -> None:
    seen: dict[str, int] = {}
    for c in cands:
        k = _norm(c.label)
        if k in seen:
            raise CostlawError(f"--fits: two candidates are both {c.label!r}; give one a distinct \"label\"")
        seen[k] = 1


# ---------------------------------------------------------------- the store
RUN_COLUMNS = ("run_id, sweep, stage, seq_len, family, d_model, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, "
               "vocab_size, tied_embeddings, rope_theta, layout, n_full_layers, kv_method, kv_keep, kv_budget, "
               "params_non_embedding, val_loss, final_loss, tokens, config_json")


def load_runs(db, sweep: str | None = None):
    """Completed runs (pandas) with `loss` = val_loss, else final_loss."""
    from analysis.store import query_df

    where = "status = 'completed'"
    if sweep:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", sweep):
            raise CostlawError(f"--sweep: {sweep!r} is not a sweep name; names use letters, digits, . _ -")
        where += f" AND sweep = '{sweep}'"
    df = query_df(db, f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY run_id", engine="pandas")
    if len(df):
        df["loss"] = df["val_loss"].where(df["val_loss"].notna(), df["final_loss"])
    return df


def fit_store(db, *, families=FAMILIES, n_boot: int = 200, seed: int = 0, min_sizes: int = MIN_SIZES,
              train_context: int | None = None, sweep: str | None = None,
              progress: Callable[[str], None] | None = None) -> FitSet:
    """Fit every candidate the store's completed runs cover (see `fit_runs`)."""
    df = load_runs(db, sweep)
    if not len(df):
        raise CostlawError(f"--db: {db} has no completed runs" + (f" in sweep {sweep!r}" if sweep else "")
                           + "; run a sweep and `costlaw ingest` its root first")
    kv = _kv_policy_rows(db, sweep)
    return fit_runs(df, kv, source=f"store {db}", families=families, n_boot=n_boot, seed=seed,
                    min_sizes=min_sizes, train_context=train_context, progress=progress)


def _kv_policy_rows(db, sweep):
    from analysis.store import query_df

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
             progress: Callable[[str], None] | None = None) -> FitSet:
    """Group completed pretraining runs by candidate and fit each group with >= min_sizes distinct N.

    df: rows of the store's `runs` table (RUN_COLUMNS) plus `loss`; kv: the `kv_policy_evals` view (or None).
    Only runs at one training context are pooled: `train_context`, else the seq_len with the most runs.
    """
    from fitting import bootstrap, fit, get_law

    law = get_law("gqa-size")
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
    cands = []
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
        N = g["params_non_embedding"].to_numpy(float)
        y = g["loss"].to_numpy(float)
        cand = Candidate(label=label, family=fam, template=tmpl, law=law.name, ladder=ladder, n_points=len(g),
                         n_max=float(N.max()), group=group)
        sizes = len(np.unique(N))
        if sizes < min_sizes:
            cand.reason = f"runs at {sizes} size(s); a fit needs >= {min_sizes}"
        else:
            if progress:
                progress(f"fitting {label}: {len(g)} runs, {sizes} sizes, bootstrap {n_boot}")
            res = fit(law, N, y, x_names=["params_non_embedding"], y_name="loss")
            cand.params = _floats(res.params)
            cand.r2 = float(res.r2)
            cand.fit_extra = {"objective": float(res.objective), "grad_norm": float(res.grad_norm),
                              "n_at_best": int(res.n_at_best), "n_refined": int(res.n_refined),
                              "n_bootstrap": int(n_boot), "label": label}
            if n_boot >= 2:
                b = bootstrap(law, N, y, res, n=n_boot, seed=seed)
                cand.samples = {k: np.asarray(v, float) for k, v in b.param_samples().items()}
                cand.ci95 = {k: [float(x) for x in b.ci95[k]] for k in law.params}
                cand.fit_extra["n_failed"] = int(b.n_failed)
        cands.append(cand)
    if kv is not None and len(kv):
        cands.extend(_policies_from_store(kv, cands, sel, train_context, show_dh, notes))
    if not cands:
        raise CostlawError(f"--families: no completed run of {', '.join(families)} at seq_len {train_context}; "
                           "widen --families")
    src = f"{source}: {len(sel)} completed runs at seq_len {train_context}"
    return FitSet(cands, src, notes, law.name, int(train_context))


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
    from costmodel import METHODS

    return METHODS


# ---------------------------------------------------------------- selection
def select(fs: FitSet, spec: str = "all", families=FAMILIES) -> list[Candidate]:
    """`all`: every candidate of the chosen families; `paper`: the paper's 21 GQA pairs (absent ones listed
    as unfit); else labels separated by ';' (e.g. "32,8;8,1;8,1 snapkv keep=0.25")."""
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        raise CostlawError(f"--families: unknown family {bad[0]!r}; choose from {', '.join(FAMILIES)}")
    pool = [c for c in fs.candidates if c.family in families]
    spec = (spec or "all").strip()
    if spec == "all":
        return pool
    if spec == "paper":
        if "gqa" not in families:
            raise CostlawError("--candidates: paper names GQA pairs; add gqa to --families")
        out = []
        missing = "no runs in the store" if fs.source.startswith("store") else "not in the fits file"
        for h, k in PAPER_PAIRS:
            found = [c for c in pool if c.family == "gqa" and (c.n_heads, c.n_kv_heads) == (h, k)]
            out.extend(found or [Candidate(label=pair_label(h, k), family="gqa", template=Template(h, k),
                                           reason=missing)])
        return out
    out = []
    for item in (s for s in spec.split(";") if s.strip()):
        c = next((c for c in fs.candidates if _norm(c.label) == _norm(item)), None)
        if c is None:
            known = ", ".join(c.label for c in fs.candidates)
            raise CostlawError(f"--candidates: unknown candidate {item.strip()!r}; known: {known}")
        if c.family not in families:
            raise CostlawError(f"--candidates: {c.label} is {c.family}, outside --families {','.join(families)}")
        if c not in out:
            out.append(c)
    return out


# ---------------------------------------------------------------- search
@dataclass
class Evaluated:
    """One candidate at the target loss: its size, config, predicted loss and prices at each context."""

    cand: Candidate
    status: str  # ok | unfit | unreachable
    reason: str | None = None
    n_star: float | None = None
    shape: Shape | None = None
    predicted: float | None = None
    ci95: tuple[float, float] | None = None
    extrapolation: float | None = None
    prices: dict = field(default_factory=dict)  # context -> Objective.price row

    @property
    def label(self) -> str:
        return self.cand.label

    def to_json(self) -> dict:
        c = self.cand
        d = {"label": c.label, "family": c.family, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads,
             "status": self.status, "reason": self.reason, "law": c.law,
             "params": _floats(c.params) if c.params else None, "r2": c.r2, "n_points": c.n_points,
             "n_max": c.n_max}
        if c.base:
            d.update(base=c.base, delta_nll=c.delta_nll, delta_source=c.delta_source,
                     kv_policy=c.template.kv_policy)
        if self.status == "ok":
            s = self.shape
            d.update(n_star=self.n_star, n_params=s.n_params, aspect_ratio_target=s.ratio_target,
                     aspect_anchors=s.anchors, d_multiple=s.d_multiple, predicted_loss=self.predicted,
                     predicted_loss_ci95=list(self.ci95) if self.ci95 else None,
                     extrapolation=self.extrapolation, config=s.config.to_dict(), config_id=s.config.config_id,
                     prices=[self.prices[T] for T in sorted(self.prices)])
        return d


def evaluate(cand: Candidate, target: float, contexts: list[int], objective: Objective,
             d_multiple: int | None = None) -> Evaluated:
    from fitting import get_law

    if not cand.fitted:
        return Evaluated(cand, "unfit", cand.reason or "no law")
    law = get_law(cand.law)
    goal = target - cand.delta_nll
    n_star = law.inverse(cand.params, goal, strict=False)
    if not math.isfinite(n_star):
        floor = law.reachable_floor(cand.params)
        extra = f" + ΔNLL {cand.delta_nll:.3g}" if cand.delta_nll else ""
        return Evaluated(cand, "unreachable", f"L* {target:g} is at or below its floor ({floor}{extra})")
    sh = shape(float(n_star), cand.template, d_multiple)
    pred = float(law.predict(cand.params, [float(sh.n_params)])[0]) + cand.delta_nll
    ci = None
    if cand.samples is not None:
        draws = _predict_samples(law, cand.samples, float(sh.n_params)) + cand.delta_nll
        draws = draws[np.isfinite(draws)]
        if len(draws) >= 2:
            ci = (float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5)))
    ext = float(n_star) / cand.n_max if cand.n_max else None
    prices = {T: objective.price(sh.config, T) for T in contexts}
    return Evaluated(cand, "ok", None, float(n_star), sh, pred, ci, ext, prices)


def _predict_samples(law, samples: dict, N: float) -> np.ndarray:
    n = len(next(iter(samples.values())))
    theta = np.empty((n, len(law.params)))
    with np.errstate(all="ignore"):
        for i in range(n):
            try:
                theta[i] = law.theta_of({k: samples[k][i] for k in law.params})
            except CostlawError:
                theta[i] = np.nan
        return np.exp(law.bind(law.features(np.array([[N]]))).log_predict(theta)[:, 0])


@dataclass
class Recommendation:
    target: float
    contexts: list[int]
    objective: Objective
    rows: list[Evaluated]
    standard: Evaluated | None
    standard_note: str
    source: str
    notes: list[str]
    d_multiple: int | None

    def ranked(self, T: int) -> list[Evaluated]:
        """Candidates within every budget at context T, cheapest (lowest Z) first."""
        ok = [r for r in self.rows if r.status == "ok" and not r.prices[T]["violations"]]
        return sorted(ok, key=lambda r: (r.prices[T]["z"], r.label))

    def winner(self, T: int) -> Evaluated | None:
        r = self.ranked(T)
        return r[0] if r else None

    def runner_up(self, T: int) -> Evaluated | None:
        r = self.ranked(T)
        return r[1] if len(r) > 1 else None

    def savings(self, T: int) -> dict | None:
        w, s = self.winner(T), self.standard
        if w is None or s is None:
            return None
        a, b = w.prices[T], s.prices[T]
        return {"memory": 1 - a["m_infer_bytes"] / b["m_infer_bytes"],
                "flops": 1 - a["c_infer_flops_per_token"] / b["c_infer_flops_per_token"],
                "z": 1 - a["z"] / b["z"]}

    def warnings(self) -> list[str]:
        out = []
        for T in self.contexts:
            w = self.winner(T)
            if w is not None and w.extrapolation is not None and w.extrapolation > EXTRAPOLATION_WARN:
                out.append(f"context {T}: the winner {w.label} needs N* {w.n_star:.3g}, {w.extrapolation:.1f}x its "
                           f"largest trained run ({w.cand.n_max:.3g}); the law is extrapolated far, train larger runs "
                           "to confirm")
            if w is None:
                out.append(f"context {T}: no candidate meets the budgets")
        return out

    def to_json(self) -> dict:
        per = []
        for T in self.contexts:
            w, ru = self.winner(T), self.runner_up(T)
            per.append({"context": T, "winner": w.label if w else None, "runner_up": ru.label if ru else None,
                        "winner_config": w.shape.config.to_dict() if w else None,
                        "winner_toml": w.shape.config.to_toml() if w else None,
                        "winner_prices": w.prices[T] if w else None,
                        "predicted_loss": w.predicted if w else None,
                        "predicted_loss_ci95": list(w.ci95) if w and w.ci95 else None,
                        "extrapolation": w.extrapolation if w else None,
                        "standard_prices": self.standard.prices[T] if self.standard else None,
                        "savings_vs_standard": self.savings(T)})
        return {"target_loss": self.target, "contexts": self.contexts, "objective": self.objective.describe(),
                "source": self.source, "notes": self.notes, "warnings": self.warnings(),
                "shape_rule": shape_rule(self.d_multiple),
                "standard": self.standard.label if self.standard else None, "standard_note": self.standard_note,
                "by_context": per, "candidates": [r.to_json() for r in self.rows]}


def shape_rule(d_multiple: int | None) -> str:
    grid = (f"a multiple of {d_multiple}" if d_multiple else
            "a multiple of 64, or of the gcd of the ladder's widths when they are not multiples of 64")
    return ("N* -> config: d/L interpolated in log N from the candidate's ladder runs (else the GQA paper's anchors), "
            f"depth solved for N*, then integer L and d ({grid}) with the fewest non-embedding params >= N*")


def recommend(fs: FitSet, target: float, contexts: list[int], objective: Objective | None = None, *,
              candidates: str = "all", families=FAMILIES, standard: str = DEFAULT_STANDARD,
              d_multiple: int | None = None) -> Recommendation:
    """Evaluate the selected candidates at `target` and each context; see the module doc."""
    objective = objective or Objective()
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise CostlawError(f"--target-loss: must be a positive number, got {target!r}")
    if not contexts:
        raise CostlawError("--context: give at least one context length, e.g. --context 8K,128K")
    chosen = select(fs, candidates, families)
    if not any(c.fitted for c in chosen):
        why = "; ".join(f"{c.label}: {c.reason}" for c in chosen[:4])
        raise CostlawError(f"--candidates: none of the {len(chosen)} selected candidates has a fitted law ({why}); "
                           "train more sizes or pick fitted candidates")
    rows = [evaluate(c, target, contexts, objective, d_multiple) for c in chosen]
    if not any(r.status == "ok" for r in rows):
        floors = [(c.params.get("E", float("nan")) + c.delta_nll, c.label) for c in chosen if c.fitted]
        lo, who = min(floors)
        raise CostlawError(f"--target-loss: {target:g} is at or below every fitted floor E (lowest {lo:.4g}, for "
                           f"{who}); ask for a loss above {lo:.4g}")
    std, note = resolve_standard(fs, standard, target, contexts, objective, d_multiple)
    notes = list(fs.notes)
    if fs.train_context and max(contexts) > fs.train_context:
        notes.append(f"the laws were fitted to runs trained at {fs.train_context} tokens and are used as is at every "
                     "--context (the GQA paper, §5.7, found the relative loss of head configs flat beyond 8K); the "
                     "context changes only the costs here")
    return Recommendation(target, list(contexts), objective, rows, std, note, fs.source, notes, d_multiple)


def resolve_standard(fs: FitSet, spec: str, target, contexts, objective, d_multiple) -> tuple[Evaluated | None, str]:
    """The baseline at the same loss: "d/d_h,8" (Llama-3 style: as many query heads as d/d_h, 8 KV heads),
    "d/d_h,d/d_h" (MHA) or a fitted GQA candidate's label such as "32,8"."""
    spec = (spec or DEFAULT_STANDARD).strip()
    m = re.fullmatch(r"\s*(d/d_h|\d+)\s*,\s*(d/d_h|\d+)\s*", spec)
    if not m:
        c = fs.get(spec)
        if c is None:
            raise CostlawError(f"--standard: {spec!r} is neither 'd/d_h,K', 'd/d_h,d/d_h' nor a candidate label; "
                               f"e.g. --standard 'd/d_h,8' or --standard 32,8")
        ev = evaluate(c, target, contexts, objective, d_multiple)
        return (ev, f"standard {c.label}") if ev.status == "ok" else (None, f"standard {c.label}: {ev.reason}")
    qh, kv = m.group(1), m.group(2)
    if qh != "d/d_h" and kv != "d/d_h":
        c = fs.get(f"{qh},{kv}")
        if c is None:
            return None, f"standard {qh},{kv}: not among the candidates; pass --standard with a fitted label"
        ev = evaluate(c, target, contexts, objective, d_multiple)
        return (ev, f"standard {c.label}") if ev.status == "ok" else (None, f"standard {c.label}: {ev.reason}")
    pool = [c for c in fs.candidates if c.family == "gqa" and c.fitted]
    best, best_key = None, None
    for c in pool:
        if kv != "d/d_h" and c.n_kv_heads != int(kv):
            continue
        if kv == "d/d_h" and c.n_kv_heads != c.n_heads:
            continue
        if qh != "d/d_h" and c.n_heads != int(qh):
            continue
        ev = evaluate(c, target, contexts, objective, d_multiple)
        if ev.status != "ok":
            continue
        cfg = ev.shape.config
        key = (abs(math.log2(c.n_heads) - math.log2(cfg.d_model / cfg.head_dim)), -c.n_heads)
        if best_key is None or key < best_key:
            best, best_key = ev, key
    if best is None:
        if spec == DEFAULT_STANDARD:
            # no 8-KV-head ladder (e.g. small models with fewer heads): compare with multi-head attention instead
            ev, note = resolve_standard(fs, "d/d_h,d/d_h", target, contexts, objective, d_multiple)
            if ev is not None:
                return ev, f"no fitted candidate has 8 KV heads, so the {note}"
        return None, (f"standard ({spec}): no fitted GQA candidate of that form reaches L* {target:g}; "
                      "pass --standard with a fitted candidate label")
    cfg = best.shape.config
    return best, (f"standard ({spec}): {best.label}, whose config has d/d_h = {cfg.d_model}/{cfg.head_dim} = "
                  f"{cfg.d_model / cfg.head_dim:g} (the fitted candidate closest to that form)")


# ---------------------------------------------------------------- text output
def write_tomls(rec, path) -> list[Path]:
    """The winner's TOML at each context: `path` for one context, `<stem>-<T><suffix>` for several."""
    import os

    p = Path(path)
    out = []
    for T in rec.contexts:
        w = rec.winner(T)
        if w is None:
            continue
        target = p if len(rec.contexts) == 1 else p.with_name(f"{p.stem}-{T}{p.suffix or '.toml'}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(toml_text(rec, T))
        os.replace(tmp, target)
        out.append(target)
    return out


def toml_text(rec, T: int) -> str:
    w = rec.winner(T)
    ci = f" (95% {w.ci95[0]:.4g}-{w.ci95[1]:.4g})" if w.ci95 else ""
    head = [f"# costlaw recommend: {w.label} at context {T}, target loss {rec.target:g}",
            f"# predicted loss {w.predicted:.4g}{ci} at N {w.shape.n_params:,} (N* {w.n_star:,.0f})"]
    if w.cand.base:
        head.append(f"# loss = {w.cand.base}'s law + ΔNLL {w.cand.delta_nll:+.4g} ({w.cand.delta_source})")
    return "\n".join(head) + "\n" + w.shape.config.to_toml()


def _pct(x) -> str:
    return "-" if x is None else f"{-100 * x:+.1f}%"


def render_text(rec) -> str:
    """The human form: per context the winner, its config, savings vs the standard, then the table."""
    obj = rec.objective.describe()
    lines = [f"target loss {rec.target:g} at context {', '.join(str(T) for T in rec.contexts)}",
             f"source: {rec.source}", f"objective: {obj['z']} (M = {obj['M']}, C = {obj['C']})"]
    for k in ("memory_budget", "flops_budget", "latency_target_ms"):
        if k in obj:
            lines.append(f"budget {k.removesuffix('_budget')}: {obj[k]:.4g}")
    if "latency_model" in obj:
        lines.append(f"latency on {obj['gpu']}: {obj['latency_model']}")
    lines.append(rec.to_json()["shape_rule"])
    lines.append(rec.standard_note)
    lines += [f"note: {n}" for n in rec.notes]
    compressed = [r for r in rec.rows if r.cand.base and r.status == "ok"]
    if compressed:
        lines.append("compressed candidates: predicted loss = the dense candidate's law + the ΔNLL its KV policy "
                     "measured at that keep ratio")
    printed = set()
    for T in rec.contexts:
        w, ru = rec.winner(T), rec.runner_up(T)
        lines.append("")
        if w is None:
            lines.append(f"== context {T}: no candidate meets the budgets")
        else:
            p = w.prices[T]
            ci = f" (95% {w.ci95[0]:.4g}-{w.ci95[1]:.4g})" if w.ci95 else " (no bootstrap interval)"
            ext = f"{w.extrapolation:.2f}x the largest trained N" if w.extrapolation else "largest trained N unknown"
            lines.append(f"== context {T}: winner {w.label}" + (f"   runner-up {ru.label}" if ru else ""))
            lines.append(f"   predicted loss {w.predicted:.4g}{ci} at N {si(w.shape.n_params)} "
                         f"(N* {si(w.n_star)}, {ext})")
            if w.cand.base:
                lines.append(f"   = {w.cand.base}'s law + ΔNLL {w.cand.delta_nll:+.4g} ({w.cand.delta_source})")
            latency = f", decode {p['decode_ms']:.3g} ms/token ({p['latency_model']})" if "decode_ms" in p else ""
            lines.append(f"   M_infer {binary_bytes(p['m_infer_bytes'])}, C_infer {si(p['c_infer_flops_per_token'])}"
                         f"FLOP/token, Z {p['z']:.4g}{latency}")
            s = rec.savings(T)
            if s is not None:
                sp = rec.standard.prices[T]
                lines.append(f"   vs standard {rec.standard.label} (N {si(rec.standard.shape.n_params)}): M_infer "
                             f"{binary_bytes(sp['m_infer_bytes'])} -> {_pct(s['memory'])}, C_infer "
                             f"{si(sp['c_infer_flops_per_token'])}FLOP/token -> {_pct(s['flops'])}")
            for warn in rec.warnings():
                if warn.startswith(f"context {T}:"):
                    lines.append(f"   WARNING: {warn.split(': ', 1)[1]}")
            if w.shape.config.config_id not in printed:
                printed.add(w.shape.config.config_id)
                lines.append("")
                lines += ["   " + x for x in toml_text(rec, T).rstrip().splitlines()]
        lines.append("")
        lines.append(table(candidate_rows(rec, T)))
    return "\n".join(lines)


def candidate_rows(rec, T: int) -> list[dict]:
    ranked = {r.label: i + 1 for i, r in enumerate(rec.ranked(T))}
    rows = []
    order = sorted(rec.rows, key=lambda r: (r.status != "ok", r.prices[T]["z"] if r.status == "ok" else 0, r.label))
    for r in order:
        row = {"rank": ranked.get(r.label), "candidate": r.label, "family": r.cand.family}
        if r.status == "ok":
            p, c = r.prices[T], r.shape.config
            row.update({"N*": si(r.n_star), "L x d": f"{c.n_layers}x{c.d_model}", "loss": round(r.predicted, 4),
                        "extrap": f"{r.extrapolation:.2g}x" if r.extrapolation else "-",
                        "M_infer": binary_bytes(p["m_infer_bytes"]), "C_infer": si(p["c_infer_flops_per_token"]),
                        "Z": f"{p['z']:.4g}", "note": ",".join(f"over {v}" for v in p["violations"])})
        else:
            row["note"] = f"{r.status}: {r.reason}"
        rows.append(row)
    cols = ["rank", "candidate", "family", "N*", "L x d", "loss", "extrap", "M_infer", "C_infer", "Z", "note"]
    return [{k: row.get(k) for k in cols} for row in rows]
