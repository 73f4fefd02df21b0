"""Cross-validation of a store's laws: leave out configs, refit exactly as `costlaw recommend` fits, predict the
left-out runs with their intervals, and count how many land inside.

Folds, per candidate (the same grouping, config means, bootstrap over configs and noise model as recommend):
- mode "config": each config (one ModelConfig: a shape of the candidate, all its seeds) in turn;
- mode "largest": the candidate's largest size (every config at its largest N), the extrapolation a ladder
  is built for.
A fold whose remaining runs cover fewer than MIN_SIZES sizes cannot be fitted and is listed as skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from costlaw.analysis.recommend.candidates import FAMILIES, MIN_SIZES
from costlaw.analysis.recommend.intervals import DEFAULT_LEVEL, check_level
from costlaw.costmodel.core.errors import CostlawError

MODES = ("config", "largest")
LAWS = ("gqa-size", "gqa-size-shape")


@dataclass
class Prediction:
    """One left-out run and what the refit without its config predicted for it."""

    candidate: str
    fold: str  # the left-out config ("d 512 L 6") or "largest N 2.7e7"
    run_id: str
    model_id: str | None
    seed: int | None
    N: float
    d_model: int
    n_layers: int
    measured: float
    predicted: float
    lo: float | None  # a new run's interval
    hi: float | None
    mean_lo: float | None
    mean_hi: float | None

    @property
    def inside(self) -> bool | None:
        return None if self.lo is None else bool(self.lo <= self.measured <= self.hi)

    @property
    def inside_mean(self) -> bool | None:
        return None if self.mean_lo is None else bool(self.mean_lo <= self.measured <= self.mean_hi)

    @property
    def error(self) -> float:
        """(measured - predicted) / predicted: > 0 where the law under-predicts the loss."""
        return (self.measured - self.predicted) / self.predicted

    def to_json(self) -> dict:
        return {"candidate": self.candidate, "fold": self.fold, "run_id": self.run_id, "model_id": self.model_id,
                "seed": self.seed, "N": self.N, "d_model": self.d_model, "n_layers": self.n_layers,
                "measured": self.measured, "predicted": self.predicted, "lo": self.lo, "hi": self.hi,
                "mean_lo": self.mean_lo, "mean_hi": self.mean_hi, "inside": self.inside,
                "inside_mean": self.inside_mean, "rel_error": self.error}


def summarise(preds: list[Prediction]) -> dict:
    """Coverage (share inside the new-run interval, and the mean's), mean and worst relative error, widths."""
    if not preds:
        return {"runs": 0, "coverage": None, "coverage_mean": None, "mean_error": None, "mean_abs_error": None,
                "worst_error": None, "median_width": None}
    inside = [p.inside for p in preds if p.inside is not None]
    inside_m = [p.inside_mean for p in preds if p.inside_mean is not None]
    errs = np.array([p.error for p in preds])
    widths = [(p.hi - p.lo) / p.predicted for p in preds if p.lo is not None]
    return {"runs": len(preds), "configs": len({(p.candidate, p.fold) for p in preds}),
            "coverage": float(np.mean(inside)) if inside else None,
            "coverage_mean": float(np.mean(inside_m)) if inside_m else None,
            "mean_error": float(errs.mean()), "mean_abs_error": float(np.abs(errs).mean()),
            "worst_error": float(errs[np.argmax(np.abs(errs))]),
            "median_width": float(np.median(widths)) if widths else None}


@dataclass
class Validation:
    mode: str
    level: float
    law: str
    noise: str
    source: str
    n_boot: int
    predictions: list[Prediction] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"candidate", "fold", "why"}
    weak: dict = field(default_factory=dict)  # candidate -> why its full-data law is weak ([] if not)
    notes: list[str] = field(default_factory=list)

    def candidates(self) -> list[str]:
        seen: list[str] = []
        for p in self.predictions:
            if p.candidate not in seen:
                seen.append(p.candidate)
        return seen + [c for c in self.weak if c not in seen]

    def per_candidate(self) -> list[dict]:
        rows = []
        for c in self.candidates():
            s = summarise([p for p in self.predictions if p.candidate == c])
            rows.append({"candidate": c, **s, "weak_law": self.weak.get(c) or []})
        return rows

    def overall(self) -> dict:
        return summarise(self.predictions)

    def overall_usable(self) -> dict:
        """Over the candidates whose law, fitted to all their runs, passes the guards: those recommend may pick."""
        return summarise([p for p in self.predictions if not self.weak.get(p.candidate)])

    def to_json(self) -> dict:
        o = self.overall()
        return {"mode": self.mode, "level": self.level, "law": self.law, "noise": self.noise, "source": self.source,
                "bootstrap": self.n_boot, "coverage": o["coverage"], "coverage_mean": o["coverage_mean"],
                "mean_error": o["mean_error"], "mean_abs_error": o["mean_abs_error"],
                "worst_error": o["worst_error"], "overall": o, "usable_laws": self.overall_usable(),
                "candidates": self.per_candidate(), "skipped": self.skipped, "notes": self.notes,
                "covers": covers_text(self.level, self.mode),
                "predictions": [p.to_json() for p in self.predictions]}


def covers_text(level: float, mode: str) -> str:
    left = ("each config of a candidate in turn (all its seeds)" if mode == "config"
            else "each candidate's largest size (every config at its largest N)")
    return (f"coverage = share of left-out runs inside their {100 * level:g}% interval for a new run (fit uncertainty "
            f"+ run-to-run noise); coverage_mean = inside the interval of the law's mean. Left out: {left}; the law "
            "refitted without them exactly as costlaw recommend fits it. Error = (measured - predicted) / predicted")


def validate(df, *, mode: str = "config", level: float = DEFAULT_LEVEL, n_boot: int = 200, seed: int = 0,
             noise: str = "constant", lack_of_fit: bool = False, law: str = "gqa-size", families=FAMILIES,
             train_context: int | None = None,
             min_sizes: int = MIN_SIZES, source: str = "runs",
             progress: Callable[[str], None] | None = None) -> Validation:
    """Cross-validate the laws of `df` (the store's runs, analysis.recommend.load_runs) as the module doc says."""
    from costlaw.analysis.recommend.fromstore import fit_runs

    if mode not in MODES:
        raise CostlawError(f"--mode: {mode!r} is not one of {', '.join(MODES)}")
    if law not in LAWS:
        raise CostlawError(f"--law: {law!r} is not one of {', '.join(LAWS)}")
    level = check_level(level)
    if n_boot < 2:
        raise CostlawError(f"--bootstrap: cross-validation needs intervals; give >= 2 resamples, got {n_boot}")
    x_extra: tuple[str, ...] = ()
    if law == "gqa-size-shape":
        from costlaw.analysis.validate.shapelaw import register

        register()
        df = df.assign(aspect=df["d_model"] / df["n_layers"])
        x_extra = ("aspect",)
    kw = dict(families=families, n_boot=n_boot, seed=seed, min_sizes=min_sizes, noise=noise,
              lack_of_fit=lack_of_fit, law=law, x_extra=x_extra)
    full = fit_runs(df, None, source=source, train_context=train_context, **kw)
    out = Validation(mode, level, law, noise + ("+lack-of-fit" if lack_of_fit else ""), full.source, n_boot,
                     notes=list(full.notes))
    tc = full.train_context
    by_id = df.set_index("run_id")
    for cand in full.candidates:
        if cand.base:
            continue
        out.weak[cand.label] = cand.weak if cand.fitted else [f"not fitted: {cand.reason}"]
        ids = [p["run_id"] for p in cand.ladder]
        runs = by_id.loc[ids].reset_index()
        if progress:
            progress(f"{cand.label}: {len(runs)} runs, {runs['model_id'].nunique()} configs")
        for name, left in folds(runs, mode):
            train = runs[~left]
            if train["params_non_embedding"].nunique() < min_sizes:
                out.skipped.append({"candidate": cand.label, "fold": name,
                                    "why": f"the rest has {train['params_non_embedding'].nunique()} sizes; a fit "
                                           f"needs {min_sizes}"})
                continue
            fs = fit_runs(train, None, source=source, train_context=tc, **kw)
            got = [c for c in fs.candidates if not c.base and c.fitted]
            if len(got) != 1:
                out.skipped.append({"candidate": cand.label, "fold": name, "why": "the refit gave no law"})
                continue
            refit = got[0]
            for r in runs[left].itertuples():
                extra = [getattr(r, x) for x in x_extra]
                iv = refit.interval(float(r.params_non_embedding), level, extra)
                out.predictions.append(Prediction(
                    cand.label, name, r.run_id, getattr(r, "model_id", None), _int(getattr(r, "seed", None)),
                    float(r.params_non_embedding), int(r.d_model), int(r.n_layers), float(r.loss), iv.point,
                    iv.lo, iv.hi, iv.mean_lo, iv.mean_hi))
    if not out.predictions:
        raise CostlawError("--db: no fold could be fitted (every candidate has too few sizes once a config is left "
                           "out); cross-validation needs candidates with >= 5 sizes")
    return out


def folds(runs, mode: str):
    """(name, mask of the left-out runs) per fold of one candidate's runs."""
    if mode == "largest":
        top = runs["params_non_embedding"].max()
        yield f"largest N {top:.3g}", (runs["params_non_embedding"] == top).to_numpy()
        return
    key = (runs["model_id"] if "model_id" in runs.columns
           else runs["d_model"].astype(str) + "x" + runs["n_layers"].astype(str))
    order = runs.assign(_k=key).groupby("_k")["params_non_embedding"].first().sort_values()
    for k in order.index:
        first = runs[key == k].iloc[0]
        yield f"d {int(first['d_model'])} L {int(first['n_layers'])}", (key == k).to_numpy()


def _int(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def validate_stores(db, *, sweep: str | None = None, **kw) -> Validation:
    """`validate` on the completed runs of one store or several (analysis.store.union)."""
    from costlaw.analysis.recommend.fromstore import load_runs, stores_text

    df = load_runs(db, sweep)
    if not len(df):
        raise CostlawError(f"--db: no completed runs in {stores_text(db).split(' ', 1)[1]}"
                           + (f" (sweep {sweep!r})" if sweep else "") + "; run a sweep and ingest it first")
    return validate(df, source=stores_text(db), **kw)
