"""Run-to-run noise of a candidate's runs: how far one new run lands from the law's mean, in log loss.

The laws are fitted on log residuals, so noise is measured there too (a relative spread):

- **seed noise** (the default): the pooled within-config variance of log loss over configs trained at more than
  one seed (sum of squares about each config's mean / sum of (runs - 1), its degrees of freedom). With
  `kind="size"` the variance is log-linear in N instead (maximum likelihood on the per-config sums of squares,
  each chi-squared with its own degrees of freedom), because small models spread more; it is held at its value
  at the smallest and largest N measured beyond them (no evidence for the trend there).
- **lack of fit** (`lack_of_fit=True`, off by default): what the config means scatter about the law beyond their
  seed noise (max(0, residual variance of the config means - mean seed variance / runs per config), configs -
  parameters degrees of freedom), added to the seed variance.
- Where no config repeats a seed, the two cannot be told apart: the residual variance of the fit (configs -
  parameters degrees of freedom) stands for both (`source="residuals"`).

A new run's log loss is the law's mean plus sd·t(df); the df of a sum of variances is Welch-Satterthwaite's, so a
noise measured on few seeds gives a wide interval.

**What was measured** (`costlaw validate`'s folds, both modes, on gqa-heads-steps, on it with gqa-aspect and
gqa-depth, and on gqa-heads: 325 left-out runs; coverage of the new-run interval at levels 0.5, 0.8, 0.9, 0.95;
mean |coverage - level| weighted by runs):

| noise | all laws: over the 4 levels | at 0.9 | laws passing the guards (205 runs): 4 levels | at 0.9 |
|---|---|---|---|---|
| constant seed variance | 0.043 | 0.027 | 0.065 | 0.055 |
| log-linear in N (held at its ends) | 0.041 | 0.030 | 0.050 | 0.061 |
| constant + lack of fit | 0.065 | 0.035 | 0.080 | 0.058 |
| log-linear + lack of fit | 0.059 | 0.038 | 0.068 | 0.064 |

The seeds do spread more at small N on gqa-heads-steps (the fitted log-variance slope is -0.1 to -1.4 per log N
for all six candidates; on gqa-heads it is mixed, -1.6 to +0.9), but the two seed models calibrate alike: their
differences are below the sampling error of a coverage over ~100-300 runs (binomial sd ~0.02-0.03). The
log-linear one is worse where it matters most, the largest size left out (gqa-heads-steps: 77% inside the 90%
interval against 85%), and lack of fit, estimated from 3-4 residual degrees of freedom, widens the intervals past
their level. So the default is the constant seed variance, the simplest
model the measurements do not reject; `--noise size` and `--lack-of-fit` remain to measure again on new stores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from costlaw.costmodel.core.errors import CostlawError

KINDS = ("constant", "size")


@dataclass(frozen=True)
class Noise:
    """The noise model of one candidate (module doc); variances are of log loss."""

    source: str  # "seeds" (some config repeats) | "residuals" (none does: the fit's residual variance)
    kind: str  # "constant" | "size": how the seed variance depends on N
    seed_var: float  # at n_ref when kind is "size"; for "residuals" the residual variance
    seed_df: float
    lof_var: float = 0.0  # lack of fit (0 for "residuals", where it is inside seed_var)
    lof_df: float = 0.0
    slope: float = 0.0  # d log(seed variance) / d log N ("size" only)
    n_ref: float | None = None
    configs: int = 0
    runs: int = 0
    n_range: tuple[float, float] | None = None  # "size": the N of the repeated configs; held at its ends beyond

    def seed_variance(self, N: float) -> float:
        if self.kind == "size" and self.n_ref:
            lo, hi = self.n_range or (N, N)
            return self.seed_var * (min(max(float(N), lo), hi) / self.n_ref) ** self.slope
        return self.seed_var

    def sd(self, N: float) -> float:
        """The standard deviation of one new run's log loss about the law's mean at N."""
        return math.sqrt(max(0.0, self.seed_variance(N) + self.lof_var))

    def df(self, N: float) -> float:
        """Welch-Satterthwaite degrees of freedom of the summed variance (inf: known exactly)."""
        a, b = self.seed_variance(N), self.lof_var
        if b <= 0 or self.lof_df <= 0:
            return float(self.seed_df) if self.seed_df > 0 else math.inf
        if a <= 0 or self.seed_df <= 0:
            return float(self.lof_df)
        return (a + b) ** 2 / (a * a / self.seed_df + b * b / self.lof_df)

    def describe(self) -> str:
        """One line: what the noise is and where it was measured."""
        if self.source == "residuals":
            return (f"sd {math.sqrt(self.seed_var):.3g} in log loss from the residuals of {self.configs} configs "
                    f"(no config repeats a seed; {self.seed_df:g} df)")
        seed = f"seed sd {math.sqrt(self.seed_var):.3g}"
        if self.kind == "size":
            seed += (f" at N {self.n_ref:.3g}, variance ∝ N^{self.slope:.2f} over N {self.n_range[0]:.3g}-"
                     f"{self.n_range[1]:.3g} (held beyond)")
        seed += f" in log loss ({self.seed_df:g} df, from the configs run at several seeds)"
        if self.lof_df:
            seed += f" + lack of fit sd {math.sqrt(self.lof_var):.3g} ({self.lof_df:g} df, {self.configs} configs)"
        return seed

    def to_json(self) -> dict:
        return {"source": self.source, "kind": self.kind, "seed_var": self.seed_var, "seed_df": self.seed_df,
                "lof_var": self.lof_var, "lof_df": self.lof_df, "slope": self.slope, "n_ref": self.n_ref,
                "n_range": list(self.n_range) if self.n_range else None, "configs": self.configs, "runs": self.runs}

    @classmethod
    def from_json(cls, d, where: str = "noise") -> Noise:
        if not isinstance(d, dict):
            raise CostlawError(f"{where}: must be an object with source, kind, seed_var, seed_df, ...")
        try:
            out = cls(source=str(d["source"]), kind=str(d.get("kind", "constant")), seed_var=float(d["seed_var"]),
                      seed_df=float(d["seed_df"]), lof_var=float(d.get("lof_var", 0.0)),
                      lof_df=float(d.get("lof_df", 0.0)), slope=float(d.get("slope", 0.0)),
                      n_ref=None if d.get("n_ref") is None else float(d["n_ref"]),
                      configs=int(d.get("configs", 0)), runs=int(d.get("runs", 0)),
                      n_range=None if d.get("n_range") is None else (float(d["n_range"][0]), float(d["n_range"][1])))
        except (KeyError, TypeError, ValueError) as e:
            raise CostlawError(f"{where}: {e!s} is missing or not a number; give source, seed_var and seed_df") \
                from None
        if out.source not in ("seeds", "residuals") or out.kind not in KINDS:
            raise CostlawError(f"{where}: source must be seeds|residuals and kind {'|'.join(KINDS)}")
        if not (out.seed_var >= 0 and out.lof_var >= 0 and math.isfinite(out.seed_var + out.lof_var)):
            raise CostlawError(f"{where}: variances must be finite and >= 0")
        return out


def config_groups(points) -> list[tuple[float, np.ndarray]]:
    """(N, losses) per config from ladder points ({"N", "d_model", "n_layers", "loss", "model_id"}): runs of one
    config id (else one shape and N) are one config whatever their seed."""
    groups: dict[tuple, list[float]] = {}
    for p in points:
        if p.get("loss") is None:
            continue
        key = (float(p["N"]), p.get("model_id") or f"{p.get('d_model')}x{p.get('n_layers')}")
        groups.setdefault(key, []).append(float(p["loss"]))
    return [(k[0], np.asarray(v, dtype=float)) for k, v in sorted(groups.items(), key=lambda kv: kv[0][0])]


def estimate(groups, predict, n_params: int, kind: str = "constant", lack_of_fit: bool = False) -> Noise | None:
    """The noise model (module doc) of configs `groups` [(N, losses)], about the law `predict(N array) -> mean
    loss` fitted to their means with `n_params` parameters. None when there is nothing to measure it from (as
    many configs as parameters and no repeated seed)."""
    if kind not in KINDS:
        raise CostlawError(f"--noise: {kind!r} is not one of {', '.join(KINDS)}")
    groups = [(float(N), np.asarray(v, dtype=float)) for N, v in groups if len(v)]
    if not groups:
        return None
    Ns = np.array([N for N, _ in groups])
    n_runs = np.array([len(v) for _, v in groups])
    means = np.array([float(np.mean(v)) for _, v in groups])
    with np.errstate(all="ignore"):
        resid = np.log(means) - np.log(np.asarray(predict(Ns), dtype=float))
    resid = np.where(np.isfinite(resid), resid, np.nan)
    K = len(groups)
    res_df = K - n_params
    res_var = float(np.nansum(resid ** 2) / res_df) if res_df > 0 else math.nan
    within = [(N, float(np.sum((np.log(v) - np.mean(np.log(v))) ** 2)), len(v) - 1) for N, v in groups if len(v) > 1]
    total_runs = int(n_runs.sum())
    if not within:
        if not math.isfinite(res_var):
            return None
        return Noise("residuals", "constant", res_var, float(res_df), configs=K, runs=total_runs)
    ss = np.array([w[1] for w in within])
    dfs = np.array([w[2] for w in within], dtype=float)
    seed_var, seed_df = float(ss.sum() / dfs.sum()), float(dfs.sum())
    slope, n_ref, n_range = 0.0, None, None
    rep = np.array([w[0] for w in within])
    if kind == "size" and len(set(rep)) >= 2:
        seed_var, slope, n_ref = _size_dependent(rep, ss, dfs, seed_var)
        n_range = (float(rep.min()), float(rep.max()))
    noise = Noise("seeds", kind if n_ref else "constant", seed_var, seed_df, slope=slope, n_ref=n_ref, configs=K,
                  runs=total_runs, n_range=n_range)
    if lack_of_fit and res_df > 0 and math.isfinite(res_var):
        expected = float(np.mean([noise.seed_variance(N) / n for N, n in zip(Ns, n_runs)]))
        noise = Noise(noise.source, noise.kind, noise.seed_var, noise.seed_df, max(0.0, res_var - expected),
                      float(res_df), noise.slope, noise.n_ref, K, total_runs, n_range)
    return noise


def _size_dependent(N, ss, dfs, pooled) -> tuple[float, float, float]:
    """Maximum likelihood of variance = s0·(N/n_ref)^slope from per-config sums of squares (ss_k ~ var_k·chi²_df)."""
    from scipy.optimize import minimize

    lx = np.log(N)
    n_ref = float(np.exp(np.average(lx, weights=dfs)))
    x = lx - math.log(n_ref)

    def nll(p):
        v = np.exp(p[0] + p[1] * x)
        return float(np.sum(dfs * np.log(v) + ss / v))

    with np.errstate(all="ignore"):
        res = minimize(nll, [math.log(max(pooled, 1e-300)), 0.0], method="Nelder-Mead",
                       options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 2000})
    if not res.success or not np.all(np.isfinite(res.x)):
        return pooled, 0.0, n_ref
    return float(np.exp(res.x[0])), float(res.x[1]), n_ref
