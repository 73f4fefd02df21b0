"""Two intervals for a loss predicted at N, at one level (default 0.9), each saying what it covers.

- **The mean** (fit uncertainty): the law's value at N over the bootstrap draws, which refit the law to the
  candidate's configs resampled with replacement (a config's seeds go together: the law is fitted to config
  means); the percentile interval of those values.
- **A new run** (prediction interval): fit uncertainty plus run-to-run noise (analysis/recommend/noise.py). A
  new run's log loss is a bootstrap draw of the mean plus noise ~ sd·t(df); the interval is the quantiles of
  that mixture, solved exactly (no noise draws, so the same inputs give the same bounds).

Without bootstrap draws the prediction interval has the noise alone around the point estimate, and without a
noise model it is not given; `covers` says so either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from costlaw.costmodel.core.errors import CostlawError

DEFAULT_LEVEL = 0.9
MEAN_COVERS = "the law's mean at this N: fit uncertainty, configs resampled with their seeds"
RUN_COVERS = "one new training run of this config: fit uncertainty plus run-to-run noise"


def check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise CostlawError(f"--level: must be a probability between 0 and 1 (e.g. 0.9), got {level!r}")
    return float(level)


@dataclass(frozen=True)
class Interval:
    level: float
    point: float
    mean_lo: float | None = None
    mean_hi: float | None = None
    lo: float | None = None  # a new run
    hi: float | None = None
    noise_sd: float | None = None  # of log loss, as used (shape widening included)
    noise_df: float | None = None
    covers: str = RUN_COVERS
    mean_covers: str = MEAN_COVERS

    @property
    def kind(self) -> str:
        """What `bounds` are: "prediction" (a new run), "mean" (the law's mean only) or "none"."""
        return "prediction" if self.lo is not None else "mean" if self.mean_lo is not None else "none"

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The widest interval there is: a new run's, else the mean's."""
        if self.lo is not None:
            return self.lo, self.hi
        if self.mean_lo is not None:
            return self.mean_lo, self.mean_hi
        return None

    def to_json(self) -> dict:
        return {"level": self.level, "point": self.point,
                "mean": {"lo": self.mean_lo, "hi": self.mean_hi, "covers": self.mean_covers},
                "new_run": {"lo": self.lo, "hi": self.hi, "covers": self.covers, "noise_sd_log": self.noise_sd,
                            "noise_df": _finite(self.noise_df)}}

    def text(self) -> str:
        pct = f"{100 * self.level:g}%"
        parts = []
        if self.lo is not None:
            parts.append(f"{pct} for a new run {self.lo:.4g}-{self.hi:.4g}")
        if self.mean_lo is not None:
            parts.append(f"{pct} for the mean {self.mean_lo:.4g}-{self.mean_hi:.4g}")
        return ", ".join(parts) if parts else "no interval"


def _finite(x):
    return None if x is None or not math.isfinite(x) else x


def mean_draws(law, samples: dict | None, N: float, extra=None) -> np.ndarray:
    """The law's value at N (and the extra variables, for a law of more than N) for every bootstrap draw; the
    finite ones only."""
    if not samples:
        return np.empty(0)
    n = len(next(iter(samples.values())))
    thetas = []
    for i in range(n):
        try:
            thetas.append(law.theta_of({k: samples[k][i] for k in law.params}))
        except CostlawError:  # a draw outside the law's form (e.g. a non-positive amplitude)
            continue
    if not thetas:
        return np.empty(0)
    x = [[float(N), *(extra or ())]]
    with np.errstate(all="ignore"):
        out = np.asarray(law.predict_theta(np.array(thetas), x), dtype=float)[:, 0]
    return out[np.isfinite(out) & (out > 0)]


def interval(point: float, draws: np.ndarray, level: float, noise_sd: float | None = None,
             noise_df: float | None = None, covers: str = RUN_COVERS) -> Interval:
    """The two intervals (module doc) from the point prediction, the bootstrap means at N and the noise."""
    level = check_level(level)
    tail = (1 - level) / 2
    draws = np.asarray(draws, dtype=float)
    mean_lo = mean_hi = lo = hi = None
    if len(draws) >= 2:
        mean_lo, mean_hi = (float(x) for x in np.quantile(draws, [tail, 1 - tail]))
    if noise_sd is not None and math.isfinite(noise_sd):
        centres = np.log(draws) if len(draws) >= 2 else np.array([math.log(point)])
        if len(draws) < 2:
            covers = "one new training run, run-to-run noise only (no bootstrap: fit uncertainty left out)"
        lo, hi = (float(math.exp(_mixture_quantile(centres, noise_sd, noise_df, q))) for q in (tail, 1 - tail))
    elif mean_lo is not None:
        covers = "not given: no run-to-run noise is known for this law (no runs behind it)"
    return Interval(level, float(point), mean_lo, mean_hi, lo, hi, noise_sd, noise_df, covers)


def _mixture_quantile(centres: np.ndarray, sd: float, df: float | None, q: float) -> float:
    """The q-quantile of (1/B)·Σ_b [centre_b + sd·t(df)] (normal for df None or inf)."""
    from scipy import stats
    from scipy.optimize import brentq

    if sd <= 0:
        return float(np.quantile(centres, q))
    dist = stats.norm if df is None or not math.isfinite(df) else stats.t(df)
    z = float(dist.ppf(q))
    lo, hi = float(centres.min()) + sd * z, float(centres.max()) + sd * z
    if hi - lo < 1e-15:
        return lo

    def f(x):
        return float(np.mean(dist.cdf((x - centres) / sd))) - q

    # Each component's CDF is q at centre + sd·z, so the mixture crosses q between the extreme centres.
    return float(brentq(f, lo, hi, xtol=1e-12, rtol=1e-12))
