"""One refinement: L-BFGS-B from a start on a `Problem` (model, targets, weights, loss, residual space, box).

Tolerances: scipy's L-BFGS-B ftol test is `(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol`, absolute when
|f| < 1; a summed Huber objective on log residuals is ~1e-3, so defaults stop far from the optimum (Epoch's
diagnosis of Hoffmann et al.). Each refinement therefore minimises f / f(start), which is O(1) so the test
is relative, with ftol near machine precision and a tiny gtol; the reported gradient norm is that of the
unscaled objective in fit space (projected onto the box), so a stalled fit shows.

Bounds bound the parameter: the optimiser moves u with z = z0 + T·u, so the box on z becomes (lo - z0)/s to
(hi - z0)/s on u (T diagonal with entries s whenever there is a box).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from costlaw.fitting.objective import linearise, objective_many, predict_many, rho, value_and_grad

FTOL = 1e-15
# Bootstrap refits start at the full-data optimum, so their scaled objective stays ~1 and this test is
# relative; on Chinchilla it leaves every SE unchanged to 5 digits (vs FTOL) at half the evaluations.
BOOTSTRAP_FTOL = 1e-13
GTOL = 1e-12
MAXITER = 20_000
# Refined starts "reach the best" if within this relative gap, or as close as if every residual moved by
# AGREE_R (relative for log residuals, times the mean |y| for raw ones), so noiseless fits, whose best objective
# is ~0, still count agreement sensibly.
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
# the final d bounds the gap to the true l1 objective by n·d/2 (in the residuals' units).
L1_DELTAS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9)


@dataclass
class Problem:
    """What a refinement minimises: sum w·rho(target - prediction) over free coordinates z in [lo, hi].

    target: log y (space "log") or y ("raw"); w: None or per-point weights (user weights times resample counts);
    r_unit: the residual scale for agreement tests (1 for log residuals, the mean |y| for raw ones); diag_scale:
    refine in coordinates scaled by the Jacobian's column norms at each start (laws in natural units, whose
    parameters may differ by orders of magnitude: a = 1e8 beside b = 0.3; MINPACK and curve_fit scale so too)."""

    model: object
    target: np.ndarray
    w: np.ndarray | None
    loss: str
    delta: float
    space: str
    lo: np.ndarray
    hi: np.ndarray
    r_unit: float = 1.0
    diag_scale: bool = False

    def __post_init__(self):
        self.bounded = bool(np.isfinite(self.lo).any() or np.isfinite(self.hi).any())

    def with_weights(self, w) -> Problem:
        # Once per bootstrap refit: a copy without __init__'s checks, which are the same for any weights.
        out = object.__new__(Problem)
        out.__dict__.update(self.__dict__)
        out.w = w
        return out

    def many(self, Z: np.ndarray) -> np.ndarray:
        return objective_many(self.model, Z, self.target, self.w, self.loss, self.delta, self.space)

    def value(self, z: np.ndarray) -> float:
        """The reported objective at z (l1 as the plain sum of |r|)."""
        with np.errstate(all="ignore"):
            r = self.target - predict_many(self.model, np.asarray(z, float)[None, :], self.space)[0]
        v = rho(r, self.loss, self.delta)
        out = float(v @ (np.ones_like(r) if self.w is None else self.w))
        return out if np.isfinite(out) else float("inf")

    def agree_tol(self, best: float) -> float:
        """How far above the best objective a start may end and still count as reaching it."""
        n = len(self.target) if self.w is None else float(np.sum(self.w))
        return AGREE_RTOL * abs(best) + n * float(rho(np.array(AGREE_R * self.r_unit), self.loss, self.delta))

    def grad_floor(self, z: np.ndarray) -> float:
        """The gradient norm if every residual were AGREE_R (times r_unit): below it a gradient is rounding."""
        with np.errstate(all="ignore"):
            _, J = linearise(self.model, z, self.space)
        norms = np.linalg.norm(J, axis=1)
        w = np.ones(len(norms)) if self.w is None else self.w
        slope = AGREE_R * self.r_unit if self.loss == "l2" else min(AGREE_R * self.r_unit, self.delta)
        return slope * float(np.nansum(w * norms))


@dataclass
class Run:
    x: np.ndarray
    fun: float
    grad_norm: float  # projected onto the box
    success: bool
    message: str
    nit: int


def projected(g: np.ndarray, z: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The gradient without the components that push out of the box at an active bound."""
    g = np.array(g, dtype=float)
    span = np.maximum(1.0, np.abs(z))
    g[(z <= lo + 1e-10 * span) & (g > 0)] = 0.0
    g[(z >= hi - 1e-10 * span) & (g < 0)] = 0.0
    return g


def minimise(prob: Problem, z0: np.ndarray, precondition: bool = False, ftol: float = FTOL) -> Run:
    """L-BFGS-B from z0; l1 through a Huber-smoothing continuation.

    precondition: whiten the Gauss-Newton metric at z0 first (see `_metric`); only for starts near an
    optimum (bootstrap refits), since at an arbitrary grid point the metric can be degenerate.
    ftol: on the objective scaled to 1 at z0.
    """
    if prob.loss != "l1":
        return _lbfgsb(prob, z0, prob.loss, prob.delta, 1.0, precondition, ftol)
    x, nit = np.asarray(z0, dtype=float), 0
    for d in L1_DELTAS:
        d = d * prob.r_unit
        run = _lbfgsb(prob, x, "huber", d, 1.0 / d, precondition, ftol)
        x, nit = run.x, nit + run.nit
    return Run(x, prob.value(x), run.grad_norm, run.success, run.message, nit)


def _lbfgsb(prob: Problem, z0, loss, delta, unit, precondition, ftol) -> Run:
    """`unit` multiplies the objective (1/d for the l1 continuation); the reported gradient includes it."""
    model, target, w, space = prob.model, prob.target, prob.w, prob.space
    f0 = unit * value_and_grad(model, z0, target, w, loss, delta, space)[0]
    scale = unit / f0 if np.isfinite(f0) and f0 > 0 else unit
    floor = len(target) * unit * float(rho(np.array(AGREE_R * prob.r_unit), loss, delta))
    x, nit = np.asarray(z0, dtype=float), 0
    if prob.bounded:
        x = np.clip(x, prob.lo, prob.hi)
    for attempt in range(RESTARTS + 1):
        T = _metric(prob, x, diagonal=not precondition) if precondition or prob.diag_scale else None
        ubounds = None
        if prob.bounded:
            s = np.ones(len(x)) if T is None else np.diag(T)
            ubounds = [(None if not np.isfinite(lo) else (lo - xi) / si,
                        None if not np.isfinite(hi) else (hi - xi) / si)
                       for lo, hi, xi, si in zip(prob.lo, prob.hi, x, s)]

        def fun(u, x=x, T=T):
            f, g = value_and_grad(model, x + (u if T is None else T @ u), target, w, loss, delta, space)
            return f * scale, (g if T is None else T.T @ g) * scale

        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            res = minimize(fun, np.zeros(len(x)), jac=True, method="L-BFGS-B", bounds=ubounds,
                           options={"ftol": ftol, "gtol": GTOL, "maxiter": MAXITER, "maxfun": 2 * MAXITER})
            new = x + (res.x if T is None else T @ res.x)
            if prob.bounded:
                new = np.clip(new, prob.lo, prob.hi)  # rounding in lo - x + x must not leave the box
            f, g = value_and_grad(model, new, target, w, loss, delta, space)
        moved = attempt == 0 or not np.array_equal(new, x)
        x, nit = new, nit + int(res.nit)
        f, gnorm = f * unit, float(np.linalg.norm(projected(g * unit, x, prob.lo, prob.hi) if prob.bounded
                                                  else g * unit))
        success, message = bool(res.success), str(res.message)
        if success or not message.startswith("ABNORMAL"):
            break
        # With ftol ~ 0 the line search eventually fails at float precision. That is convergence if the
        # gradient is negligible, or if a fresh start (steepest descent first) cannot move either.
        if gnorm <= STATIONARY_RGRAD * max(f, floor) or (not moved and gnorm <= STUCK_RGRAD * max(f, floor)):
            success, message = True, f"stationary: line search made no progress at |grad| {gnorm:.2g}"
            break
    return Run(x, f, gnorm, success, message, nit)


def _metric(prob: Problem, x, diagonal: bool = False):
    """T for a change of variables z = x + T·u that whitens the Gauss-Newton metric J'WJ at x. Fit-space
    parameters differ in scale by the size of log x (an exponent moves predictions ~20x more than a log-amplitude),
    so plain L-BFGS-B spends most of its iterations learning that; whitened, bootstrap refits need ~2.4x fewer
    evaluations on Chinchilla for the same optimum (to 1e-7). With bounds, only a diagonal scaling keeps them a box;
    `diagonal` asks for it anyway (at an arbitrary start the full metric can be degenerate)."""
    p = len(x)
    eye = np.eye(p)
    with np.errstate(all="ignore"):
        _, J = prob.model.linearise(x) if prob.space == "log" else prob.model.linearise_raw(x)
        if prob.w is not None:
            J = J * np.sqrt(prob.w)[:, None]
        H = J.T @ J
    if not np.all(np.isfinite(H)) or np.trace(H) <= 0:
        return eye
    H = H + (1e-10 * np.trace(H) / p + 1e-300) * eye
    T = None
    if not (prob.bounded or diagonal):
        try:
            T = np.linalg.inv(np.linalg.cholesky(H)).T
        except np.linalg.LinAlgError:
            T = None
    if T is None or not np.all(np.isfinite(T)):
        T = np.diag(1.0 / np.sqrt(np.diag(H)))
    return T
