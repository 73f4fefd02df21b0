"""`fit`: a grid of starts scored in one vectorised pass, the best distinct ones refined with L-BFGS-B.

Tolerances: scipy's L-BFGS-B ftol test is `(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol`, absolute when
|f| < 1; a summed Huber objective on log residuals is ~1e-3, so defaults stop far from the optimum (Epoch's
diagnosis of Hoffmann et al.). Each refinement therefore minimises f / f(start), which is O(1) so the test
is relative, with ftol near machine precision and a tiny gtol; the reported gradient norm is that of the
unscaled objective in fit space, so a stalled fit shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting.data import prepare
from costlaw.fitting.law import Law, get_law
from costlaw.fitting.objective import LOSSES, objective_many, rho, value_and_grad

FTOL = 1e-15
# Bootstrap refits start at the full-data optimum, so their scaled objective stays ~1 and this test is
# relative; on Chinchilla it leaves every SE unchanged to 5 digits (vs FTOL) at half the evaluations.
BOOTSTRAP_FTOL = 1e-13
GTOL = 1e-12
MAXITER = 20_000
# Refined starts "reach the best" if within this relative gap, or as close as if every log residual moved
# by AGREE_R (so noiseless fits, whose best objective is ~0, still count agreement sensibly).
AGREE_RTOL = 1e-6
AGREE_R = 1e-7
# An L-BFGS-B line-search failure counts as converged when a unit step in fit space would change the
# objective by less than this fraction of it.
STATIONARY_RGRAD = 1e-5
# ... or, when a fresh restart cannot move at all (no decrease at float precision), less than this fraction
# (in ill-conditioned directions, e.g. Chinchilla's weakly identified B, |grad| stays ~1e-5 f there).
STUCK_RGRAD = 1e-3
# Fresh L-BFGS-B restarts after a line-search failure that is not clearly stationary: a restart drops the
# quasi-Newton memory, and a restart that cannot move either confirms convergence at float precision.
RESTARTS = 2
# l1 is minimised as sum(huber_d(r)/d) for shrinking d (Huber smoothing of |r|), each stage from the last;
# the final d bounds the gap to the true l1 objective by n·d/2.
L1_DELTAS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9)


@dataclass
class FitResult:
    """A fitted law. `params` are natural (law.params), `theta` the fit-space optimum."""

    law: Law
    params: dict
    theta: np.ndarray
    objective: float
    grad_norm: float
    n_points: int
    r2: float
    r2_ceiling: float | None  # the most R² any function of x can reach here; None when no x repeats
    n_starts: int
    n_refined: int
    n_at_best: int
    success: bool
    message: str
    nit: int
    loss: str
    delta: float
    refined_objectives: list = field(default_factory=list)

    def predict(self, X) -> np.ndarray:
        return self.law.predict_theta(self.theta, X)

    def to_dict(self) -> dict:
        """JSON-ready summary (non-finite numbers become None)."""
        from costlaw.costmodel.core.files import clean_json

        return clean_json({
            "law": self.law.name, "formula": self.law.formula, "params": self.params,
            "objective": self.objective, "grad_norm": self.grad_norm, "n_points": self.n_points, "r2": self.r2,
            "r2_ceiling": self.r2_ceiling,
            "n_starts": self.n_starts, "n_refined": self.n_refined, "n_at_best": self.n_at_best,
            "success": self.success, "message": self.message, "loss": self.loss,
            "delta": self.delta if self.loss == "huber" else None,
        })


def check_loss(loss: str, delta: float) -> None:
    if loss not in LOSSES:
        raise CostlawError(f"loss: unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if not (np.isfinite(delta) and delta > 0):
        raise CostlawError(f"delta: must be a positive number, got {delta!r}; the convention is 1e-3")


def fit(law, X, y, loss: str = "huber", delta: float = 1e-3, starts=None, seed: int = 0, refine: int = 10,
        x_names=None, y_name: str = "y") -> FitResult:
    """Fit `law` (a Law or a registered name) to X (n, k) and y (n,) on log residuals.

    starts: None -> the law's default grid; an int m -> m starts (a seeded random subset of the grid when
      m is smaller, the grid plus seeded uniform draws within its bounding box when larger); a dict or list
      of dicts of natural params (e.g. published values); or an (m, p) array in fit space (law.theta_names).
    refine: how many of the best distinct starts L-BFGS-B refines; n_at_best counts those that end at the
      best objective (agreement across starts).
    loss: 'huber' (delta, summed), 'l2' (sum r²/2) or 'l1' (sum |r|).
    x_names / y_name: column names used in error messages.
    """
    law = get_law(law)
    check_loss(loss, delta)
    X, y = prepare(law, X, y, x_names, y_name)
    # Rows in one canonical order (by x, then y): where the objective is flat in some direction (few points,
    # Huber in its linear regime), the minimiser reached used to depend on the row order, so the same runs
    # gave different laws in a report figure and in `costlaw fit`.
    order = np.lexsort((y, *X.T[::-1]))
    X, y = X[order], y[order]
    if not isinstance(refine, (int, np.integer)) or refine < 1:
        raise CostlawError(f"refine: must be a positive integer, got {refine!r}")
    F, logy = law.features(X), np.log(y)
    model = law.bind(F)
    Theta = _starts(law, F, logy, starts, seed)
    score = objective_many(model, Theta, logy, None, loss, delta)
    chosen = _best_distinct(score, refine)
    if not chosen:
        raise CostlawError(f"starts: every one of the {len(Theta)} starts gives a non-finite objective; "
                           "pass starts closer to the data")
    with threadpool_limits(limits=1, user_api="blas"):  # see fitting/__init__.py
        runs = [minimise(law, model, Theta[i], logy, None, loss, delta) for i in chosen]
    best = min(runs, key=lambda r: r.fun)
    objs = [r.fun for r in runs]
    tol = AGREE_RTOL * abs(best.fun) + len(y) * float(rho(np.array(AGREE_R), loss, delta))
    pred = np.exp(model.log_predict(best.x[None, :])[0])
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    return FitResult(law=law, params=law.params_of(best.x), theta=best.x, objective=float(best.fun),
                     grad_norm=best.grad_norm, n_points=len(y), r2=r2, r2_ceiling=r2_ceiling(X, y),
                     n_starts=len(Theta), n_refined=len(runs),
                     n_at_best=int(sum(o <= best.fun + tol for o in objs)), success=bool(best.success),
                     message=best.message, nit=best.nit, loss=loss, delta=float(delta), refined_objectives=objs)


def r2_ceiling(X, y) -> float | None:
    """1 - (scatter of y within rows of equal x) / (total scatter): the R² of predicting each y by the mean
    of its x's rows, which no law of x can beat. Replicates (seeds) make it < 1; without any, it says nothing."""
    X, y = np.asarray(X, dtype=float).reshape(len(y), -1), np.asarray(y, dtype=float)
    _, group = np.unique(X, axis=0, return_inverse=True)
    group = group.ravel()
    if group.max() + 1 == len(y):
        return None
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot <= 0:
        return None
    means = np.bincount(group, weights=y) / np.bincount(group)
    return 1.0 - float(np.sum((y - means[group]) ** 2)) / ss_tot


@dataclass
class _Run:
    x: np.ndarray
    fun: float
    grad_norm: float
    success: bool
    message: str
    nit: int


def minimise(law: Law, model, theta0: np.ndarray, logy: np.ndarray, w, loss: str, delta: float,
             precondition: bool = False, ftol: float = FTOL) -> _Run:
    """L-BFGS-B from theta0 on the (weighted) objective; l1 through a Huber-smoothing continuation.

    precondition: whiten the Gauss-Newton metric at theta0 first (see `_metric`); only for starts near an
    optimum (bootstrap refits), since at an arbitrary grid point the metric can be degenerate.
    ftol: on the objective scaled to 1 at theta0.
    """
    if loss != "l1":
        return _lbfgsb(law, model, theta0, logy, w, loss, delta, 1.0, precondition, ftol)
    x, nit = np.asarray(theta0, dtype=float), 0
    for d in L1_DELTAS:
        run = _lbfgsb(law, model, x, logy, w, "huber", d, 1.0 / d, precondition, ftol)
        x, nit = run.x, nit + run.nit
    r = logy - model.log_predict(x[None, :])[0]
    fun = float(np.abs(r) @ (np.ones_like(r) if w is None else w))
    return _Run(x, fun, run.grad_norm, run.success, run.message, nit)


def _lbfgsb(law, model, theta0, logy, w, loss, delta, unit, precondition, ftol) -> _Run:
    """`unit` multiplies the objective (1/d for the l1 continuation); the reported gradient includes it."""
    f0 = unit * value_and_grad(model, theta0, logy, w, loss, delta)[0]
    scale = unit / f0 if np.isfinite(f0) and f0 > 0 else unit
    floor = len(logy) * unit * float(rho(np.array(AGREE_R), loss, delta))
    x, nit = np.asarray(theta0, dtype=float), 0
    for attempt in range(RESTARTS + 1):
        T, ubounds = _metric(law, model, x, w) if precondition else (np.eye(len(x)), law.bounds)

        def fun(u, x=x, T=T):
            f, g = value_and_grad(model, x + T @ u, logy, w, loss, delta)
            return f * scale, (T.T @ g) * scale

        with np.errstate(over="ignore", invalid="ignore"):
            res = minimize(fun, np.zeros(len(x)), jac=True, method="L-BFGS-B", bounds=ubounds,
                           options={"ftol": ftol, "gtol": GTOL, "maxiter": MAXITER, "maxfun": 2 * MAXITER})
            new = x + T @ res.x
            f, g = value_and_grad(model, new, logy, w, loss, delta)
        moved = attempt == 0 or not np.array_equal(new, x)
        x, nit = new, nit + int(res.nit)
        f, gnorm = f * unit, float(np.linalg.norm(g * unit))
        success, message = bool(res.success), str(res.message)
        if success or not message.startswith("ABNORMAL"):
            break
        # With ftol ~ 0 the line search eventually fails at float precision. That is convergence if the
        # gradient is negligible, or if a fresh start (steepest descent first) cannot move either.
        if gnorm <= STATIONARY_RGRAD * max(f, floor) or (not moved and gnorm <= STUCK_RGRAD * max(f, floor)):
            success, message = True, f"stationary: line search made no progress at |grad| {gnorm:.2g}"
            break
    return _Run(x, f, gnorm, success, message, nit)


def _metric(law, model, x, w):
    """A change of variables theta = x + T·u that whitens the Gauss-Newton metric J'WJ at x, and the bounds
    on u. Fit-space parameters differ in scale by the size of log x (an exponent moves predictions ~20x more
    than a log-amplitude), so plain L-BFGS-B spends most of its iterations learning that; whitened, bootstrap
    refits need ~2.4x fewer evaluations on Chinchilla for the same optimum (to 1e-7). With bounds, only a
    diagonal scaling keeps them a box."""
    p = len(x)
    eye = np.eye(p)
    with np.errstate(all="ignore"):
        _, J = model.linearise(x)
        if w is not None:
            J = J * np.sqrt(w)[:, None]
        H = J.T @ J
    if not np.all(np.isfinite(H)) or np.trace(H) <= 0:
        T = eye
    else:
        H = H + (1e-10 * np.trace(H) / p + 1e-300) * eye
        T = None
        if law.bounds is None:
            try:
                T = np.linalg.inv(np.linalg.cholesky(H)).T
            except np.linalg.LinAlgError:
                T = None
        if T is None or not np.all(np.isfinite(T)):
            T = np.diag(1.0 / np.sqrt(np.diag(H)))
    if law.bounds is None:
        return T, None
    s = np.diag(T)
    return T, [(None if lo is None else (lo - xi) / si, None if hi is None else (hi - xi) / si)
               for (lo, hi), xi, si in zip(law.bounds, x, s)]


def _best_distinct(score: np.ndarray, k: int) -> list[int]:
    """Indices of the k lowest finite objectives, skipping starts that tie one already taken (symmetric
    copies such as swapped A and B with alpha = beta = 0 would refine to the same point)."""
    out, taken = [], []
    for i in np.argsort(score, kind="stable"):
        if not np.isfinite(score[i]) or len(out) == k:
            break
        if any(abs(score[i] - t) <= 1e-12 * max(abs(t), 1e-300) for t in taken):
            continue
        out.append(int(i))
        taken.append(score[i])
    return out


def _starts(law: Law, F, logy, starts, seed) -> np.ndarray:
    p = len(law.params)
    if starts is None or isinstance(starts, (int, np.integer)):
        grid = law.start_grid(F, logy)
        if starts is None:
            Theta = grid
        elif starts < 1:
            raise CostlawError(f"starts: must be >= 1, got {starts}")
        else:
            rng = np.random.default_rng(seed)
            if starts <= len(grid):
                Theta = grid[np.sort(rng.choice(len(grid), size=int(starts), replace=False))]
            else:
                lo, hi = grid.min(axis=0), grid.max(axis=0)
                Theta = np.vstack([grid, lo + (hi - lo) * rng.random((int(starts) - len(grid), p))])
    elif isinstance(starts, Mapping):
        Theta = law.theta_of(starts)[None, :]
    elif isinstance(starts, (list, tuple)) and starts and all(isinstance(s, Mapping) for s in starts):
        Theta = np.array([law.theta_of(s) for s in starts])
    else:
        Theta = np.atleast_2d(np.asarray(starts, dtype=float))
        if Theta.ndim != 2 or Theta.shape[1] != p:
            raise CostlawError(f"starts: an array of starts must be (m, {p}) in fit space "
                               f"({', '.join(law.theta_names)}), got shape {Theta.shape}")
    if law.bounds is not None:
        lo = np.array([-np.inf if b[0] is None else b[0] for b in law.bounds])
        hi = np.array([np.inf if b[1] is None else b[1] for b in law.bounds])
        Theta = np.clip(Theta, lo, hi)
    return Theta
