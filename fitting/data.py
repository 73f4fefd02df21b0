"""Input checks shared by fit, bootstrap and holdout: degenerate data fail with one line naming the problem."""

from __future__ import annotations

import numpy as np

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting.objective import RESIDUALS


def prepare(law, X, y, x_names=None, y_name: str = "y", residuals: str = "log", n_params: int | None = None):
    """(X (n, k) float, y (n,) float) checked for `law`; CostlawError naming the column otherwise.

    x_names / y_name are what the messages call the columns (the CLI passes the data's column names);
    residuals: "log" needs y > 0, "raw" takes any finite y; n_params: the free parameters (default: all of the law's).
    """
    if residuals not in RESIDUALS:
        raise CostlawError(f"residuals: unknown {residuals!r}; choose log (log y - log ŷ) or raw (y - ŷ)")
    k = len(law.variables)
    names = list(x_names) if x_names is not None else list(law.variables)
    try:
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
    except (TypeError, ValueError):
        raise CostlawError(f"{', '.join(names)}/{y_name}: values are not numeric; pass numeric columns") from None
    if X.ndim == 1 and k == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[1] != k:
        raise CostlawError(f"x: law {law.name} needs {k} column(s) ({', '.join(law.variables)}), got an array "
                           f"of shape {X.shape}; pass one column per variable, in that order")
    if y.ndim != 1 or len(y) != len(X):
        raise CostlawError(f"{y_name}: {y.shape} values for {len(X)} rows of x; pass one y per row")
    for col, name in [(X[:, i], names[i]) for i in range(k)] + [(y, y_name)]:
        bad = ~np.isfinite(col)
        if bad.any():
            raise CostlawError(f"{name}: {int(bad.sum())} NaN/inf value(s) (first at row {int(np.argmax(bad))}); "
                               "drop or fix those rows (e.g. --where)")
    if residuals == "log" and (y <= 0).any():
        raise CostlawError(f"{y_name}: {int((y <= 0).sum())} value(s) <= 0 (first at row {int(np.argmax(y <= 0))}, "
                           f"{y[np.argmax(y <= 0)]:g}); residuals are taken in log space, so y must be > 0 "
                           "(or fit raw residuals y - ŷ: --residuals raw)")
    for i, name in enumerate(names):
        col = X[:, i]
        if law.log_x and (col <= 0).any():
            first = int(np.argmax(col <= 0))
            raise CostlawError(f"{name}: {int((col <= 0).sum())} value(s) <= 0 (first at row {first}, "
                               f"{col[first]:g}); law {law.name} takes log {law.variables[i]}, so it must be > 0")
    p = len(law.params) if n_params is None else n_params
    if len(y) < p:
        raise CostlawError(f"data: {len(y)} point(s) for the {p} free parameters of {law.name}; "
                           f"need at least {p} (relax --where, fix parameters or pick a smaller law)")
    for i, name in enumerate(names):
        if np.ptp(X[:, i]) == 0:
            raise CostlawError(f"{name}: constant ({X[0, i]:g} in every row); a law cannot be fitted against a "
                               "constant variable; vary it or filter the rows differently")
    return X, y


def check_weights(w, n: int, name: str = "weights") -> np.ndarray | None:
    """Per-point weights: finite, >= 0, some > 0; None passes."""
    if w is None:
        return None
    try:
        w = np.asarray(w, dtype=float)
    except (TypeError, ValueError):
        raise CostlawError(f"{name}: values are not numeric; give a numeric column") from None
    if w.shape != (n,):
        raise CostlawError(f"{name}: {w.shape} values for {n} points; give one weight per point")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise CostlawError(f"{name}: {int(bad.sum())} value(s) negative or not finite (first at row {i}, {w[i]:g}); "
                           "weights multiply each point's loss and must be finite and >= 0")
    if not (w > 0).any():
        raise CostlawError(f"{name}: every weight is 0; give some point a positive weight")
    return w
