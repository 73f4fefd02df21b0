"""Robust objectives on log residuals r = log y - log ŷ, summed over points (optionally weighted).

- huber: scipy.special.huber(delta, r) = r²/2 for |r| <= delta, else delta·(|r| - delta/2) (Hoffmann et al.,
  Epoch, OLMo, all summed, not averaged: the mean is what stalled Hoffmann's optimiser).
- l2: r²/2 (Huber with delta -> inf).
- l1: |r| (least absolute deviation; Epoch's headline fit is in effect this). Not differentiable at r = 0,
  so it is minimised through Huber smoothing (see fitting/fit.py) and reported as the plain sum of |r|.
"""

from __future__ import annotations

import numpy as np

LOSSES = ("huber", "l2", "l1")

# Rows of the start grid evaluated per numpy pass: bounds memory to ~8 * terms * _CHUNK_CELLS bytes.
_CHUNK_CELLS = 2_000_000


def rho(r: np.ndarray, loss: str, delta: float) -> np.ndarray:
    """Per-point loss."""
    if loss == "huber":
        c = np.clip(r, -delta, delta)
        return c * (r - 0.5 * c)
    if loss == "l2":
        return 0.5 * r * r
    return np.abs(r)


def objective_many(model, Theta: np.ndarray, logy: np.ndarray, w, loss: str, delta: float) -> np.ndarray:
    """The objective at every row of Theta (m, p), a chunk of rows per vectorised pass; inf where not finite."""
    m, n = len(Theta), len(logy)
    step = max(1, _CHUNK_CELLS // max(n, 1))
    out = np.empty(m)
    with np.errstate(all="ignore"):
        for i in range(0, m, step):
            r = logy - model.log_predict(Theta[i:i + step])
            out[i:i + step] = rho(r, loss, delta) @ (np.ones(n) if w is None else w)
    out[~np.isfinite(out)] = np.inf
    return out


def value_and_grad(model, theta: np.ndarray, logy: np.ndarray, w, loss: str, delta: float):
    """(objective, gradient) at theta; loss is 'huber' or 'l2' (l1 is minimised through Huber)."""
    g, J = model.linearise(theta)
    r = logy - g
    c = np.minimum(np.maximum(r, -delta), delta) if loss == "huber" else r  # np.clip's wrapper is slower
    wc = c if w is None else w * c
    return float(wc @ (r - 0.5 * c)), -(J.T @ wc)
