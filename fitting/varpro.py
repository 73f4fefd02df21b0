"""Variable projection (VarPro) for laws that are linear in their coefficients once the exponents are fixed:
`E + A/N^alpha + B/D^beta` is linear in (A, B, E) at each (alpha, beta).

`varpro_fit` searches the exponents only; for each exponent vector the coefficients are profiled out:
1. a grid over the exponents (default: every combination of GRID_STEP-spaced values in [0, 2] for one or two
   exponents, fitting.formula.EXPONENTS beyond), each point scored with the coefficients that non-negative least
   squares gives on relative residuals (y - ŷ)/y (weighted): cheap, and close to the profile in log space;
2. from the best `refine` distinct grid points, L-BFGS-B on the profile f(e) = min over coefficients of the fit's
   own objective (the same loss, delta, residuals and weights as the joint fit), the inner minimum found by the
   joint refinement restricted to the coefficients (in log, so they stay > 0), warm-started along the path; the
   profile's gradient is the joint gradient's exponent part at the inner minimum (the envelope theorem).
So its optimum is the joint fit's optimum of the same objective, reached by a search in 2 dimensions instead of 5
(Chinchilla), which removes the start grid over the amplitudes. The comparison on Chinchilla (optimum,
conditioning, time) is in benchmarks/fitting.md (benchmarks/varpro_bench.py).

A law qualifies when it is an LSELaw whose every fit-space coordinate is either a term's intercept (a log
coefficient) or an exponent, never both (`split`): all built-in laws and the power-sum formulas do.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize, nnls
from threadpoolctl import threadpool_limits

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import diagnose
from costlaw.fitting.constraints import ReducedModel, Space
from costlaw.fitting.data import check_weights, prepare
from costlaw.fitting.fit import FitResult, check_loss, problem_for, r2_ceiling
from costlaw.fitting.law import get_law
from costlaw.fitting.lse import LSELaw
from costlaw.fitting.minimise import FTOL, GTOL, MAXITER, Problem, Run, minimise
from costlaw.fitting.objective import value_and_grad

GRID_STEP = 0.05


def split(law) -> tuple[list[int], list[int]] | None:
    """(coefficient coordinates, exponent coordinates) of an LSE law linear in its coefficients; else None."""
    if not isinstance(law, LSELaw):
        return None
    heads = {t[0] for t in law.terms if t[0] is not None}
    powers = {q for t in law.terms for q, _, _ in t[1] if q is not None}
    if not heads or not powers or heads & powers or heads | powers != set(range(len(law.params))):
        return None
    return sorted(heads), sorted(powers)


class Projector:
    """An LSE law bound to features F, split into coefficients and exponents."""

    def __init__(self, law: LSELaw, F: np.ndarray):
        parts = split(law)
        if parts is None:
            raise CostlawError(f"varpro: law {law.name} is not linear in its coefficients once its exponents are "
                               "fixed (a sum of c·x^-q terms); fit it jointly")
        self.law, self.amp, self.exp = law, *parts
        self.model = law.bind(F)
        heads = [t[0] for t in law.terms]
        self.lead = np.array([[h == a for h in heads] for a in self.amp], dtype=float)  # (coefficients, terms)
        self.free_terms = np.array([h is None for h in heads])

    def basis(self, theta: np.ndarray):
        """(B (n, coefficients), fixed (n,)): each coefficient's basis function and the terms without one."""
        t = np.array(theta, dtype=float)
        t[self.amp] = 0.0
        m = self.model
        T = t @ m.Kmat
        if m.offset is not None:
            T = T + m.offset
        with np.errstate(over="ignore"):
            E = np.exp(T.reshape(m.n_terms, m.n))
        return (self.lead @ E).T, E[self.free_terms].sum(axis=0)

    def amplitudes(self, y: np.ndarray, theta: np.ndarray, w=None):
        """(coefficients >= 0 by NNLS on relative residuals, the median of each basis function)."""
        B, fixed = self.basis(theta)
        s = 1.0 / y if w is None else np.sqrt(w) / y
        if not np.all(np.isfinite(B)):
            return np.zeros(len(self.amp)), np.ones(len(self.amp))
        coef, _ = nnls(B * s[:, None], (y - fixed) * s)
        return coef, np.median(B, axis=0)


def exponent_grid(n_exp: int) -> np.ndarray:
    if n_exp <= 2:
        axis = np.round(np.arange(0.0, 2.0 + 1e-9, GRID_STEP), 10)
    else:
        from costlaw.fitting.formula import EXPONENTS

        axis = np.array(EXPONENTS)
    return np.array(list(itertools.product(axis, repeat=n_exp)))


def varpro_fit(law, X, y, loss: str = "huber", delta: float = 1e-3, residuals: str = "log", weights=None,
               grid=None, refine: int = 5, x_names=None, y_name: str = "y", seed: int = 0) -> FitResult:
    """Fit `law` by variable projection (module doc). grid: (m, exponents) exponent values to scan, in the order
    of the law's exponent parameters (default `exponent_grid`); refine: profile minimisations from the best
    distinct grid points. The result is a FitResult like `fit`'s (its settings say method "varpro")."""
    law = get_law(law)
    check_loss(loss, delta, residuals)
    space = Space(law)
    X, y = prepare(law, X, y, x_names, y_name, residuals)
    w = check_weights(weights, len(y))
    order = np.lexsort((y, *X.T[::-1])) if w is None else np.lexsort((w, y, *X.T[::-1]))
    X, y = X[order], y[order]
    w = None if w is None else w[order]
    prob = problem_for(law, space, X, y, w, loss, delta, residuals)
    F = law.features(X)
    proj = Projector(law, F)
    G = exponent_grid(len(proj.exp)) if grid is None else np.atleast_2d(np.asarray(grid, dtype=float))
    if G.shape[1] != len(proj.exp):
        raise CostlawError(f"varpro grid: {G.shape[1]} column(s) for the {len(proj.exp)} exponents "
                           f"({', '.join(law.params[i] for i in proj.exp)}); give one column per exponent")
    starts = np.array([start_at(prob, proj, e) for e in G])
    score = prob.many(starts)
    from costlaw.fitting.fit import _best_distinct

    chosen = _best_distinct(score, refine)
    if not chosen:
        raise CostlawError("varpro: no exponent on the grid gives a finite objective; give a grid nearer the data")
    with threadpool_limits(limits=1, user_api="blas"):
        runs = [_profile_minimise(prob, proj, G[i]) for i in chosen]
    best = min(runs, key=lambda r: r.fun)
    objs = [r.fun for r in runs]
    n_at_best = int(sum(o <= best.fun + prob.agree_tol(best.fun) for o in objs))
    ok, reason = diagnose.converged(prob, best, n_at_best, len(runs))
    theta = best.x
    pred = law.bind(F).predict(theta[None, :])[0]
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    unident, cond = diagnose.identification(prob, theta, space.free)
    settings = {"loss": loss, "delta": float(delta), "starts": None, "seed": seed, "refine": refine,
                "residuals": residuals, "fix": None, "tie": None, "bounds": None, "init": None, "start_box": None,
                "random_starts": 0, "method": "varpro"}
    return FitResult(law=law, params=law.params_of(theta), theta=theta, objective=float(best.fun),
                     grad_norm=best.grad_norm, n_points=len(y), r2=r2, r2_ceiling=r2_ceiling(X, y),
                     n_starts=len(G), n_refined=len(runs), n_at_best=n_at_best, success=ok,
                     message=best.message, nit=best.nit, loss=loss, delta=float(delta), refined_objectives=objs,
                     residuals=residuals, weighted=w is not None, reason=reason, at_bounds=[],
                     not_identified=unident, condition=cond, space=space, z=theta, settings=settings)


def inner(prob: Problem, proj: Projector, theta: np.ndarray) -> np.ndarray:
    """theta with its coefficients at their minimum for its exponents (the joint refinement on the coefficients)."""
    p = len(theta)
    M = np.zeros((p, len(proj.amp)))
    M[proj.amp, np.arange(len(proj.amp))] = 1.0
    c = np.array(theta, dtype=float)
    c[proj.amp] = 0.0
    sub = Problem(ReducedModel(prob.model, M, c), prob.target, prob.w, prob.loss, prob.delta, prob.space,
                  np.full(len(proj.amp), -np.inf), np.full(len(proj.amp), np.inf), prob.r_unit)
    run = minimise(sub, np.asarray(theta, dtype=float)[proj.amp])
    out = c.copy()
    out[proj.amp] = run.x
    return out


def start_at(prob: Problem, proj: Projector, e: np.ndarray) -> np.ndarray:
    """theta at exponents e with the coefficients non-negative least squares gives (on relative residuals, in
    y's units for raw residuals); a coefficient NNLS sets to 0 starts at 1e-3 of the data's scale."""
    y = np.exp(prob.target) if prob.space == "log" else np.maximum(np.abs(prob.target), 1e-300)
    theta = np.zeros(len(proj.law.params))
    theta[proj.exp] = e
    coef, scale = proj.amplitudes(y, theta, prob.w)
    theta[proj.amp] = np.log(np.where(coef > 0, coef, 1e-3 * y.min() / np.maximum(scale, 1e-300)))
    return theta


def profile(prob: Problem, proj: Projector, e: np.ndarray):
    """(profile objective, its gradient over the exponents, the inner optimum theta) at exponents e. The inner
    minimisation starts from the projection at e, so the profile is a function of e alone (a warm start from the
    last point made it depend on the path, and L-BFGS-B's line search then accepted steps that were not descents)."""
    theta = inner(prob, proj, start_at(prob, proj, e))
    f, g = _value_and_grad(prob, theta)
    return f, g[proj.exp], theta


def _value_and_grad(prob, theta):
    if prob.loss == "l1":
        raise CostlawError("varpro: --loss l1 has no smooth profile; use huber or l2, or fit jointly")
    return value_and_grad(prob.model, theta, prob.target, prob.w, prob.loss, prob.delta, prob.space)


def _profile_minimise(prob: Problem, proj: Projector, e0: np.ndarray) -> Run:
    f0 = profile(prob, proj, e0)[0]
    scale = 1.0 / f0 if np.isfinite(f0) and f0 > 0 else 1.0

    def fun(e):
        f, g, _ = profile(prob, proj, e)
        return (f * scale, g * scale) if np.isfinite(f) else (np.inf, np.zeros_like(g))

    with np.errstate(all="ignore"):
        res = minimize(fun, e0, jac=True, method="L-BFGS-B",
                       options={"ftol": FTOL, "gtol": GTOL, "maxiter": MAXITER, "maxfun": 2 * MAXITER})
    _, _, theta = profile(prob, proj, res.x)
    f, g = _value_and_grad(prob, theta)
    gnorm = float(np.linalg.norm(g))
    success = bool(res.success) or gnorm <= 1e-5 * max(f, 1e-300)
    return Run(theta, float(f), gnorm, success, str(res.message), int(res.nit))
