"""`bootstrap`: resample runs (rows, or groups of rows) with replacement, refit each resample from the full-data
optimum.

A resample is a vector of row counts used as weights (times any user weights), so no data are copied. Each refit
runs the same L-BFGS-B refinement as `fit` (on the objective scaled to 1 at the start, so the stopping test is
relative: a refit that stalled at its start would shrink the spread towards zero), from the best solution rather
than the whole grid (Epoch refit from one start too), in coordinates that whiten the Gauss-Newton metric at that
solution (fewer iterations, same optimum), with the fit's residuals, loss, fixed, tied and bounded parameters.

groups: rows that are not independent measurements (the seeds, LR-sweep rows or checkpoints of one run) share a
group id and are drawn together, as the clustered bootstrap does (Epoch's notebook, "clustered standard errors").

A resample whose drawn rows cannot identify the law (its weighted Jacobian at the optimum has rank below the free
parameters: too few distinct points, or all at one size) has no answer to refit, and a refit that did not
converge has no answer either: both are counted (n_unidentified, n_failed) and left out of the samples, the
standard errors and the intervals, which are over the `n_used` others (fewer than 2: no interval, NaN). When the
runs barely outnumber the free parameters, or more than WARN_FRACTION of the resamples are left out, `warnings`
says so.
Standard errors are the sample standard deviation (ddof=1) of the untransformed estimates; intervals are
percentile intervals. Same seed, same data -> identical output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import clean_json
from costlaw.fitting.data import check_weights, prepare
from costlaw.fitting.diagnose import IDENT_RTOL
from costlaw.fitting.fit import BOOTSTRAP_FTOL, FitResult, problem_for
from costlaw.fitting.law import Law, get_law
from costlaw.fitting.minimise import STUCK_RGRAD, minimise
from costlaw.fitting.objective import linearise

# Warn when more resamples than this are left out, or when the runs (groups) number at most FEW_RUNS x the free
# parameters: a resample holds ~63% of them distinct, about as many as there are parameters.
WARN_FRACTION = 0.05
FEW_RUNS = 2


@dataclass
class BootstrapResult:
    """Bootstrap samples of every natural parameter and derived quantity.

    samples: name -> (n_used,) array (params first, then derived) over the resamples that identify the law and
    converged; estimates: the same names at the full-data fit; stderr / ci95: over the finite samples (ci95 = [2.5th,
    97.5th] percentile; an +inf sample, e.g. an unreachable target, pushes the upper end to inf); theta_samples:
    (n_used, p) in fit space; n_failed / n_unidentified: resamples left out (module doc); n_groups: the units
    resampled (rows, or groups of rows); warnings: lines a reader must see beside the intervals.
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
    n_unidentified: int = 0
    n_groups: int = 0
    grouped: bool = False
    warnings: list = field(default_factory=list)

    @property
    def n_used(self) -> int:
        return len(self.theta_samples)

    def param_samples(self) -> dict:
        """Only the law's parameters: what `law.inverse(..., strict=False)` or `law.predict` needs."""
        return {k: self.samples[k] for k in self.law.params}

    def predict_samples(self, X) -> np.ndarray:
        """(n_used, n_points) predictions at X, one row per resample."""
        return self.law.predict_theta(self.theta_samples, X)

    def band(self, X, level: float = 95.0):
        """(lo, hi) percentile band of the prediction at X."""
        P = self.predict_samples(X)
        q = (100.0 - level) / 2.0
        return _percentile(P, q, axis=0), _percentile(P, 100.0 - q, axis=0)

    def to_dict(self, samples: bool = False) -> dict:
        out = {"n_bootstrap": self.n, "seed": self.seed, "n_used": self.n_used, "n_failed": self.n_failed,
               "n_unidentified": self.n_unidentified, "n_groups": self.n_groups, "grouped": self.grouped,
               "warnings": self.warnings, "estimates": self.estimates, "stderr": self.stderr, "ci95": self.ci95}
        if samples:
            out["samples"] = self.samples
        return clean_json(out)


def bootstrap(law, X, y, res: FitResult, n: int = 1000, seed: int = 0,
              derived: Mapping[str, Callable] | None = None, x_names=None, y_name: str = "y",
              progress: Callable[[int, int], None] | None = None, *, weights=None, groups=None) -> BootstrapResult:
    """Bootstrap `res` (a fit of `law` to X, y with `weights`) with n resamples of the rows, or of `groups`
    ((n,) labels: rows sharing one are drawn together).

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
    space = res.space
    X, y = prepare(law, X, y, x_names, y_name, res.residuals, n_params=len(space.free))
    if len(y) != res.n_points:
        raise CostlawError(f"bootstrap: {len(y)} points but the fit used {res.n_points}; pass the fitted data")
    w = check_weights(weights, len(y))
    if (w is not None) != res.weighted:
        raise CostlawError("bootstrap: pass the weights the fit used" if res.weighted else
                           "bootstrap: the fit was unweighted; pass no weights")
    fns = {**law.derived, **(derived or {})}
    clash = [k for k in fns if k in law.params]
    if clash:
        raise CostlawError(f"derived: {', '.join(clash)} is a parameter name of {law.name}; rename it")
    m = len(y)
    if groups is None:
        gid, n_units = np.arange(m), m
    else:
        groups = np.asarray(groups)
        if groups.shape != (m,):
            raise CostlawError(f"bootstrap groups: {groups.shape} labels for {m} points; give one per point")
        _, gid = np.unique(groups, return_inverse=True)
        gid = gid.ravel()
        n_units = int(gid.max()) + 1
        if n_units < 2:
            raise CostlawError("bootstrap groups: every point is in one group; resampling one group gives no spread "
                               "(group by a column that varies)")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_units, size=(n, n_units))
    draws = np.bincount((idx + n_units * np.arange(n)[:, None]).ravel(), minlength=n * n_units)
    counts = draws.reshape(n, n_units)[:, gid].astype(float)
    prob = problem_for(law, space, X, y, w, res.loss, res.delta, res.residuals)
    k = len(space.free)
    with np.errstate(all="ignore"):
        _, J = linearise(prob.model, res.z, prob.space)
    W = counts if w is None else counts * w
    z = np.empty((n, k))
    ok = np.zeros(n, dtype=bool)
    failed = unidentified = 0
    with threadpool_limits(limits=1, user_api="blas"):  # see fitting/__init__.py
        # A Jacobian that overflows at the optimum says nothing of identification.
        identified = _identified(J, W) if np.all(np.isfinite(J)) else np.ones(n, dtype=bool)
        for b in range(n):
            if not identified[b]:
                unidentified += 1
            else:
                sub = prob.with_weights(W[b])
                run = minimise(sub, res.z, precondition=True, ftol=BOOTSTRAP_FTOL)
                good = run.success or run.grad_norm <= max(STUCK_RGRAD * abs(run.fun), sub.grad_floor(run.x))
                z[b], ok[b] = run.x, good and np.isfinite(run.fun)
                failed += not ok[b]
            if progress is not None:
                progress(b + 1, n)
    theta = space.theta(z[ok])
    samples = law.params_of(theta)
    per_sample = [{k: float(samples[k][b]) for k in law.params} for b in range(len(theta))]
    with np.errstate(all="ignore"):
        for name, fn in fns.items():
            samples[name] = np.array([_call(fn, p, name) for p in per_sample], dtype=float)
        estimates = dict(res.params)
        estimates.update({name: _call(fn, res.params, name) for name, fn in fns.items()})
    stderr, ci95 = {}, {}
    for name, v in samples.items():
        fin = v[np.isfinite(v)]
        stderr[name] = float(np.std(fin, ddof=1)) if len(fin) > 1 else float("nan")
        good = v[~np.isnan(v)]
        ci95[name] = [_percentile(good, 2.5), _percentile(good, 97.5)] if len(good) else [float("nan")] * 2
    unit = "groups" if groups is not None else "points"
    warnings = []
    if n_units <= FEW_RUNS * k:
        warnings.append(f"{n_units} {unit} for {k} free parameters: a resample holds ~{0.632 * n_units:.0f} distinct "
                        f"{unit}, too few to pin the law down reliably; the intervals are wide and rest on few "
                        "effective points (fix or tie parameters, or add runs)")
    left = failed + unidentified
    if ok.sum() < 2:
        warnings.append(f"only {int(ok.sum())} of {n} resamples identify the law ({unidentified} could not, {failed} "
                        "did not converge): no interval; fix or tie parameters, or add runs")
    elif left > WARN_FRACTION * n:
        warnings.append(f"{left} of {n} resamples left out of the intervals ({unidentified} could not identify the "
                        f"law, {failed} did not converge); the intervals are over the other {int(ok.sum())} and "
                        "understate the uncertainty")
    return BootstrapResult(law=law, n=int(n), seed=int(seed), samples=samples, estimates=estimates,
                           stderr=stderr, ci95=ci95, theta_samples=theta, n_failed=int(failed),
                           derived=tuple(fns), n_unidentified=int(unidentified), n_groups=n_units,
                           grouped=groups is not None, warnings=warnings)


def _identified(J: np.ndarray, W: np.ndarray) -> np.ndarray:
    """(n,) bool: whether the rows weighted by each row of W (m, n_points; 0 for rows not drawn) determine all k
    free coordinates at the optimum, i.e. the Gauss-Newton matrix G = J'WJ, scaled to a unit diagonal, has no
    eigenvalue below IDENT_RTOL² of the largest. All resamples at once: each G from the rows' outer products, and
    the eigenvalues only where the determinant of the scaled G (the product of its eigenvalues, each at most k)
    cannot already rule a small one out."""
    n_pts, k = J.shape
    tol = IDENT_RTOL ** 2
    out = np.count_nonzero(W, axis=1) >= k
    outer = np.einsum("ni,nj->nij", J, J).reshape(n_pts, k * k)
    for lo in range(0, len(W), 256):  # bounds the (rows, k, k) stack
        Wb = W[lo:lo + 256]
        G = (Wb @ outer).reshape(len(Wb), k, k)
        d = np.diagonal(G, axis1=1, axis2=2)
        ok = out[lo:lo + 256] & (d.min(axis=1) > 0)
        s = 1.0 / np.sqrt(np.where(d > 0, d, 1.0))
        Gs = G * s[:, :, None] * s[:, None, :]
        with np.errstate(all="ignore"):
            sure = np.linalg.det(Gs) > tol * float(k) ** k
        check = np.flatnonzero(ok & ~sure)
        if len(check):
            ev = np.linalg.eigvalsh(Gs[check])
            ok[check] = ev[:, 0] > tol * ev[:, -1]
        out[lo:lo + 256] = ok
    return out


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
