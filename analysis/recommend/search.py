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
    Candidate,
    FitSet,
    as_floats,
    select,
)
from costlaw.analysis.recommend.guards import R2_MIN, SPAN_DECADES, unchecked
from costlaw.analysis.recommend.intervals import DEFAULT_LEVEL, MEAN_COVERS, RUN_COVERS, Interval, check_level
from costlaw.analysis.shape import Shape, shape
from costlaw.costmodel.core.errors import CostlawError


@dataclass
class Evaluated:
    """One candidate at the target loss: its size, config, predicted loss and intervals, prices at each context."""

    cand: Candidate
    status: str  # ok | unfit | unreachable
    reason: str | None = None
    n_star: float | None = None
    shape: Shape | None = None
    predicted: float | None = None
    interval: Interval | None = None
    extrapolation: float | None = None
    prices: dict = field(default_factory=dict)  # context -> Objective.price row
    weak: list[str] = field(default_factory=list)  # why its law is not fit to recommend from (guards.py)
    min_retrieval: float | None = None  # the quality floor the recommendation was asked for (--min-retrieval)

    @property
    def label(self) -> str:
        return self.cand.label

    @property
    def outside(self) -> str | None:
        """Why its config lies outside the shapes the candidate was trained at (None: inside, or no ladder)."""
        return self.shape.outside if self.shape is not None else None

    def blocked(self, allow_weak: bool = False, allow_outside: bool = False) -> str | None:
        """Why this candidate may not win (None: it may), given what the user allowed."""
        why = []
        if self.weak and not allow_weak:
            why.append(f"weak law ({'; '.join(self.weak)})")
        if self.outside and not allow_outside:
            why.append(f"outside its trained shapes ({self.outside})")
        if self.below_retrieval:
            why.append(self.below_retrieval)
        return "; ".join(why) or None

    @property
    def below_retrieval(self) -> str | None:
        """Why it fails the retrieval floor (None: no floor asked, or it clears it)."""
        floor, got = self.min_retrieval, self.cand.retrieval
        if floor is None:
            return None
        if got is None:
            return f"no retrieval measured (--min-retrieval {floor:g})"
        if got < floor:
            return f"retrieval {got:.2f} < --min-retrieval {floor:g} ({self.cand.retrieval_source})"
        return None

    def to_json(self) -> dict:
        c = self.cand
        d = {"label": c.label, "family": c.family, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads,
             "status": self.status, "reason": self.reason, "law": c.law,
             "params": as_floats(c.params) if c.params else None, "r2": c.r2, "n_points": c.n_points,
             "n_runs": c.n_runs, "n_max": c.n_max, "weak": self.weak if c.fitted else None,
             "identification_unchecked": unchecked(c),
             "noise": c.noise.to_json() if c.noise is not None else None,
             "envelope": c.template.envelope.to_json() if c.template.envelope else None,
             "retrieval": c.retrieval, "retrieval_source": c.retrieval_source}
        if c.base:
            d.update(base=c.base, delta_nll=c.delta_nll, delta_source=c.delta_source,
                     kv_policy=c.template.kv_policy, delta_law=c.delta_law)
            if self.status == "ok" and c.delta_law is not None:
                d["delta_nll_at_n"] = c.delta_at(self.shape.n_params)
        if self.status == "ok":
            s = self.shape
            d.update(n_star=self.n_star, n_params=s.n_params, aspect_ratio_target=s.ratio_target,
                     aspect_anchors=s.anchors, d_multiple=s.d_multiple, predicted_loss=self.predicted,
                     predicted_loss_interval=self.interval.to_json(), outside_envelope=self.outside,
                     extrapolation=self.extrapolation, config=s.config.to_dict(), config_id=s.config.config_id,
                     prices=[self.prices[T] for T in sorted(self.prices)])
        return d


def evaluate(cand: Candidate, target: float, contexts: list[int], objective: Objective,
             d_multiple: int | None = None, level: float = DEFAULT_LEVEL) -> Evaluated:
    from costlaw.fitting import get_law

    if not cand.fitted:
        return Evaluated(cand, "unfit", cand.reason or "no law")
    law = get_law(cand.law)
    n_star = law.inverse(cand.params, target - cand.delta_nll, strict=False)
    # a ΔNLL that depends on N: N* solves law(N) + ΔNLL(N) = target, by fixed-point steps from the measured ΔNLL
    # (ΔNLL changes slowly with N, so a few steps settle it)
    for _ in range(50 if cand.delta_law is not None and math.isfinite(n_star) else 0):
        nxt = law.inverse(cand.params, target - cand.delta_at(n_star), strict=False)
        if not math.isfinite(nxt) or abs(nxt / n_star - 1) < 1e-9:
            n_star = nxt
            break
        n_star = nxt
    if not math.isfinite(n_star):
        floor = law.reachable_floor(cand.params)
        extra = f" + ΔNLL {cand.delta_nll:.3g}" if cand.delta_nll else ""
        return Evaluated(cand, "unreachable", f"L* {target:g} is at or below its floor ({floor}{extra})",
                         weak=cand.weak)
    sh = shape(float(n_star), cand.template, d_multiple)
    iv = cand.interval(float(sh.n_params), level)
    ext = float(n_star) / cand.n_max if cand.n_max else None
    prices = {T: objective.price(sh.config, T) for T in contexts}
    return Evaluated(cand, "ok", None, float(n_star), sh, iv.point, iv, ext, prices, cand.weak)


def predict_samples(law, samples: dict, N: float) -> np.ndarray:
    """The law at N for every bootstrap draw (NaN where a draw is outside the law's form), for figures' bands."""
    n = len(next(iter(samples.values())))
    out = np.full(n, np.nan)
    for i in range(n):
        try:
            theta = law.theta_of({k: samples[k][i] for k in law.params})
        except CostlawError:
            continue
        with np.errstate(all="ignore"):
            out[i] = float(np.asarray(law.predict_theta(theta, [[float(N)]]), dtype=float).ravel()[0])
    return out


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
    level: float = DEFAULT_LEVEL
    allow_weak: bool = False
    allow_outside: bool = False

    def eligible(self, r: Evaluated) -> bool:
        return r.status == "ok" and r.blocked(self.allow_weak, self.allow_outside) is None

    def ranked(self, T: int) -> list[Evaluated]:
        """Candidates that may win (guards.py, the envelope) within every budget at context T, lowest Z first."""
        ok = [r for r in self.rows if self.eligible(r) and not r.prices[T]["violations"]]
        return sorted(ok, key=lambda r: (r.prices[T]["z"], r.label))

    def winner(self, T: int) -> Evaluated | None:
        r = self.ranked(T)
        return r[0] if r else None

    def runner_up(self, T: int) -> Evaluated | None:
        r = self.ranked(T)
        return r[1] if len(r) > 1 else None

    def excluded(self) -> list[Evaluated]:
        """Candidates that reach the target but may not win: a weak law or a config outside its trained shapes."""
        return [r for r in self.rows if r.status == "ok" and not self.eligible(r)]

    def no_winner_reason(self, T: int) -> str | None:
        """Why context T has no winner (None when it has one); the details per candidate are in `excluded`."""
        if self.winner(T) is not None:
            return None
        within = [r for r in self.rows if r.status == "ok" and not r.prices[T]["violations"]]
        if not within:
            return "no candidate meets the budgets"
        weak = [r.label for r in within if r.weak and not self.allow_weak]
        outside = [r.label for r in within if r.outside and not self.allow_outside]
        poor = [r.label for r in within if r.below_retrieval]
        parts = ([f"a weak law ({', '.join(weak)})"] if weak else []) + (
            [f"a config outside its trained shapes ({', '.join(outside)})"] if outside else []) + (
            [f"retrieval below --min-retrieval or not measured ({', '.join(poor)})"] if poor else [])
        flags = (["--allow-weak-laws"] if weak else []) + (["--allow-outside-envelope"] if outside else []) + (
            ["a lower --min-retrieval"] if poor else [])
        return (f"every candidate within the budgets is excluded: {'; '.join(parts)}. The data cannot support a "
                f"recommendation; {' and '.join(flags)} would use them anyway")

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
            if w is None:
                out.append(f"context {T}: no winner: {self.no_winner_reason(T)}")
                continue
            if w.extrapolation is not None and w.extrapolation > EXTRAPOLATION_WARN:
                out.append(f"context {T}: the winner {w.label} needs N* {w.n_star:.3g}, {w.extrapolation:.1f}x its "
                           f"largest trained run ({w.cand.n_max:.3g}); the law is extrapolated far, train larger runs "
                           "to confirm")
            if w.weak:
                out.append(f"context {T}: the winner {w.label}'s law is weak ({'; '.join(w.weak)}); it won only "
                           "because --allow-weak-laws was given, and its predicted loss and interval rest on a law "
                           "the runs do not pin down")
            if w.outside:
                out.append(f"context {T}: the winner {w.label}'s config lies outside the shapes it was trained at "
                           f"({w.outside}); allowed by --allow-outside-envelope, but its interval does not cover what "
                           "an untrained shape adds")
            if w.cand.noise is None:
                out.append(f"context {T}: the winner {w.label} has no measured run-to-run noise, so its interval "
                           "covers the fit only")
        return out

    def to_json(self) -> dict:
        per = []
        for T in self.contexts:
            w, ru = self.winner(T), self.runner_up(T)
            per.append({"context": T, "winner": w.label if w else None, "runner_up": ru.label if ru else None,
                        "no_winner_reason": self.no_winner_reason(T),
                        "winner_config": w.shape.config.to_dict() if w else None,
                        "winner_toml": w.shape.config.to_toml() if w else None,
                        "winner_prices": w.prices[T] if w else None,
                        "predicted_loss": w.predicted if w else None,
                        "predicted_loss_interval": w.interval.to_json() if w else None,
                        "weak_law": w.weak if w else None, "outside_envelope": w.outside if w else None,
                        "extrapolation": w.extrapolation if w else None,
                        "standard_prices": self.standard.prices[T] if self.standard else None,
                        "savings_vs_standard": self.savings(T)})
        return {"target_loss": self.target, "contexts": self.contexts, "objective": self.objective.describe(),
                "source": self.source, "fits": self.fits, "notes": self.notes, "warnings": self.warnings(),
                "level": self.level, "intervals": interval_rule(self.level),
                "guards": guard_rule(self.allow_weak, self.allow_outside),
                "excluded": [{"label": r.label, "why": r.blocked(self.allow_weak, self.allow_outside)}
                             for r in self.excluded()],
                "shape_rule": shape_rule(self.d_multiple),
                "standard": self.standard.label if self.standard else None, "standard_note": self.standard_note,
                "by_context": per, "candidates": [r.to_json() for r in self.rows]}


def interval_rule(level: float) -> str:
    pct = f"{100 * level:g}%"
    return (f"{pct} intervals: 'new run' covers {RUN_COVERS} (the run-to-run noise measured from repeated seeds, "
            f"else from the fit's residuals); 'mean' covers {MEAN_COVERS}")


def guard_rule(allow_weak: bool, allow_outside: bool) -> str:
    weak = ("weak laws may win (--allow-weak-laws)" if allow_weak else
            f"a weak law (E at its bound, a parameter's bootstrap interval spanning > {SPAN_DECADES:g} decade or not "
            f"finite, R² < {R2_MIN} on its config means) does not win")
    out = ("configs outside the trained depths and d/L may win (--allow-outside-envelope)" if allow_outside else
           "a config outside its candidate's trained depths and d/L does not win")
    return f"{weak}; {out}"


def shape_rule(d_multiple: int | None) -> str:
    grid = (f"a multiple of {d_multiple}" if d_multiple else
            "a multiple of 64, or of the gcd of the ladder's widths when they are not multiples of 64")
    return ("N* -> config: d/L interpolated in log N from the candidate's ladder runs (else the GQA paper's anchors), "
            f"depth solved for N*, then integer L and d ({grid}) with the fewest non-embedding params >= N*, kept "
            "inside the depths and d/L the candidate was trained at whenever a config there reaches N*")


def recommend(fs: FitSet, target: float, contexts: list[int], objective: Objective | None = None, *,
              candidates: str = "all", families=FAMILIES, standard: str = DEFAULT_STANDARD,
              d_multiple: int | None = None, level: float = DEFAULT_LEVEL, allow_weak: bool = False,
              allow_outside: bool = False, min_retrieval: float | None = None) -> Recommendation:
    """Evaluate the selected candidates at `target` and each context; see the module doc. A candidate with a weak
    law (guards.py) or a config outside its trained shapes is evaluated and listed but does not win unless
    `allow_weak` / `allow_outside`. `min_retrieval`: a candidate wins only when its measured passkey retrieval
    (Candidate.retrieval) is at least this."""
    objective = objective or Objective()
    if min_retrieval is not None and not (0 <= min_retrieval <= 1):
        raise CostlawError(f"--min-retrieval: an accuracy in [0, 1], got {min_retrieval!r}")
    level = check_level(level)
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise CostlawError(f"--target-loss: must be a positive number, got {target!r}")
    if not contexts:
        raise CostlawError("--context: give at least one context length, e.g. --context 8K,128K")
    chosen = select(fs, candidates, families)
    if not any(c.fitted for c in chosen):
        why = "; ".join(f"{c.label}: {c.reason}" for c in chosen[:4])
        raise CostlawError(f"--candidates: none of the {len(chosen)} selected candidates has a fitted law ({why}); "
                           "train more sizes or pick fitted candidates")
    rows = [evaluate(c, target, contexts, objective, d_multiple, level) for c in chosen]
    for r in rows:
        r.min_retrieval = min_retrieval
    if not any(r.status == "ok" for r in rows):
        floors = [(c.params.get("E", float("nan")) + c.delta_nll, c.label) for c in chosen if c.fitted]
        lo, who = min(floors)
        raise CostlawError(f"--target-loss: {target:g} is at or below every fitted floor E (lowest {lo:.4g}, for "
                           f"{who}); ask for a loss above {lo:.4g}")
    std, note = resolve_standard(fs, standard, target, contexts, objective, d_multiple, level)
    notes = list(fs.notes)
    if fs.train_context and max(contexts) > fs.train_context:
        notes.append(f"the laws were fitted to runs trained at {fs.train_context} tokens and are used as is at every "
                     "longer --context, which assumes each candidate's loss relative to the default does not change "
                     "with context (the GQA paper, §5.7, found it flat beyond 8K; studies/long-context tests it at "
                     "this scale); "
                     + (f"{fs.context_evidence}; " if fs.context_evidence else "")
                     + "the context changes only the costs there")
    if std is not None and std.weak:
        note += f"; its law is weak ({'; '.join(std.weak)}), so the savings against it are rough"
    return Recommendation(target, list(contexts), objective, rows, std, note, fs.source, notes, d_multiple,
                          dict(fs.fit_status), level, allow_weak, allow_outside)


def resolve_standard(fs: FitSet, spec: str, target, contexts, objective, d_multiple,
                     level: float = DEFAULT_LEVEL) -> tuple[Evaluated | None, str]:
    """The baseline at the same loss: "d/d_h,8" (Llama-3 style: as many query heads as d/d_h, 8 KV heads),
    "d/d_h,d/d_h" (MHA) or a fitted GQA candidate's label such as "32,8"."""
    spec = (spec or DEFAULT_STANDARD).strip()
    m = re.fullmatch(r"\s*(d/d_h|\d+)\s*,\s*(d/d_h|\d+)\s*", spec)
    if not m:
        c = fs.get(spec)
        if c is None:
            raise CostlawError(f"--standard: {spec!r} is neither 'd/d_h,K', 'd/d_h,d/d_h' nor a candidate label; "
                               f"e.g. --standard 'd/d_h,8' or --standard 32,8")
        ev = evaluate(c, target, contexts, objective, d_multiple, level)
        return (ev, f"standard {c.label}") if ev.status == "ok" else (None, f"standard {c.label}: {ev.reason}")
    qh, kv = m.group(1), m.group(2)
    if qh != "d/d_h" and kv != "d/d_h":
        c = fs.get(f"{qh},{kv}")
        if c is None:
            return None, f"standard {qh},{kv}: not among the candidates; pass --standard with a fitted label"
        ev = evaluate(c, target, contexts, objective, d_multiple, level)
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
        ev = evaluate(c, target, contexts, objective, d_multiple, level)
        if ev.status != "ok":
            continue
        cfg = ev.shape.config
        key = (abs(math.log2(c.n_heads) - math.log2(cfg.d_model / cfg.head_dim)), -c.n_heads)
        if best_key is None or key < best_key:
            best, best_key = ev, key
    if best is None:
        if spec == DEFAULT_STANDARD:
            # no 8-KV-head ladder (e.g. small models with fewer heads): compare with multi-head attention instead
            ev, note = resolve_standard(fs, "d/d_h,d/d_h", target, contexts, objective, d_multiple, level)
            if ev is not None:
                return ev, f"no fitted candidate has 8 KV heads, so the {note}"
        return None, (f"standard ({spec}): no fitted GQA candidate of that form reaches L* {target:g}; "
                      "pass --standard with a fitted candidate label")
    cfg = best.shape.config
    return best, (f"standard ({spec}): {best.label}, whose config has d/d_h = {cfg.d_model}/{cfg.head_dim} = "
                  f"{cfg.d_model / cfg.head_dim:g} (the fitted candidate closest to that form)")
