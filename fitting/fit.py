"""`fit`: a grid of starts scored in one vectorised pass, the best distinct ones refined with L-BFGS-B
(fitting/minimise.py), on log or raw residuals, optionally weighted, with parameters fixed, tied or bounded
(fitting/constraints.py), and the diagnosis of the result (fitting/diagnose.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import diagnose
from costlaw.fitting import starts as starts_mod
from costlaw.fitting.constraints import Space
from costlaw.fitting.data import check_weights, prepare
from costlaw.fitting.law import Law, get_law
from costlaw.fitting.minimise import BOOTSTRAP_FTOL, Problem, minimise  # noqa: F401  (bootstrap imports from here)
from costlaw.fitting.objective import LOSSES, RESIDUALS, definition


@dataclass
class FitResult:
    """A fitted law. `params` are natural (law.params, fixed and tied ones included), `theta` the fit-space optimum,
    `z` the free coordinates (constraints.Space); `settings` holds every argument of the fit but the data, so holdout
    and bootstrap refit the same way."""

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
    residuals: str = "log"
    weighted: bool = False
    reason: str | None = None  # why it did not converge; None when it did
    at_bounds: list = field(default_factory=list)
    not_identified: list = field(default_factory=list)
    condition: float = float("nan")
    space: Space | None = None
    z: np.ndarray | None = None
    settings: dict = field(default_factory=dict)

    def predict(self, X) -> np.ndarray:
        return self.law.predict_theta(self.theta, X)

    @property
    def definition(self) -> str:
        return definition(self.loss, self.delta, self.residuals, self.weighted)

    def to_dict(self) -> dict:
        """JSON-ready summary (non-finite numbers become None)."""
        from costlaw.costmodel.core.files import clean_json

        cons = self.space.to_dict() if self.space is not None else {}
        return clean_json({
            "law": self.law.name, "formula": self.law.formula, "params": self.params,
            "objective": self.objective, "objective_definition": self.definition, "grad_norm": self.grad_norm,
            "n_points": self.n_points, "r2": self.r2, "r2_ceiling": self.r2_ceiling,
            "n_starts": self.n_starts, "n_refined": self.n_refined, "n_at_best": self.n_at_best,
            "success": self.success, "message": self.message, "reason": self.reason, "loss": self.loss,
            "delta": self.delta if self.loss == "huber" else None, "residuals": self.residuals,
            "weighted": self.weighted, "fixed": cons.get("fixed", {}), "tied": cons.get("tied", {}),
            "bounds": cons.get("bounds", {}), "at_bounds": self.at_bounds, "not_identified": self.not_identified,
            "condition": self.condition,
        })


def check_loss(loss: str, delta: float, residuals: str = "log") -> None:
    if loss not in LOSSES:
        raise CostlawError(f"loss: unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if not (np.isfinite(delta) and delta > 0):
        raise CostlawError(f"delta: must be a positive number, got {delta!r}; the convention is 1e-3")
    if residuals not in RESIDUALS:
        raise CostlawError(f"residuals: unknown {residuals!r}; choose log (log y - log ŷ) or raw (y - ŷ)")


def problem_for(law, space: Space, X, y, w, loss, delta, residuals) -> Problem:
    """The minimisation problem of fitting `law` to (X, y) under `space`."""
    model = space.bind(law.bind(law.features(X)))
    target = np.log(y) if residuals == "log" else y
    r_unit = 1.0 if residuals == "log" else max(float(np.mean(np.abs(y))), 1e-300)
    return Problem(model, target, w, loss, float(delta), residuals, space.lo, space.hi, r_unit,
                   diag_scale=law.natural)


def fit(law, X, y, loss: str = "huber", delta: float = 1e-3, starts=None, seed: int = 0, refine: int = 10,
        x_names=None, y_name: str = "y", *, residuals: str = "log", weights=None, fix: Mapping | None = None,
        tie: Mapping | None = None, bounds: Mapping | None = None, init: Mapping | None = None,
        start_box: Mapping | None = None, random_starts: int = 0) -> FitResult:
    """Fit `law` (a Law or a registered name) to X (n, k) and y (n,).

    loss: 'huber' (delta, summed), 'l2' (sum r²/2) or 'l1' (sum |r|); residuals: 'log' (log y - log ŷ) or 'raw'
      (y - ŷ); weights: (n,) multiplying each point's loss (fitting/objective.py: w = 1/sigma² is curve_fit's sigma).
    starts, init, start_box, random_starts: see fitting/starts.py; refine: how many of the best distinct starts
      L-BFGS-B refines (init starts always are); n_at_best counts those that end at the best objective.
    fix {name: value}, tie {name: other}, bounds {name: (lo, hi)}: natural units (fitting/constraints.py).
    x_names / y_name: column names used in error messages.
    """
    law = get_law(law)
    check_loss(loss, delta, residuals)
    if not isinstance(refine, (int, np.integer)) or refine < 1:
        raise CostlawError(f"refine: must be a positive integer, got {refine!r}")
    space = Space(law, fix, tie, bounds)
    X, y = prepare(law, X, y, x_names, y_name, residuals, n_params=len(space.free))
    w = check_weights(weights, len(y))
    # Rows in one canonical order (by x, then y): where the objective is flat in some direction (few points,
    # Huber in its linear regime), the minimiser reached used to depend on the row order, so the same runs
    # gave different laws in a report figure and in `costlaw fit`.
    order = np.lexsort((y, *X.T[::-1])) if w is None else np.lexsort((w, y, *X.T[::-1]))
    X, y = X[order], y[order]
    w = None if w is None else w[order]
    prob = problem_for(law, space, X, y, w, loss, delta, residuals)
    F = law.features(X)
    logy = np.log(y) if (y > 0).all() else np.log(np.maximum(np.abs(y), 1e-300))  # the grids centre on log y
    Z, n_init = starts_mod.build(law, space, F, logy, starts, seed, init, start_box, random_starts)
    score = prob.many(Z)
    chosen = list(range(n_init)) + [n_init + i for i in _best_distinct(score[n_init:], refine)]
    if not any(np.isfinite(score[i]) for i in chosen):
        raise CostlawError(f"starts: every one of the {len(Z)} starts gives a non-finite objective; "
                           "pass starts closer to the data (--init, --start-box)")
    chosen = [i for i in chosen if np.isfinite(score[i])]
    with threadpool_limits(limits=1, user_api="blas"):  # see fitting/__init__.py
        runs = [minimise(prob, Z[i]) for i in chosen]
        best = min(runs, key=lambda r: r.fun)
        # Inside the one-thread limit too: a threaded LAPACK call leaves OpenBLAS's threads spinning afterwards.
        unident, cond = diagnose.identification(prob, best.x, space.free)
    objs = [r.fun for r in runs]
    n_at_best = int(sum(o <= best.fun + prob.agree_tol(best.fun) for o in objs))
    ok, reason = diagnose.converged(prob, best, n_at_best, len(runs))
    message = best.message
    if ok and not best.success:
        message = (f"converged: {n_at_best} of {len(runs)} refined starts agree at |grad| {best.grad_norm:.2g} "
                   f"(scipy: {best.message.strip() or 'stopped'})")
    theta = space.theta(best.x)
    pred = law.bind(F).predict(theta[None, :])[0]
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    settings = {"loss": loss, "delta": float(delta), "starts": starts, "seed": seed, "refine": refine,
                "residuals": residuals, "fix": fix, "tie": tie, "bounds": bounds, "init": init,
                "start_box": start_box, "random_starts": random_starts}
    return FitResult(law=law, params=law.params_of(theta), theta=theta, objective=float(best.fun),
                     grad_norm=best.grad_norm, n_points=len(y), r2=r2, r2_ceiling=r2_ceiling(X, y),
                     n_starts=len(Z), n_refined=len(runs), n_at_best=n_at_best, success=ok,
                     message=message, nit=best.nit, loss=loss, delta=float(delta),
                     refined_objectives=objs, residuals=residuals, weighted=w is not None, reason=reason,
                     at_bounds=diagnose.at_bounds(space, best.x), not_identified=unident, condition=cond,
                     space=space, z=best.x, settings=settings)


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
