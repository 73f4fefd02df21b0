"""Robust objectives on residuals, summed over points, optionally weighted.

Residuals r: "log" (the default) r = log y - log ŷ, a relative error, which needs y > 0 and ŷ > 0; "raw" r = y - ŷ,
in the units of y, for data that may be <= 0 or laws whose prediction may be (accuracy rising towards 1).

- huber: scipy.special.huber(delta, r) = r²/2 for |r| <= delta, else delta·(|r| - delta/2) (Hoffmann et al.,
  Epoch, OLMo, all summed, not averaged: the mean is what stalled Hoffmann's optimiser). delta is in the units
  of r: relative for log residuals, y's units for raw ones.
- l2: r²/2 (Huber with delta -> inf): the objective is HALF the sum of squares.
- l1: |r| (least absolute deviation; Epoch's headline fit is in effect this). Not differentiable at r = 0,
  so it is minimised through Huber smoothing (see fitting/fit.py) and reported as the plain sum of |r|.

Weights w multiply each point's loss: the objective is sum w_i·rho(r_i). For l2 that multiplies the squared
residual, so w = 1/sigma² with raw residuals and l2 is scipy's curve_fit(sigma=sigma, absolute_sigma=True) objective
(chi² = sum((y - ŷ)/sigma)²), halved. Bootstrap resample counts enter the same way (a point drawn twice has w 2).
"""

from __future__ import annotations

import numpy as np

LOSSES = ("huber", "l2", "l1")
RESIDUALS = ("log", "raw")

# Rows of the start grid evaluated per numpy pass: bounds memory to ~8 * terms * _CHUNK_CELLS bytes.
_CHUNK_CELLS = 2_000_000


def definition(loss: str, delta: float, residuals: str = "log", weighted: bool = False) -> str:
    """The objective in words and symbols, printed beside its value."""
    r = "log y - log ŷ" if residuals == "log" else "y - ŷ"
    w = "w·" if weighted else ""
    if loss == "huber":
        body = f"sum {w}huber(r), huber(r) = r²/2 if |r| <= {delta:g} else {delta:g}·(|r| - {delta:g}/2)"
    elif loss == "l2":
        body = f"sum {w}r²/2 (half the sum of squares)"
    else:
        body = f"sum {w}|r|"
    return f"{body}; r = {r}"


def rho(r: np.ndarray, loss: str, delta: float) -> np.ndarray:
    """Per-point loss."""
    if loss == "huber":
        c = np.clip(r, -delta, delta)
        return c * (r - 0.5 * c)
    if loss == "l2":
        return 0.5 * r * r
    return np.abs(r)


def predict_many(model, Theta: np.ndarray, space: str) -> np.ndarray:
    """(m, n) predictions in the residuals' space: log ŷ or ŷ."""
    return model.log_predict(Theta) if space == "log" else model.predict(Theta)


def objective_many(model, Theta: np.ndarray, target: np.ndarray, w, loss: str, delta: float,
                   space: str = "log") -> np.ndarray:
    """The objective at every row of Theta (m, p), a chunk of rows per vectorised pass; inf where not finite.
    target: log y for log residuals, y for raw ones."""
    m, n = len(Theta), len(target)
    step = max(1, _CHUNK_CELLS // max(n, 1))
    out = np.empty(m)
    with np.errstate(all="ignore"):
        for i in range(0, m, step):
            r = target - predict_many(model, Theta[i:i + step], space)
            out[i:i + step] = rho(r, loss, delta) @ (np.ones(n) if w is None else w)
    out[~np.isfinite(out)] = np.inf
    return out


def linearise(model, theta: np.ndarray, space: str):
    """(prediction in the residuals' space, its Jacobian (n, p)) at theta."""
    return model.linearise(theta) if space == "log" else model.linearise_raw(theta)


def value_and_grad(model, theta: np.ndarray, target: np.ndarray, w, loss: str, delta: float, space: str = "log"):
    """(objective, gradient) at theta; loss is 'huber' or 'l2' (l1 is minimised through Huber)."""
    g, J = model.linearise(theta) if space == "log" else model.linearise_raw(theta)
    r = target - g
    c = np.minimum(np.maximum(r, -delta), delta) if loss == "huber" else r  # np.clip's wrapper is slower
    wc = c if w is None else w * c
    return float(wc @ (r - 0.5 * c)), -(J.T @ wc)
