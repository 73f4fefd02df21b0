"""A shape-aware law to test against L(N): `costlaw validate --law gqa-size-shape`.

    L(N, r) = (a/N)^b · r^g + E,   r = d_model / n_layers

The reducible part scales with the aspect ratio; the floor does not (a config's shape changes how fast loss
falls with N, not where it ends). Fitted in log-sum-exp form like gqa-size: log L = LSE(b·log a - b·log N +
g·log r, log E). With every run of a candidate at one d/L, g is not identified and the law is gqa-size.

Measured against gqa-size with `costlaw validate` (numbers in analysis/validate/__init__.py): on gqa-heads-steps,
gqa-aspect and gqa-depth together it predicts held-out runs worse, and where it does better (gqa-heads-steps alone)
the gain is one candidate's whose law the guards exclude; so recommend keeps L(N) and stays inside the shapes
each candidate was trained at.
"""

from __future__ import annotations

import numpy as np

NAME = "gqa-size-shape"
_EXPONENTS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
_SHAPE = (-0.3, 0.0, 0.3)


def _params(t):
    b = t[..., 1]
    with np.errstate(all="ignore"):
        return {"a": np.exp(t[..., 0] / b), "b": b, "E": np.exp(t[..., 2]), "g": t[..., 3]}


def _grid(F, logy):
    """Data-centred starts (b·log a, b, log E, g): the floor a share of the lowest loss, the intercept matching the
    mean log of what is left at the mean log N (and at g·mean log r)."""
    y = np.exp(logy)
    rows = []
    for k in _EXPONENTS:
        for q in (1e-3, 0.25, 0.5, 0.7, 0.85, 0.95):
            E = q * y.min()
            for g in _SHAPE:
                c0 = np.mean(np.log(np.maximum(y - E, 1e-3 * y))) + k * F[:, 0].mean() - g * F[:, 1].mean()
                rows += [(c0 + o, k, np.log(E), g) for o in (-1.0, 0.0, 1.0)]
    return np.array(rows)


def register():
    """Register the law once (fitting's registry, so the group-fit pipeline can fit it)."""
    from costlaw.fitting import get_law, laws, register_law
    from costlaw.fitting.lse import LSELaw

    if NAME in laws():
        return get_law(NAME)
    return register_law(LSELaw(
        NAME, ("N", "r"), ("a", "b", "E", "g"),
        terms=[(0, ((1, 0, -1.0), (3, 1, 1.0))), (2, ())],
        theta_names=("b_log_a", "b", "log_E", "g"), to_params=_params,
        from_params=lambda p: np.array([p["b"] * np.log(p["a"]), p["b"], np.log(p["E"]), p["g"]]),
        grid=_grid, formula="L(N, r) = (a/N)^b * r^g + E, r = d/L"))
