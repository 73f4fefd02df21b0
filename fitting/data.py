"""Input checks shared by fit, bootstrap and holdout: degenerate data fail with one line naming the problem."""

from __future__ import annotations

import numpy as np

from costlaw.costmodel.core.errors import CostlawError


def prepare(law, X, y, x_names=None, y_name: str = "y"):
    """(X (n, k) float, y (n,) float) checked for `law`; CostlawError naming the column otherwise.

    x_names / y_name are what the messages call the columns (the CLI passes the data's column names).
    """
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
    if (y <= 0).any():
        raise CostlawError(f"{y_name}: {int((y <= 0).sum())} value(s) <= 0 (first at row {int(np.argmax(y <= 0))}, "
                           f"{y[np.argmax(y <= 0)]:g}); residuals are taken in log space, so y must be > 0")
    for i, name in enumerate(names):
        col = X[:, i]
        if law.log_x and (col <= 0).any():
            first = int(np.argmax(col <= 0))
            raise CostlawError(f"{name}: {int((col <= 0).sum())} value(s) <= 0 (first at row {first}, "
                               f"{col[first]:g}); law {law.name} takes log {law.variables[i]}, so it must be > 0")
    p = len(law.params)
    if len(y) < p:
        raise CostlawError(f"data: {len(y)} point(s) for the {p} parameters of {law.name}; "
                           f"need at least {p} (relax --where or pick a smaller law)")
    for i, name in enumerate(names):
        if np.ptp(X[:, i]) == 0:
            raise CostlawError(f"{name}: constant ({X[0, i]:g} in every row); a law cannot be fitted against a "
                               "constant variable; vary it or filter the rows differently")
    return X, y
