"""`bootstrap`: resample runs (rows) with replacement, refit each resample from the full-data optimum.

A resample is a vector of row counts used as weights, so no data are copied. Each refit runs the same
L-BFGS-B refinement as `fit` (on the objective scaled to 1 at the start, so the stopping test is relative: a
refit that stalled at its start would shrink the spread towards zero), from the best solution rather than
the whole grid (Epoch refit from one start too), in coordinates that whiten the Gauss-Newton metric at that
solution (fewer iterations, same optimum).
Standard errors are the sample standard deviation (ddof=1) of the untransformed estimates; intervals are
percentile intervals. Same seed, same data -> identical output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import clean_json
from costlaw.fitting.data import prepare
from costlaw.fitting.fit import BOOTSTRAP_FTOL, FitResult, minimise
from costlaw.fitting.law import Law, get_law


@dataclass
class BootstrapResult:
    """Bootstrap samples of every natural parameter and derived quantity.

    samples: name -> (n,) array (params first, then derived); estimates: the same names at the full-data
    fit; stderr / ci95: over the finite samples (ci95 = [2.5th, 97.5th] percentile; an +inf sample, e.g. an
    unreachable target, pushes the upper end to inf); theta_samples: (n, p) in fit space; n_failed: refits
    that did not converge (kept in the samples, counted here).
    """

    law: Law
    n: int
    seed: int
    samples: dict
    estimates: dict
    stderr: dict
    ci95: dict
    theta_samples: np.ndarray
    n_failed: int
    derived: tuple

    def param_samples(self) -> dict:
        """Only the law's parameters: what `law.inverse(..., strict=False)` or `law.predict` needs."""
        return {k: self.samples[k] for k in self.law.params}

    def predict_samples(self, X) -> np.ndarray:
        """(n_bootstrap, n_points) predictions at X, one row per resample."""
        return self.law.predict_theta(self.theta_samples, X)

    def band(self, X, level: float = 95.0):
        """(lo, hi) percentile band of the prediction at X."""
        P = self.predict_samples(X)
        q = (100.0 - level) / 2.0
        return _percentile(P, q, axis=0), _percentile(P, 100.0 - q, axis=0)

    def to_dict(self, samples: bool = False) -> dict:
        out = {"n_bootstrap": self.n, "seed": self.seed, "n_failed": self.n_failed, "estimates": self.estimates,
               "stderr": self.stderr, "ci95": self.ci95}
        if samples:
            out["samples"] = self.samples
        return clean_json(out)


def bootstrap(law, X, y, res: FitResult, n: int = 1000, seed: int = 0,
              derived: Mapping[str, Callable] | None = None, x_names=None, y_name: str = "y",
              progress: Callable[[int, int], None] | None = None) -> BootstrapResult:
    """Bootstrap `res` (a fit of `law` to X, y) with n resamples of the rows.

    derived: extra name -> callable(params dict of floats) -> float, added to the law's own derived
    quantities (chinchilla: N_opt_exponent = beta/(alpha+beta), D_opt_exponent). E.g. the predicted loss at
    a new point: {"L@1e9": lambda p: float(law.predict(p, [[1e9]])[0])}.
    progress: called as progress(done, n) after each refit.
    """
    law = get_law(law)
    if res.law.name != law.name:
        raise CostlawError(f"bootstrap: the fit is of law {res.law.name}, not {law.name}; pass the same law")
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise CostlawError(f"bootstrap: n must be an integer >= 2, got {n!r}")
    X, y = prepare(law, X, y, x_names, y_name)
    if len(y) != res.n_points:
        raise CostlawError(f"bootstrap: {len(y)} points but the fit used {res.n_points}; pass the fitted data")
    fns = {**law.derived, **(derived or {})}
    clash = [k for k in fns if k in law.params]
    if clash:
        raise CostlawError(f"derived: {', '.join(clash)} is a parameter name of {law.name}; rename it")
    model = law.bind(law.features(X))
    logy = np.log(y)
    m = len(y)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, m, size=(n, m))
    counts = np.bincount((idx + m * np.arange(n)[:, None]).ravel(), minlength=n * m).reshape(n, m).astype(float)
    theta = np.empty((n, len(law.params)))
    failed = 0
    with threadpool_limits(limits=1, user_api="blas"):  # see fitting/__init__.py
        for b in range(n):
            run = minimise(law, model, res.theta, logy, counts[b], res.loss, res.delta, precondition=True,
                           ftol=BOOTSTRAP_FTOL)
            theta[b] = run.x
            failed += not run.success
            if progress is not None:
                progress(b + 1, n)
    samples = law.params_of(theta)
    per_sample = [{k: float(samples[k][b]) for k in law.params} for b in range(n)]
    with np.errstate(all="ignore"):
        for name, fn in fns.items():
            samples[name] = np.array([_call(fn, p, name) for p in per_sample], dtype=float)
        estimates = dict(res.params)
        estimates.update({name: _call(fn, res.params, name) for name, fn in fns.items()})
    stderr, ci95 = {}, {}
    for name, v in samples.items():
        fin = v[np.isfinite(v)]
        stderr[name] = float(np.std(fin, ddof=1)) if len(fin) > 1 else float("nan")
        ok = v[~np.isnan(v)]
        ci95[name] = [_percentile(ok, 2.5), _percentile(ok, 97.5)] if len(ok) else [float("nan")] * 2
    return BootstrapResult(law=law, n=int(n), seed=int(seed), samples=samples, estimates=estimates,
                           stderr=stderr, ci95=ci95, theta_samples=theta, n_failed=int(failed),
                           derived=tuple(fns))


def _call(fn, params, name) -> float:
    try:
        return float(fn(params))
    except (ArithmeticError, ValueError) as e:
        if isinstance(e, CostlawError):
            raise CostlawError(f"derived {name}: {e}; (an inverse with strict=False gives inf instead of "
                               "raising)") from None
        return float("nan")


def _percentile(v, q, axis=None):
    """np.percentile that keeps +-inf samples as order statistics instead of turning them into nan."""
    v = np.asarray(v, dtype=float)
    big = np.finfo(float).max / 4
    out = np.percentile(np.clip(v, -big, big), q, axis=axis)
    out = np.where(out >= big, np.inf, np.where(out <= -big, -np.inf, out))
    return float(out) if np.ndim(out) == 0 else out
