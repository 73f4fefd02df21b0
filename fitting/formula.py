"""Laws from formulas: `formula_law("E + A/N**alpha + B/D**beta", variables=("N", "D"))`.

The formula is the safe expression language (costmodel/core/expr.py: arithmetic, comparisons, and/or/not,
`a if c else b`, and the functions in dual.FUNCTIONS: exp, log, log2, log10, sqrt, abs, tanh, minimum, maximum,
where). Its free names are the variables (data columns, given) and the parameters (every other name, in order
of first use). `` `Model Size` `` quotes a column name with spaces.

Two kinds of law come out:
- a sum of power terms with positive coefficients, `c·P·x1**(±q1)·x2**(±q2)... + ...` (P an amplitude parameter
  or absent, c a positive number, q a parameter or a number, `/` allowed for the powers), becomes an `LSELaw`: fit
  space log P for amplitudes and q for exponents, the analytic Jacobian, and data-centred starts from variable
  projection (each grid point of the exponents, amplitudes by non-negative least squares; fitting/varpro.py). So
  `E + A/N**alpha + B/D**beta` is fitted exactly as the built-in chinchilla law is, grid aside.
- any other formula is fitted in natural units (every parameter as written, scale "identity"), with predictions
  evaluated by numpy and the Jacobian by forward-mode differentiation (fitting/dual.py), exact to rounding. Its
  default start is every parameter at 1 (as scipy's curve_fit); give better ones with init/--init,
  random_starts/--random-starts with start_box/--start-box, or bounds.

A formula law's name is "formula(VARS): TEXT"; `get_law` builds one from such a name, so a fits document that
names it can be read back without the formula being registered first.
"""

from __future__ import annotations

import ast
import itertools

import numpy as np

from costlaw.costmodel.core import expr as E
from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting.dual import FUNCTIONS, Dual
from costlaw.fitting.law import Law, _as_2d
from costlaw.fitting.lse import LSELaw

PREFIX = "formula("
# Exponent values of the projection grid (in the direction the formula writes: alpha in A/N**alpha), and the most
# grid points scored (a seeded subset beyond).
EXPONENTS = (-0.5, -0.1, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
MAX_GRID = 20_000
NUMPY = {k: FUNCTIONS[k] for k in FUNCTIONS}  # the Dual-aware functions work on plain arrays too


def law_name(text: str, variables) -> str:
    return f"{PREFIX}{','.join(variables)}): {text.strip()}"


def parse_name(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(formula text, variables) of a formula law's name; None for other names."""
    if not isinstance(name, str) or not name.startswith(PREFIX) or "): " not in name:
        return None
    head, _, text = name[len(PREFIX):].partition("): ")
    return text, tuple(v for v in head.split(",") if v)


def formula_law(text: str, variables, where: str = "--formula") -> Law:
    """The law of `text` over `variables` (names of its data columns, in the order X's columns come)."""
    variables = tuple(variables)
    if not variables:
        raise CostlawError(f"{where}: no variables; name the data columns the formula reads (--x)")
    expr = E.parse(text, where, functions=FUNCTIONS, constants={"pi": np.pi})
    missing = [v for v in variables if v not in expr.names]
    if missing:
        raise CostlawError(f"{where}: {text!r} does not use {', '.join(missing)}; use every --x column or drop it")
    params = tuple(n for n in expr.names if n not in variables)
    if not params:
        raise CostlawError(f"{where}: {text!r} has no parameters (every name is a data column: "
                           f"{', '.join(variables)}); name the parameters to fit, e.g. A/N**alpha + E")
    bad = [p for p in params if not p.isidentifier()]
    if bad:
        raise CostlawError(f"{where}: {bad[0]!r} is not a data column; a quoted name must be a column of the data")
    name = law_name(text, variables)
    lse = _as_lse(expr, variables, params)
    if lse is not None:
        return lse_law(name, text, variables, params, *lse)
    return FormulaLaw(name, text, expr, variables, params)


class FormulaLaw(Law):
    """A formula fitted in natural units (module doc)."""

    def __init__(self, name, text, expr, variables, params):
        self.expr = expr
        super().__init__(name, variables, params, self._log_predict, log_x=False, formula=text,
                         grid=lambda F, logy: np.ones((1, len(params))), scales=("identity",) * len(params))

    def _log_predict(self, Theta, F):
        return self.bind(F).log_predict(Theta)

    def bind(self, F: np.ndarray) -> FormulaModel:
        return FormulaModel(self, np.asarray(F, dtype=float))

    def predict_theta(self, theta, X):
        theta = np.asarray(theta, dtype=float)
        X = _as_2d(X, len(self.variables))
        with np.errstate(all="ignore"):
            out = self.bind(X).predict(np.atleast_2d(theta))
        return out[0] if theta.ndim == 1 else out


class FormulaModel:
    """A formula law bound to data X: predictions for many parameter vectors at once, the Jacobian by Duals."""

    def __init__(self, law: FormulaLaw, F: np.ndarray):
        self.law, self.F = law, F
        self.cols = {v: F[:, i] for i, v in enumerate(law.variables)}
        self.index = {p: i for i, p in enumerate(law.params)}

    def _eval(self, params: dict):
        def lookup(name):
            return self.cols[name] if name in self.cols else params[name]
        return E.evaluate(self.law.expr, lookup, NUMPY, "--formula", constants={"pi": np.pi})

    def predict(self, Theta: np.ndarray) -> np.ndarray:
        Theta = np.atleast_2d(Theta)
        with np.errstate(all="ignore"):
            out = self._eval({p: Theta[:, i:i + 1] for p, i in self.index.items()})
        return np.broadcast_to(np.asarray(out, dtype=float), (len(Theta), len(self.F))).copy()

    def log_predict(self, Theta: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.log(self.predict(Theta))

    def linearise_raw(self, theta: np.ndarray):
        p, n = len(theta), len(self.F)
        eye = np.eye(p)
        with np.errstate(all="ignore"):
            out = self._eval({k: Dual(float(theta[i]), eye[:, i:i + 1]) for k, i in self.index.items()})
        if not isinstance(out, Dual):  # the formula does not depend on its parameters where evaluated
            return np.broadcast_to(np.asarray(out, float), (n,)).copy(), np.zeros((n, p))
        v = np.broadcast_to(np.asarray(out.v, float), (n,)).copy()
        J = np.broadcast_to(np.asarray(out.g, float), (p, n)).T.copy()
        return v, J

    def linearise(self, theta: np.ndarray):
        v, J = self.linearise_raw(theta)
        with np.errstate(all="ignore"):
            return np.log(v), J / v[:, None]


# ---- sums of power terms -------------------------------------------------------------------------------------


def _addends(node):
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _addends(node.left) + _addends(node.right)
    return [node]


def _factors(node, sign=1):
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return _factors(node.left, sign) + _factors(node.right, sign)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _factors(node.left, sign) + _factors(node.right, -sign)
    return [(node, sign)]


def _number(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _number(node.operand)
        return None if v is None else -v
    return None


def _exponent(node, params):
    """(param or None, coefficient) for an exponent `q`, `-q`, `c*q`, `q*c` or a number c."""
    c = _number(node)
    if c is not None:
        return None, c
    if isinstance(node, ast.Name) and node.id in params:
        return node.id, 1.0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        q = _exponent(node.operand, params)
        return None if q is None else (q[0], -q[1])
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        for a, b in ((node.left, node.right), (node.right, node.left)):
            c = _number(a)
            if c is not None and isinstance(b, ast.Name) and b.id in params:
                return b.id, c
    return None


def _as_lse(expr, variables, params):
    """(terms, amplitude params) when the formula is a sum of power terms (module doc), else None."""
    amps, exps = set(), set()
    terms = []
    for add in _addends(expr.tree):
        amp, parts, offset = None, [], 0.0
        for node, sign in _factors(add):
            c = _number(node)
            if c is not None:
                if c <= 0:
                    return None
                offset += sign * np.log(c)
                continue
            if isinstance(node, ast.Name):
                ident = expr.quoted.get(node.id, node.id)
                if ident in variables:
                    parts.append((None, variables.index(ident), float(sign)))
                    continue
                if sign < 0 or amp is not None:
                    return None
                amp = ident
                continue
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and isinstance(node.left, ast.Name):
                ident = expr.quoted.get(node.left.id, node.left.id)
                q = _exponent(node.right, params)
                if ident not in variables or q is None:
                    return None
                parts.append((q[0], variables.index(ident), sign * q[1]))
                continue
            return None
        if amp is not None:
            amps.add(amp)
        exps |= {q for q, _, _ in parts if q is not None}
        terms.append((amp, parts, offset))
    if amps & exps or (amps | exps) != set(params):
        return None
    index = {p: i for i, p in enumerate(params)}
    out = [(None if a is None else index[a], tuple((None if q is None else index[q], v, c) for q, v, c in parts), off)
           for a, parts, off in terms]
    return out, tuple(p for p in params if p in amps)


def lse_law(name, text, variables, params, terms, amps) -> LSELaw:
    log = np.array([p in amps for p in params])
    scales = tuple("log" if a else "identity" for a in log)

    def to_params(t):
        with np.errstate(over="ignore"):
            return {p: (np.exp(t[..., i]) if log[i] else t[..., i]) for i, p in enumerate(params)}

    def from_params(d):
        return np.array([np.log(d[p]) if log[i] else d[p] for i, p in enumerate(params)])

    law = LSELaw(name, variables, params, terms, theta_names=tuple(("log_" + p) if a else p for p, a in
                                                                  zip(params, log)),
                 to_params=to_params, from_params=from_params, scales=scales, formula=text)
    law._grid = lambda F, logy: projection_grid(law, F, logy)
    return law


def projection_grid(law: LSELaw, F, logy, seed: int = 0) -> np.ndarray:
    """Starts (m, p) in fit space: every combination of EXPONENTS for the exponent parameters (a seeded subset
    beyond MAX_GRID), each with the amplitudes that fit best for those exponents by non-negative least squares on
    relative residuals (y - ŷ)/y. An amplitude the projection sets to 0 starts at 1e-3 of the data's scale."""
    from costlaw.fitting.varpro import Projector

    proj = Projector(law, F)
    p = len(law.params)
    amp_idx = [i for i, s in enumerate(law.scales) if s == "log"]
    exp_idx = [i for i, s in enumerate(law.scales) if s != "log"]
    combos = np.array(list(itertools.product(EXPONENTS, repeat=len(exp_idx)))) if exp_idx else np.zeros((1, 0))
    if len(combos) > MAX_GRID:
        combos = combos[np.sort(np.random.default_rng(seed).choice(len(combos), MAX_GRID, replace=False))]
    y = np.exp(logy)
    rows = np.empty((len(combos), p))
    for r, c in enumerate(combos):
        theta = np.zeros(p)
        theta[exp_idx] = c
        coef, basis_scale = proj.amplitudes(y, theta)
        floor = 1e-3 * y.min() / np.maximum(basis_scale, 1e-300)
        theta[amp_idx] = np.log(np.where(coef > 0, coef, floor))
        rows[r] = theta
    return rows[np.all(np.isfinite(rows), axis=1)]
