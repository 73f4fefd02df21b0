"""The built-in laws, registered on import: power-plus-constant, gqa-size, chinchilla, compute, linear.

Parameterisation choices (all fitted as LSE of power terms, see fitting/lse.py):
- Amplitudes and constants are fitted as logs, so they are > 0 and every prediction is > 0 (log residuals
  need that). The constant can still approach 0 (its log runs to -inf where the data show no floor).
  So power-plus-constant's c >= 0 holds by construction (c > 0, c -> 0 as a limit), and its a > 0:
  a curve rising towards its asymptote from below (a < 0) is outside the form.
- Exponents are unbounded, as in Epoch's replication: the optimum is interior on real data, bounds would
  only hide a degenerate fit, and a sign flip is a finding worth seeing. power-plus-constant's b takes
  either sign (the GQA paper's loss-vs-heads exponents are negative).
- gqa-size L = (a/N)^b + E is fitted as LSE(c - b·log N, log E) with c = b·log a, which is affine (the
  a-and-b product form couples them badly); a = exp(c/b) is recovered after the fit.
- linear y = a + b·x is log y = LSE(log a, log b + log x): the same log-sum-exp arithmetic, but its exponent
  is fixed at 1, which an `LSELaw` term cannot hold (every log x there is multiplied by a fitted parameter),
  so it is a plain `Law` with its own vectorised prediction and analytic Jacobian. a, b >= 0 as above
  (a -> 0 as a limit): it is for costs that grow with x, such as memory and time against context length.
- Default grids: Epoch's 4,500-start grid for chinchilla; data-centred grids for the one-variable laws
  (see `power_grid`, `linear_grid`), which do not depend on the units of x.
"""

from __future__ import annotations

import numpy as np

from costlaw.fitting.law import Law, register_law
from costlaw.fitting.lse import LSELaw, power_grid

_EXPONENTS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)

# Epoch's "replicate exactly" grid (analyzing-chinchilla, data_analysis.ipynb cell 18): 6*6*5*5*5 = 4500.
CHINCHILLA_GRID = {"log_A": np.arange(0.0, 30.0, 5.0), "log_B": np.arange(0.0, 30.0, 5.0),
                   "log_E": np.arange(-1.0, 1.01, 0.5), "alpha": np.arange(0.0, 2.01, 0.5),
                   "beta": np.arange(0.0, 2.01, 0.5)}


def _exp(x):
    with np.errstate(over="ignore"):
        return np.exp(x)


def _above_floor(key):
    return lambda p, y: y > p[key]


POWER_PLUS_CONSTANT = LSELaw(
    "power-plus-constant", ("x",), ("a", "b", "c"),
    terms=[(0, ((1, 0, 1.0),)), (2, ())],
    theta_names=("log_a", "b", "log_c"),
    to_params=lambda t: {"a": _exp(t[..., 0]), "b": t[..., 1], "c": _exp(t[..., 2])},
    from_params=lambda p: np.array([np.log(p["a"]), p["b"], np.log(p["c"])]),
    grid=lambda F, logy: power_grid(F, logy, [-k for k in _EXPONENTS[::-1]] + list(_EXPONENTS), 1.0),
    inverse=lambda p, y: ((y - p["c"]) / p["a"]) ** (1.0 / p["b"]),
    reachable=_above_floor("c"),
    scales=("log", "identity", "log"),
    formula="l(x) = a*x^b + c",
)


def _gqa_params(t):
    b = t[..., 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a = np.exp(t[..., 0] / b)
    return {"a": a, "b": b, "E": _exp(t[..., 2])}


GQA_SIZE = LSELaw(
    "gqa-size", ("N",), ("a", "b", "E"),
    terms=[(0, ((1, 0, -1.0),)), (2, ())],
    theta_names=("b_log_a", "b", "log_E"),
    to_params=_gqa_params,
    from_params=lambda p: np.array([p["b"] * np.log(p["a"]), p["b"], np.log(p["E"])]),
    grid=lambda F, logy: power_grid(F, logy, _EXPONENTS, -1.0),
    inverse=lambda p, y: p["a"] / (y - p["E"]) ** (1.0 / p["b"]),
    reachable=_above_floor("E"),
    scales=(None, "identity", "log"),  # a enters only as b·log a
    formula="L(N) = (a/N)^b + E",
)


def _opt_exponent(num):
    return lambda p: p[num] / (p["alpha"] + p["beta"])


CHINCHILLA = LSELaw(
    "chinchilla", ("N", "D"), ("A", "B", "E", "alpha", "beta"),
    terms=[(0, ((3, 0, -1.0),)), (1, ((4, 1, -1.0),)), (2, ())],
    theta_names=("log_A", "log_B", "log_E", "alpha", "beta"),
    to_params=lambda t: {"A": _exp(t[..., 0]), "B": _exp(t[..., 1]), "E": _exp(t[..., 2]),
                         "alpha": t[..., 3], "beta": t[..., 4]},
    from_params=lambda p: np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]]),
    grid=CHINCHILLA_GRID,
    scales=("log", "log", "log", "identity", "identity"),
    # Hoffmann's compute-optimal exponents: N_opt ∝ C^a with a = beta/(alpha+beta), D_opt ∝ C^b.
    derived={"N_opt_exponent": _opt_exponent("beta"), "D_opt_exponent": _opt_exponent("alpha")},
    formula="L(N, D) = E + A/N^alpha + B/D^beta",
)


COMPUTE = LSELaw(
    "compute", ("C",), ("A", "E", "alpha"),
    terms=[(0, ((2, 0, -1.0),)), (1, ())],
    theta_names=("log_A", "log_E", "alpha"),
    to_params=lambda t: {"A": _exp(t[..., 0]), "E": _exp(t[..., 1]), "alpha": t[..., 2]},
    from_params=lambda p: np.array([np.log(p["A"]), np.log(p["E"]), p["alpha"]]),
    grid=lambda F, logy: power_grid(F, logy, _EXPONENTS, -1.0)[:, [0, 2, 1]],
    inverse=lambda p, y: (p["A"] / (y - p["E"])) ** (1.0 / p["alpha"]),
    reachable=_above_floor("E"),
    scales=("log", "log", "identity"),
    formula="L(C) = E + A*C^-alpha",
)


def _linear_log_predict(Theta, F):
    return np.logaddexp(Theta[:, :1], Theta[:, 1:2] + F[:, 0])


def _linear_jacobian(theta, F):
    b_term = theta[1] + F[:, 0]
    g = np.logaddexp(theta[0], b_term)
    w = np.exp(b_term - g)  # the b·x term's share of the prediction
    return g, np.column_stack([1.0 - w, w])


def linear_grid(F: np.ndarray, logy: np.ndarray,
                const_fracs=(1e-3, 0.1, 0.3, 0.5, 0.7, 0.9), offsets=(-0.5, 0.0, 0.5)) -> np.ndarray:
    """Starts (log a, log b) for y = a + b·x centred on the data: a a fraction of the smallest y, b the
    median slope (y - a)/x that leaves, shifted by `offsets` in log. The smallest fraction starts proportional
    data (a -> 0) near their optimum; smaller ones leave log a so flat (its gradient is ~a/y) that L-BFGS-B
    crawls to its evaluation limit."""
    x, y = np.exp(F[:, 0]), np.exp(logy)
    rows = []
    for q in const_fracs:
        a = q * y.min()
        log_b = np.log(np.median((y - a) / x))
        rows += [(np.log(a), log_b + o) for o in offsets]
    return np.array(rows)


LINEAR = Law(
    "linear", ("x",), ("a", "b"), _linear_log_predict, jacobian=_linear_jacobian,
    theta_names=("log_a", "log_b"),
    to_params=lambda t: {"a": _exp(t[..., 0]), "b": _exp(t[..., 1])},
    from_params=lambda p: np.array([np.log(p["a"]), np.log(p["b"])]),
    grid=linear_grid,
    inverse=lambda p, y: (y - p["a"]) / p["b"],
    reachable=_above_floor("a"),
    scales=("log", "log"),
    formula="y(x) = a + b*x",
)


def chinchilla_optimal(params, C):
    """Compute-optimal (N*, D*) under C = 6·N·D for chinchilla params (Hoffmann et al. eq. 4)."""
    A, B, alpha, beta = (np.asarray(params[k], dtype=float) for k in ("A", "B", "alpha", "beta"))
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    N = G * (np.asarray(C, dtype=float) / 6.0) ** (beta / (alpha + beta))
    return N, np.asarray(C, dtype=float) / (6.0 * N)


for _law in (POWER_PLUS_CONSTANT, GQA_SIZE, CHINCHILLA, COMPUTE, LINEAR):
    register_law(_law)
