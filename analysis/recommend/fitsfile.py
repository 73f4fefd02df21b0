"""The fits file (`--fits FILE`): laws per candidate that users bring, or that `--fits-out` writes.

Fits file (JSON, `--fits FILE`), format "costlaw-fits/1" (the one fits format, analysis/fits/doc.py: what
`costlaw fit` prints and writes with --out, what --fits-out and `costlaw report` write, what each row of the
store's fits table holds in `doc`). What recommend reads of it:

    {"format": "costlaw-fits/1",
     "law": "gqa-size",                       # any registered one-variable law with an inverse; default gqa-size
     "source": "free text: where these fits come from",
     "train_context": 8192,                   # optional: the seq_len the laws were fitted at
     "options": {"law": ..., "x": [...], "y": ..., "bootstrap": 100, ...},  # optional: how they were fitted
     "defaults": {"head_dim": 64, "vocab_size": 50304, "tied_embeddings": true, "rope_theta": 500000.0},
     "candidates": [
       {"n_heads": 32, "n_kv_heads": 8,       # required (or inside "group", as `costlaw fit --group-by` writes it)
        "family": "gqa",                      # gqa (default) | hybrid | compressed (a trained compressed ladder)
        "params": {"a": 1.2e7, "b": 0.3, "E": 2.1},     # the law's parameters; absent: listed as unfit
        "reason": "3 sizes",                  # why there are no params (optional)
        "bootstrap": {"a": [...], "b": [...], "E": [...]},   # optional samples -> the interval of the mean
                                              # (recommend writes draws over configs: "bootstrap_over": "configs")
        "ci95": {"a": [lo, hi], ...},         # optional, shown only
        "r2": 0.999, "n_points": 8,           # optional; r2 and the draws feed the guards (guards.py)
        "n_runs": 14,                         # optional: runs behind the n_points config means
        "ladder": [{"N": 1.9e7, "d_model": 512, "n_layers": 6, "loss": 3.1,   # optional: aspect ratios and the
                    "model_id": "...", "seed": 0}, ...],                      # envelope; losses: the noise
        "noise": {"source": "seeds", "kind": "constant", "seed_var": ..., "seed_df": ..., "lof_var": ...,
                  "lof_df": ...},             # optional run-to-run noise (noise.py); absent: measured from the
                                              # ladder's losses when it has them, else the interval is the mean's
        "n_max": 1.0e9,                       # optional largest trained N (default: the ladder's largest)
        "retrieval": 0.83, "retrieval_source": "...",  # optional passkey accuracy in [0, 1] (--min-retrieval)
        "head_dim": 64, "vocab_size": ..., "tied_embeddings": ..., "rope_theta": ...,  # optional overrides
        "ffn_ratio": 4.0,                     # optional: d_ff/d (default: the paper's 8d/3 to a multiple of 32)
        "sparse": "sink_window(4,1024)", "full_fraction": 0.333,   # hybrid only
        "kv_policy": {"method": "locret", "keep": 0.25},           # family "compressed" only
        "group": {...}, "objective": ..., "r2_ceiling": ..., "data_fingerprint": ..., ...  # the rest of the
                                              # pipeline's entry (analysis/fits/doc.py ENTRY_FIELDS), kept
       }, ...],
     "kv_policies": [                         # optional: compressed candidates on top of dense ones
       {"method": "snapkv", "keep": 0.25, "delta_nll": 0.031,
        "base": "32,8",                       # a GQA candidate label; absent: every fitted GQA candidate
        "context": 8192, "source": "...",
        "delta_law": {"a": -1.2, "b": -0.15},   # optional: ΔNLL(N) = exp(a)·N^b, used at N* instead of delta_nll
        "retrieval": 0.33, "retrieval_source": "..."}]}   # optional, as for candidates

`costlaw recommend --db X --fits-out F` writes the store's fits in this format (bootstrap samples included).
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from costlaw.analysis.fits import ENTRY_FIELDS, FITS_FORMAT, FitOptions
from costlaw.analysis.recommend.candidates import (
    FAMILIES,
    Candidate,
    FitSet,
    hybrid_label,
    norm_label,
    pair_label,
    policy_label,
)
from costlaw.analysis.recommend.noise import Noise
from costlaw.analysis.shape import Anchor, Template
from costlaw.costmodel import KVPolicy
from costlaw.costmodel.core.errors import CostlawError


def load_fits(path: str | Path) -> FitSet:
    """A fits file (schema in the module doc) as a FitSet; every problem is one line naming its JSON path."""
    from costlaw.fitting import get_law

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
    options = None
    if data.get("options") is not None:
        try:
            options = FitOptions.from_json(data["options"])
        except CostlawError as err:
            raise CostlawError(f"--fits: {err}") from None
    return FitSet(cands, f"fits file {p}" + (f" ({data['source']})" if data.get("source") else ""), notes, law.name,
                  int(tc) if isinstance(tc, int) and not isinstance(tc, bool) and tc > 0 else None, options=options)


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
    group = e.get("group")
    if isinstance(group, dict):  # `costlaw fit --group-by n_heads,n_kv_heads` names the head config there
        e = {**group, **e}
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
        from costlaw.costmodel.attention import parse_spec

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
        for k in ("run_id", "model_id"):
            if isinstance(pt.get(k), str):
                item[k] = pt[k]
        if isinstance(pt.get("seed"), int) and not isinstance(pt.get("seed"), bool):
            item["seed"] = pt["seed"]
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
                     reason=e.get("reason"), n_points=int(e.get("n_points", len(ladder)) or 0),
                     group=dict(group) if isinstance(group, dict) else {})
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
    if isinstance(e.get("ci95"), dict):  # shown only: a bound that was not finite (written as null) is dropped
        cand.ci95 = {k: [float(x) for x in v] for k, v in e["ci95"].items()
                     if isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)} or None
    if e.get("r2") is not None:
        cand.r2 = float(_need(e, "r2", where, float))
    cand.fit_extra = {k: e[k] for k in ENTRY_FIELDS
                      if k in e and k not in ("params", "bootstrap", "ci95", "r2", "n_points")}
    n_max = e.get("n_max")
    if n_max is not None:
        cand.n_max = float(_need(e, "n_max", where, float))
    elif ladder:
        cand.n_max = max(p["N"] for p in ladder)
    if e.get("n_runs") is not None:
        cand.n_runs = int(_need(e, "n_runs", where))
    if e.get("retrieval") is not None:
        cand.retrieval = _accuracy(e, where)
        cand.retrieval_source = str(e.get("retrieval_source") or "fits file")
    if cand.fitted and e.get("noise") is not None:
        cand.noise = Noise.from_json(e["noise"], f"--fits: {where}.noise")
    elif cand.fitted and len(law.variables) == 1 and any("loss" in pt for pt in ladder):
        cand.measure_noise()  # the runs are in the file: measure their noise as fit_runs does
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
        base = next((c for c in cands if norm_label(c.label) == norm_label(str(e["base"]))), None)
        if base is None or base.family != "gqa":
            raise CostlawError(f"--fits: {where}.base {e['base']!r} is not a GQA candidate of this file; "
                               f"name one of {', '.join(c.label for c in cands if c.family == 'gqa')}")
        bases = [base]
    else:
        bases = [c for c in cands if c.family == "gqa" and c.fitted]
    src = e.get("source") or "fits file"
    if e.get("context"):
        src += f", measured at context {e['context']}"
    out = [on_dense(b, policy, float(delta), src) for b in bases]
    law = e.get("delta_law")
    if law is not None:
        if not isinstance(law, dict):
            raise CostlawError(f"--fits: {where}.delta_law must be an object with a and b (ΔNLL = exp(a)·N^b)")
        law = {**law, "a": _need(law, "a", f"{where}.delta_law", float),
               "b": _need(law, "b", f"{where}.delta_law", float)}
        for c in out:
            c.delta_law = law
    if isinstance(e.get("keep_law"), dict):  # reported with the candidate; its use is already in delta_law
        for c in out:
            c.keep_law = e["keep_law"]
    if e.get("retrieval") is not None:
        for c in out:
            c.retrieval, c.retrieval_source = _accuracy(e, where), str(e.get("retrieval_source") or src)
    return out


def _accuracy(e: dict, where: str) -> float:
    v = _need(e, "retrieval", where, float)
    if not 0 <= v <= 1:
        raise CostlawError(f"--fits: {where}.retrieval must be an accuracy in [0, 1], got {v!r}")
    return float(v)


def on_dense(base: Candidate, policy: dict, delta: float, source: str) -> Candidate:
    """A compressed candidate: `base`'s law, shape and ladder, plus a KV policy and its measured ΔNLL."""
    return Candidate(label=policy_label(base.label, policy), family="compressed",
                     template=replace(base.template, kv_policy=policy), law=base.law, params=base.params,
                     samples=base.samples, ci95=base.ci95, r2=base.r2, n_points=base.n_points, ladder=base.ladder,
                     n_max=base.n_max, n_runs=base.n_runs, noise=base.noise,
                     reason=f"base {base.label} has no law: {base.reason}" if not base.fitted else None,
                     base=base.label, delta_nll=delta, delta_source=source,
                     group={**base.group, "kv_method": policy["method"], "kv_keep": policy["keep"]})


def _dedupe_labels(cands: list[Candidate]) -> None:
    seen: dict[str, int] = {}
    for c in cands:
        k = norm_label(c.label)
        if k in seen:
            raise CostlawError(f"--fits: two candidates are both {c.label!r}; give one a distinct \"label\"")
        seen[k] = 1
