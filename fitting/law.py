"""`Law`: a named scaling-law form with named parameters, and the registry that names them.

A law is fitted in its own *fit space* `theta` (e.g. log A instead of A, so amplitudes stay positive and the
prediction is a log-sum-exp), but users read and pass its *natural* parameters (`law.params`). Everything the
fitter needs from a law is:

- `law.bind(F)` for features `F = law.features(X)`: a model with `log_predict(Theta (m, p)) -> (m, n)` (all
  starts in one pass) and `linearise(theta (p,)) -> (log_pred (n,), J (n, p))` (the analytic Jacobian);
- `law.start_grid(F, logy) -> (m, p)`: default starts in fit space;
- `law.theta_of(params)` / `law.params_of(theta)`: natural <-> fit space; `params_of` is vectorised over
  leading axes (bootstrap samples);
- `law.scales`: per natural parameter, how its fit-space coordinate relates to it: "log" (theta = log p),
  "identity" (theta = p) or None (it enters fit space only jointly with others, e.g. gqa-size fits b·log a).
  Fixing, tying and bounding a parameter (fitting/constraints.py) need its scale.

A bound model also gives `predict(Theta)` and `linearise_raw(theta) -> (pred, d pred / d theta)` for residuals
on y itself (fit(..., residuals="raw")); `LogModel` derives them from the log forms.

Register a user form with `register_law(Law(...))`. A minimal example, a pure power law L = A·x^k fitted as
log L = log A + k·log x::

    import numpy as np
    from costlaw.fitting import Law, register_law

    def log_predict(theta, F):             # theta (m, 2), F = log X (n, 1) -> (m, n)
        return theta[:, :1] + theta[:, 1:2] * F[:, 0]

    def jacobian(theta, F):                # -> log_pred (n,), d log_pred / d theta (n, 2)
        return theta[0] + theta[1] * F[:, 0], np.column_stack([np.ones(len(F)), F[:, 0]])

    register_law(Law("pure-power", ("x",), ("A", "k"), log_predict, jacobian=jacobian,
                     theta_names=("log_A", "k"),
                     to_params=lambda t: {"A": np.exp(t[..., 0]), "k": t[..., 1]},
                     from_params=lambda p: np.array([np.log(p["A"]), p["k"]]),
                     grid={"log_A": [0.0, 1.0, 2.0], "k": [-1.0, -0.5, -0.1]},
                     formula="L = A*x^k"))

Without `jacobian` the fitter uses central differences (slower, less exact). Sums of power terms plus a
constant are better built with `fitting.lse.LSELaw`, which supplies the Jacobian and a data-centred grid.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import numpy as np

from costlaw.costmodel.core.errors import CostlawError


class Law:
    """A named law. `variables` name the columns of X in order; `params` name the natural parameters.

    Arguments beyond the three names:
      log_predict(Theta (m, p), F (n, k)) -> (m, n): log of the prediction for m fit-space parameter vectors.
      jacobian(theta (p,), F) -> (log_pred (n,), J (n, p)); None: central differences.
      theta_names: fit-space names (default: the natural names, fitted directly).
      to_params(theta (..., p)) -> {name: array (...)}; from_params(dict) -> theta (p,). Default identity.
      grid: default starts in fit space: a dict theta_name -> values (their product), an (m, p) array, or a
        callable (F, logy) -> (m, p) for data-centred grids.
      bounds: per fit-space parameter (lo, hi), None for unbounded; passed to L-BFGS-B.
      inverse: (params, y) -> x for single-variable laws (vectorised over array-valued params).
      reachable: (params, y) -> bool array, False where y can never be reached (y <= the law's floor).
      derived: name -> callable(params dict) -> float; reported with bootstrap intervals by default.
      log_x: the model sees log X (and X must be > 0); False passes X unchanged.
      scales: per natural parameter "log", "identity" or None (see the module doc); default: "identity" for every
        parameter when fit space is the natural one (no to_params), else None (the law cannot be constrained).
    """

    def __init__(self, name: str, variables: tuple[str, ...], params: tuple[str, ...],
                 log_predict: Callable, *, jacobian: Callable | None = None,
                 theta_names: tuple[str, ...] | None = None, to_params: Callable | None = None,
                 from_params: Callable | None = None, grid=None, bounds=None, inverse: Callable | None = None,
                 reachable: Callable | None = None, derived: Mapping[str, Callable] | None = None,
                 formula: str = "", log_x: bool = True, scales=None):
        if not name or not isinstance(name, str):
            raise CostlawError("law.name: must be a non-empty string; name the form, e.g. 'pure-power'")
        self.name = name
        self.variables = tuple(variables)
        self.params = tuple(params)
        self.theta_names = tuple(theta_names) if theta_names is not None else self.params
        if not self.variables or not self.params:
            raise CostlawError(f"law {name}: needs at least one variable and one parameter")
        if len(self.theta_names) != len(self.params):
            raise CostlawError(f"law {name}: {len(self.theta_names)} fit-space names for {len(self.params)} "
                               "parameters; give one theta name per parameter")
        if (to_params is None) != (from_params is None):
            raise CostlawError(f"law {name}: give both to_params and from_params, or neither")
        self._log_predict = log_predict
        self._jacobian = jacobian
        self._to_params = to_params
        self.natural = to_params is None  # fitted in natural units (refinements then scale by the Jacobian)
        self._from_params = from_params
        self._grid = grid
        self.bounds = None if bounds is None else tuple((lo, hi) for lo, hi in bounds)
        if self.bounds is not None and len(self.bounds) != len(self.params):
            raise CostlawError(f"law {name}: {len(self.bounds)} bounds for {len(self.params)} parameters")
        self._inverse = inverse
        self._reachable = reachable
        self.derived = dict(derived or {})
        self.formula = formula
        self.log_x = log_x
        if scales is None:
            scales = ("identity",) * len(self.params) if to_params is None else (None,) * len(self.params)
        self.scales = tuple(scales)
        if len(self.scales) != len(self.params) or any(s not in ("log", "identity", None) for s in self.scales):
            raise CostlawError(f"law {name}: scales must give 'log', 'identity' or None for each of "
                               f"{len(self.params)} parameters, got {scales!r}")

    def __repr__(self) -> str:
        return f"Law({self.name!r}, variables={self.variables}, params={self.params})"

    # ---- spaces -------------------------------------------------------------------------------------

    def features(self, X: np.ndarray) -> np.ndarray:
        """What the model sees: log X by default."""
        X = np.asarray(X, dtype=float)
        return np.log(X) if self.log_x else X

    def params_of(self, theta) -> dict:
        """Natural parameters of fit-space theta (..., p); floats for one vector, arrays for many."""
        theta = np.asarray(theta, dtype=float)
        if self._to_params is None:
            out = {k: theta[..., i] for i, k in enumerate(self.params)}
        else:
            out = self._to_params(theta)
        return {k: (float(v) if np.ndim(v) == 0 else np.asarray(v, dtype=float)) for k, v in out.items()}

    def theta_of(self, params: Mapping) -> np.ndarray:
        """Fit-space vector of natural parameters (a dict with every name in `law.params`)."""
        missing = [k for k in self.params if k not in params]
        if missing:
            raise CostlawError(f"params: {self.name} needs {', '.join(missing)}; give every one of "
                               f"{', '.join(self.params)}")
        vals = {k: float(params[k]) for k in self.params}
        with np.errstate(all="ignore"):
            theta = (np.array([vals[k] for k in self.params]) if self._from_params is None
                     else np.asarray(self._from_params(vals), dtype=float))
        if not np.all(np.isfinite(theta)):
            raise CostlawError(f"params: {vals} is outside the {self.name} form (fit-space value not finite); "
                               "check signs: amplitudes and constants must be > 0")
        return theta

    # ---- model --------------------------------------------------------------------------------------

    def bind(self, F: np.ndarray) -> _CallableModel:
        """The model on features F: `log_predict(Theta)` and `linearise(theta)`."""
        return _CallableModel(self, np.asarray(F, dtype=float))

    def start_grid(self, F: np.ndarray, logy: np.ndarray) -> np.ndarray:
        """Default starts (m, p) in fit space."""
        g = self._grid
        if g is None:
            raise CostlawError(f"starts: law {self.name} has no default grid; pass starts=[{{...}}] or an array")
        if callable(g):
            out = g(F, logy)
        elif isinstance(g, Mapping):
            missing = [k for k in self.theta_names if k not in g]
            if missing:
                raise CostlawError(f"law {self.name}: grid lacks {', '.join(missing)}")
            out = list(itertools.product(*(np.atleast_1d(np.asarray(g[k], float)) for k in self.theta_names)))
        else:
            out = g
        return np.atleast_2d(np.asarray(out, dtype=float))

    def predict(self, params: Mapping, X) -> np.ndarray:
        """Predicted y at X (n, k) (or (n,) for one variable) from natural parameters (floats; for
        bootstrap samples use BootstrapResult.predict_samples)."""
        return self.predict_theta(self.theta_of(params), X)

    def predict_theta(self, theta, X) -> np.ndarray:
        """Predicted y at X from fit-space theta (p,), or (m, n) predictions from thetas (m, p)."""
        theta = np.asarray(theta, dtype=float)
        X = _as_2d(X, len(self.variables))
        with np.errstate(all="ignore"):
            out = self.bind(self.features(X)).predict(np.atleast_2d(theta))
        return out[0] if theta.ndim == 1 else out

    @property
    def invertible(self) -> bool:
        return self._inverse is not None

    def inverse(self, params: Mapping, y, strict: bool = True):
        """The x at which the law reaches loss y (single-variable laws), e.g. gqa-size N* = a/(y-E)^(1/b).

        `params` may hold floats or equal-length arrays (bootstrap samples), and y may be an array too;
        the result broadcasts. strict: raise CostlawError if any y is unreachable (y <= the law's floor);
        otherwise unreachable entries are +inf (never reached at any finite x).
        """
        if self._inverse is None:
            if len(self.variables) == 1:
                raise CostlawError(f"inverse: law {self.name} has no closed-form inverse; ask for targets with a "
                                   "built-in law of one variable (gqa-size, power-plus-constant, compute, linear)")
            raise CostlawError(f"inverse: law {self.name} has {len(self.variables)} variables "
                               f"({', '.join(self.variables)}) and no inverse; inverse needs one variable")
        y = np.asarray(y, dtype=float)
        p = {k: np.asarray(params[k], dtype=float) for k in self.params if k in params}
        ok = np.broadcast_to(self._reachable(p, y), np.broadcast_shapes(y.shape, *(v.shape for v in p.values())))
        if strict and not np.all(ok):
            floor = self.reachable_floor(p)
            raise CostlawError(f"target loss: {np.asarray(y).ravel()[0]:.6g} is unreachable for {self.name} "
                               f"(its floor is {floor}); ask for a loss above the floor")
        with np.errstate(all="ignore"):
            x = np.where(ok, self._inverse(p, y), np.inf)
        return float(x) if x.ndim == 0 else x

    def reachable_floor(self, params: Mapping) -> str:
        """A short description of the loss floor, for error messages."""
        for k in ("E", "c"):
            if k in params:
                v = np.asarray(params[k])
                return f"{k} = {float(v):.6g}" if v.ndim == 0 else f"{k} up to {float(np.max(v)):.6g}"
        return "unknown"

    def describe(self) -> dict:
        return {"name": self.name, "variables": list(self.variables), "params": list(self.params),
                "theta": list(self.theta_names), "formula": self.formula}


class LogModel:
    """Raw-space predictions of a model that computes log predictions (every built-in law): ŷ = exp(log ŷ)."""

    def predict(self, Theta: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(self.log_predict(Theta))

    def linearise_raw(self, theta: np.ndarray):
        g, J = self.linearise(theta)
        with np.errstate(over="ignore", under="ignore"):
            pred = np.exp(g)
        return pred, J * pred[:, None]


class _CallableModel(LogModel):
    """A law bound to data through its user callables (central differences when no Jacobian)."""

    def __init__(self, law: Law, F: np.ndarray):
        self.law, self.F = law, F

    def log_predict(self, Theta: np.ndarray) -> np.ndarray:
        return np.asarray(self.law._log_predict(np.atleast_2d(Theta), self.F), dtype=float)

    def linearise(self, theta: np.ndarray):
        if self.law._jacobian is not None:
            g, J = self.law._jacobian(theta, self.F)
            return np.asarray(g, dtype=float), np.asarray(J, dtype=float)
        # Central differences: one batched call of 2p+1 parameter vectors.
        h = 1e-6 * np.maximum(1.0, np.abs(theta))
        steps = np.diag(h)
        out = self.log_predict(np.vstack([theta, theta + steps, theta - steps]))
        p = len(theta)
        return out[0], ((out[1:p + 1] - out[p + 1:]) / (2 * h[:, None])).T


def _as_2d(X, k: int) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim == 1 and k == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[1] != k:
        raise CostlawError(f"x: expected {k} column(s), got an array of shape {X.shape}; "
                           "pass one column per law variable")
    return X


_REGISTRY: dict[str, Law] = {}


def register_law(law: Law, replace: bool = False) -> Law:
    """Add a law to the registry so `get_law(name)` and `costlaw fit --law NAME` find it."""
    if not isinstance(law, Law):
        raise CostlawError(f"register_law: expected a fitting.Law, got {type(law).__name__}")
    if law.name in _REGISTRY and not replace:
        raise CostlawError(f"law: {law.name!r} is already registered; pick another name or pass replace=True")
    _REGISTRY[law.name] = law
    return law


def unregister_law(name: str) -> None:
    """Remove a registered law (user forms in notebooks and tests; a missing name is an error)."""
    if name not in _REGISTRY:
        raise CostlawError(f"law: {name!r} is not registered")
    del _REGISTRY[name]


def get_law(name) -> Law:
    """The registered law called `name` (a Law passes through)."""
    if isinstance(name, Law):
        return name
    if isinstance(name, str) and name not in _REGISTRY and name.startswith("formula("):
        from costlaw.fitting.formula import formula_law, parse_name

        parsed = parse_name(name)
        if parsed is not None:
            return register_law(formula_law(*parsed, where="law"))
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise CostlawError(f"law: unknown law {name!r}; choose one of {', '.join(sorted(_REGISTRY))}") from None


def laws() -> dict[str, Law]:
    """Registered laws by name (a copy)."""
    return dict(_REGISTRY)
