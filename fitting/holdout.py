"""`holdout_largest` / `holdout_rows`: fit on all but the largest runs (or any chosen rows), predict those,
report relative (and absolute) errors.

This is the extrapolation check a recommendation quotes as its trust: in-sample R² says little about the
runs a law is asked to predict, which are larger than any it was fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import clean_json
from costlaw.fitting.constraints import Space
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
                    seed: int = 0, refine: int = 10, x_names=None, y_name: str = "y", **fit_kwargs) -> HoldoutResult:
    """Fit on all rows but those with the k largest values of `by`, then predict the held-out rows.

    by: a variable index, a variable name (law.variables or x_names), or an array of n values to rank by
      (e.g. compute C = 6ND for chinchilla). Rows tying the k-th largest value are held out too, so the
      training set lies strictly below the threshold and the check is a clean extrapolation.
    fit_kwargs: the rest of `fit`'s settings (residuals, weights, fix, tie, bounds, init, ...).
    """
    law = get_law(law)
    X, y = prepare(law, X, y, x_names, y_name, fit_kwargs.get("residuals", "log"), n_params=0)
    names = list(x_names) if x_names is not None else list(law.variables)
    label, key = _ranking(law, X, y, by, names)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise CostlawError(f"holdout: k must be a positive integer, got {k!r}")
    if k >= len(y):
        raise CostlawError(f"holdout: k = {k} leaves no training rows out of {len(y)}; use a smaller k")
    threshold = float(np.sort(key)[-k])
    test = key >= threshold
    return _holdout(law, X, y, test, key, label, threshold, int(k), names, y_name,
                    dict(loss=loss, delta=delta, starts=starts, seed=seed, refine=refine, **fit_kwargs))


def holdout_rows(law, X, y, test, by=0, x_names=None, y_name: str = "y", label: str = "rows", **fit_kwargs) \
        -> HoldoutResult:
    """Fit on the rows where `test` (a boolean (n,) mask) is False, predict those where it is True.

    by: as for holdout_largest; it only sets each held-out row's `extrapolation` (its value over the training
    set's largest). label: how the selection is named (e.g. the --holdout-where expression).
    """
    law = get_law(law)
    X, y = prepare(law, X, y, x_names, y_name, fit_kwargs.get("residuals", "log"), n_params=0)
    names = list(x_names) if x_names is not None else list(law.variables)
    _, key = _ranking(law, X, y, by, names)
    test = np.asarray(test, dtype=bool)
    if test.shape != y.shape:
        raise CostlawError(f"holdout: the selection has {test.shape} values for {len(y)} rows; give one per row")
    if not test.any():
        raise CostlawError(f"holdout: {label} selects no rows; select the rows to predict")
    if test.all():
        raise CostlawError(f"holdout: {label} selects every row; leave some to fit on")
    return _holdout(law, X, y, test, key, label, float("nan"), int(test.sum()), names, y_name, fit_kwargs)


def _ranking(law, X, y, by, names):
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
        return names[by], X[:, by]
    key = np.asarray(by, dtype=float)
    if key.shape != y.shape or not np.all(np.isfinite(key)):
        raise CostlawError(f"holdout by: need {len(y)} finite values, got shape {key.shape}")
    return "values", key


def _holdout(law, X, y, test, key, label, threshold, k, names, y_name, kw) -> HoldoutResult:
    train = ~test
    weights = kw.pop("weights", None)
    n_free = len(Space(law, kw.get("fix"), kw.get("tie"), kw.get("bounds")).free)
    if train.sum() < n_free:
        raise CostlawError(f"holdout: {int(train.sum())} training rows for the {n_free} free parameters of "
                           f"{law.name}; hold out fewer rows")
    w_train = None if weights is None else np.asarray(weights, dtype=float)[train]
    res = fit(law, X[train], y[train], x_names=names, y_name=y_name, weights=w_train, **kw)
    pred = res.predict(X[test])
    top = float(key[train].max())
    rows = [{"x": {n: float(v) for n, v in zip(names, X[i])}, "y_true": float(y[i]), "y_pred": float(p),
             "rel_error": float(p / y[i] - 1.0) if y[i] != 0 else float("nan"),
             "abs_error": float(p - y[i]), "extrapolation": float(key[i] / top) if top else float("nan")}
            for i, p in zip(np.flatnonzero(test), pred)]
    rows.sort(key=lambda r: (r["extrapolation"], r["y_true"]))
    err = np.abs([r["rel_error"] for r in rows])
    return HoldoutResult(k=k, by=label, threshold=threshold, n_train=int(train.sum()), rows=rows,
                         max_abs_rel_error=float(np.nanmax(err)) if np.isfinite(err).any() else float("nan"),
                         mean_abs_rel_error=float(np.nanmean(err)) if np.isfinite(err).any() else float("nan"),
                         fit=res)
