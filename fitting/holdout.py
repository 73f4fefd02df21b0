"""`holdout_largest`: fit on all but the largest runs, predict those, report relative errors.

This is the extrapolation check a recommendation quotes as its trust: in-sample R² says little about the
runs a law is asked to predict, which are larger than any it was fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import clean_json
from costlaw.fitting.data import prepare
from costlaw.fitting.fit import FitResult, fit
from costlaw.fitting.law import get_law


@dataclass
class HoldoutResult:
    """rows: one per held-out run with x (variable -> value), y_true, y_pred, rel_error = y_pred/y_true - 1
    and extrapolation = its `by` value / the largest `by` value in the training set."""

    k: int
    by: str
    threshold: float
    n_train: int
    rows: list
    max_abs_rel_error: float
    mean_abs_rel_error: float
    fit: FitResult

    def to_dict(self) -> dict:
        return clean_json({"k": self.k, "by": self.by, "threshold": self.threshold, "n_train": self.n_train,
                         "n_heldout": len(self.rows), "max_abs_rel_error": self.max_abs_rel_error,
                         "mean_abs_rel_error": self.mean_abs_rel_error, "rows": self.rows,
                         "fit": self.fit.to_dict()})


def holdout_largest(law, X, y, k: int = 2, by=0, loss: str = "huber", delta: float = 1e-3, starts=None,
                    seed: int = 0, refine: int = 10, x_names=None, y_name: str = "y") -> HoldoutResult:
    """Fit on all rows but those with the k largest values of `by`, then predict the held-out rows.

    by: a variable index, a variable name (law.variables or x_names), or an array of n values to rank by
      (e.g. compute C = 6ND for chinchilla). Rows tying the k-th largest value are held out too, so the
      training set lies strictly below the threshold and the check is a clean extrapolation.
    """
    law = get_law(law)
    X, y = prepare(law, X, y, x_names, y_name)
    names = list(x_names) if x_names is not None else list(law.variables)
    if isinstance(by, str):
        if by in names:
            by = names.index(by)
        elif by in law.variables:
            by = law.variables.index(by)
        else:
            raise CostlawError(f"holdout by: {by!r} is not one of {', '.join(names)}; name a variable or pass "
                               "an array of values")
    if isinstance(by, (int, np.integer)):
        if not 0 <= by < X.shape[1]:
            raise CostlawError(f"holdout by: variable index {by} out of range for {X.shape[1]} variable(s)")
        label, key = names[by], X[:, by]
    else:
        key = np.asarray(by, dtype=float)
        label = "values"
        if key.shape != y.shape or not np.all(np.isfinite(key)):
            raise CostlawError(f"holdout by: need {len(y)} finite values, got shape {key.shape}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise CostlawError(f"holdout: k must be a positive integer, got {k!r}")
    if k >= len(y):
        raise CostlawError(f"holdout: k = {k} leaves no training rows out of {len(y)}; use a smaller k")
    threshold = float(np.sort(key)[-k])
    test = key >= threshold
    train = ~test
    if train.sum() < len(law.params):
        raise CostlawError(f"holdout: {int(train.sum())} training rows below {label} = {threshold:g} for the "
                           f"{len(law.params)} parameters of {law.name}; use a smaller k")
    res = fit(law, X[train], y[train], loss=loss, delta=delta, starts=starts, seed=seed, refine=refine,
              x_names=names, y_name=y_name)
    pred = res.predict(X[test])
    top = float(key[train].max())
    rows = [{"x": {n: float(v) for n, v in zip(names, X[i])}, "y_true": float(y[i]), "y_pred": float(p),
             "rel_error": float(p / y[i] - 1.0), "extrapolation": float(key[i] / top)}
            for i, p in zip(np.flatnonzero(test), pred)]
    rows.sort(key=lambda r: r["extrapolation"])
    err = np.abs([r["rel_error"] for r in rows])
    return HoldoutResult(k=int(k), by=label, threshold=threshold, n_train=int(train.sum()), rows=rows,
                         max_abs_rel_error=float(err.max()), mean_abs_rel_error=float(err.mean()), fit=res)
