"""Size, price and pick: N* from the law, a config from N*, costs at each context, the objective's winner."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from costlaw.analysis.objective import Objective
from costlaw.analysis.recommend.candidates import (
    DEFAULT_STANDARD,
    EXTRAPOLATION_WARN,
    FAMILIES,
    R2_WARN,
    Candidate,
    FitSet,
    as_floats,
    select,
)
from costlaw.analysis.shape import Shape, shape
from costlaw.costmodel.core.errors import CostlawError


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
             "params": as_floats(c.params) if c.params else None, "r2": c.r2, "n_points": c.n_points,
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
    from costlaw.fitting import get_law

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
        draws = predict_samples(law, cand.samples, float(sh.n_params)) + cand.delta_nll
        draws = draws[np.isfinite(draws)]
        if len(draws) >= 2:
            ci = (float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5)))
    ext = float(n_star) / cand.n_max if cand.n_max else None
    prices = {T: objective.price(sh.config, T) for T in contexts}
    return Evaluated(cand, "ok", None, float(n_star), sh, pred, ci, ext, prices)


def predict_samples(law, samples: dict, N: float) -> np.ndarray:
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
    fits: dict = field(default_factory=dict)  # FitSet.fit_status: laws reused from the store's fits table or fitted

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
            if w is not None and w.cand.r2 is not None and w.cand.r2 < R2_WARN:
                out.append(f"context {T}: the winner {w.label}'s law fits its own {w.cand.n_points} runs at R² "
                           f"{w.cand.r2:.3f}, below {R2_WARN}; its predicted loss and interval assume a curve those "
                           "runs do not follow, so check the fit (costlaw fit --plot) before training it")
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
                "source": self.source, "fits": self.fits, "notes": self.notes, "warnings": self.warnings(),
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
    return Recommendation(target, list(contexts), objective, rows, std, note, fs.source, notes, d_multiple,
                          dict(fs.fit_status))


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
