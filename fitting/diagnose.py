"""What a fit's numbers do not say by themselves: whether it converged (and why not), which parameters sit on a
bound, and which the data do not identify.

Convergence. scipy's L-BFGS-B reports a line-search failure ("ABNORMAL") whenever ftol ~ 0 meets float precision,
including at a correct optimum; so a fit counts as converged when its best refinement converged, or when the
refined starts agree on the best objective (at least two, and at least half of them) and the projected gradient
there is negligible: a unit step in fit space would change the objective by less than STUCK_RGRAD of it, or the
gradient is no larger than if every residual were AGREE_R (rounding). Otherwise the reason is named: the
iteration or evaluation limit, a line search that could not decrease the objective, disagreeing starts, a
non-finite objective.

Identification. The Jacobian of the predictions at the optimum (weighted by sqrt(w), columns scaled to unit norm)
is decomposed; a singular value below IDENT_RTOL of the largest is a direction the data cannot pin down, and the
parameters with a loading above 0.3 on it are named "not identified" (e.g. A and B in A·B/N^alpha). `condition`
is the ratio of the largest to the smallest singular value (its square is the condition number of the Gauss-Newton
matrix in those scaled coordinates).
"""

from __future__ import annotations

import numpy as np

from costlaw.fitting.minimise import STUCK_RGRAD, Problem, Run
from costlaw.fitting.objective import linearise

IDENT_RTOL = 1e-7
LOADING = 0.3


def converged(prob: Problem, best: Run, n_at_best: int, n_refined: int) -> tuple[bool, str | None]:
    """(converged, the reason it did not: None when it did)."""
    if not np.isfinite(best.fun):
        return False, "the objective is not finite at any refined start (predictions <= 0 or overflowing)"
    if best.success:
        return True, None
    agree = n_at_best >= 2 and 2 * n_at_best >= n_refined
    small = prob.loss == "l1" or best.grad_norm <= max(STUCK_RGRAD * abs(best.fun), prob.grad_floor(best.x))
    if agree and small:
        return True, None
    msg = best.message
    if "ITERATIONS REACHED LIMIT" in msg.upper():
        why = f"iteration limit reached after {best.nit} iterations"
    elif "EVALUATIONS EXCEEDS LIMIT" in msg.upper():
        why = "evaluation limit reached"
    elif msg.startswith("ABNORMAL"):
        why = "the line search could not decrease the objective"
    else:
        why = msg or "the optimiser stopped"
    return False, (f"{why} at |grad| {best.grad_norm:.2g} (objective {best.fun:.6g}); {n_at_best} of {n_refined} "
                   "refined starts reach the best" + ("" if agree else ", so they do not agree"))


def at_bounds(space, z: np.ndarray) -> list[dict]:
    """The free parameters at (within 1e-8 relative of) a bound: name, which side, the bound in natural units."""
    out = []
    for j, name in enumerate(space.free):
        lo_n, hi_n = space.natural_bounds(j)
        for side, b, nat in (("lower", space.lo[j], lo_n), ("upper", space.hi[j], hi_n)):
            if np.isfinite(b) and abs(z[j] - b) <= 1e-8 * max(1.0, abs(b)):
                out.append({"param": name, "side": side, "bound": float(nat)})
    return out


def identification(prob: Problem, z: np.ndarray, names) -> tuple[list[str], float]:
    """(names not identified, condition) at z; see the module doc."""
    with np.errstate(all="ignore"):
        _, J = linearise(prob.model, z, prob.space)
    if prob.w is not None:
        J = J * np.sqrt(prob.w)[:, None]
    if not np.all(np.isfinite(J)):
        return [], float("nan")
    norms = np.linalg.norm(J, axis=0)
    flat = [names[j] for j in np.flatnonzero(norms == 0)]
    keep = norms > 0
    if not keep.any():
        return flat, float("inf")
    _, s, Vt = np.linalg.svd(J[:, keep] / norms[keep], full_matrices=False)
    cond = float(s[0] / s[-1]) if s[-1] > 0 else float("inf")
    kept = [names[j] for j in np.flatnonzero(keep)]
    weak = set()
    for sv, v in zip(s, Vt):
        if sv <= IDENT_RTOL * s[0]:
            weak |= {kept[i] for i in np.flatnonzero(np.abs(v) > LOADING)}
    return flat + [n for n in kept if n in weak], (float("inf") if flat else cond)
