"""Forward-mode differentiation for formula laws: `Dual(v, g)` carries a value v (n,) and its gradient g (p, n)
with respect to the p parameters through the same expression walk that evaluates the formula
(costmodel/core/expr.py), so the Jacobian is exact to rounding (no step size), and costs about p evaluations.

Operators follow the usual rules; FUNCTIONS are the formula language's functions, working on Duals, numpy
arrays and Python numbers alike. Comparisons compare values (their gradient is zero almost everywhere), so
`where`, `minimum` and `maximum` pick the gradient of the branch they pick.
"""

from __future__ import annotations

import numpy as np


class Dual:
    __slots__ = ("v", "g")
    # numpy defers to our reflected operators (ndarray + Dual -> Dual.__radd__) instead of making object arrays.
    __array_ufunc__ = None

    def __init__(self, v, g):
        self.v, self.g = v, g

    @property
    def ndim(self) -> int:  # so the expression evaluator treats a Dual as an array (elementwise logic)
        return max(np.ndim(self.v), 1)

    def __add__(self, o):
        return Dual(self.v + o.v, self.g + o.g) if isinstance(o, Dual) else Dual(self.v + o, self.g)

    __radd__ = __add__

    def __sub__(self, o):
        return Dual(self.v - o.v, self.g - o.g) if isinstance(o, Dual) else Dual(self.v - o, self.g)

    def __rsub__(self, o):
        return Dual(o - self.v, -self.g)

    def __mul__(self, o):
        if isinstance(o, Dual):
            return Dual(self.v * o.v, self.g * o.v + o.g * self.v)
        return Dual(self.v * o, self.g * o)

    __rmul__ = __mul__

    def __truediv__(self, o):
        if isinstance(o, Dual):
            return Dual(self.v / o.v, (self.g * o.v - o.g * self.v) / (o.v * o.v))
        return Dual(self.v / o, self.g / o)

    def __rtruediv__(self, o):
        return Dual(o / self.v, -o * self.g / (self.v * self.v))

    def __floordiv__(self, o):
        return Dual(self.v // value(o), 0.0 * self.g)

    def __rfloordiv__(self, o):
        return Dual(o // self.v, 0.0 * self.g)

    def __mod__(self, o):
        if isinstance(o, Dual):
            return Dual(self.v % o.v, self.g - np.floor(self.v / o.v) * o.g)
        return Dual(self.v % o, self.g)

    def __rmod__(self, o):
        return Dual(o % self.v, -np.floor(o / self.v) * self.g)

    def __pow__(self, o):
        if isinstance(o, Dual):
            v = self.v ** o.v
            return Dual(v, v * (o.g * np.log(self.v) + o.v * self.g / self.v))
        return Dual(self.v ** o, o * self.v ** (o - 1) * self.g)

    def __rpow__(self, o):
        v = o ** self.v
        return Dual(v, v * np.log(o) * self.g)

    def __neg__(self):
        return Dual(-self.v, -self.g)

    def __pos__(self):
        return self

    def __lt__(self, o):
        return self.v < value(o)

    def __le__(self, o):
        return self.v <= value(o)

    def __gt__(self, o):
        return self.v > value(o)

    def __ge__(self, o):
        return self.v >= value(o)

    def __eq__(self, o):
        return self.v == value(o)

    def __ne__(self, o):
        return self.v != value(o)

    __hash__ = None


def value(x):
    return x.v if isinstance(x, Dual) else x


def _grad(x):
    return x.g if isinstance(x, Dual) else 0.0


def _unary(f, df):
    def fn(x):
        if not isinstance(x, Dual):
            return f(x)
        return Dual(f(x.v), df(x.v) * x.g)
    return fn


def _where(c, a, b):
    c = value(c)
    if not isinstance(a, Dual) and not isinstance(b, Dual):
        return np.where(c, a, b)
    return Dual(np.where(c, value(a), value(b)), np.where(c, _grad(a), _grad(b)))


def _minimum(a, b):
    return _where(value(a) <= value(b), a, b)


def _maximum(a, b):
    return _where(value(a) >= value(b), a, b)


def _exp(x):
    if not isinstance(x, Dual):
        return np.exp(x)
    v = np.exp(x.v)
    return Dual(v, v * x.g)


def _sqrt(x):
    if not isinstance(x, Dual):
        return np.sqrt(x)
    v = np.sqrt(x.v)
    return Dual(v, x.g / (2.0 * v))


_LN2, _LN10 = np.log(2.0), np.log(10.0)

FUNCTIONS = {
    "exp": _exp,
    "log": _unary(np.log, lambda v: 1.0 / v),
    "log2": _unary(np.log2, lambda v: 1.0 / (v * _LN2)),
    "log10": _unary(np.log10, lambda v: 1.0 / (v * _LN10)),
    "sqrt": _sqrt,
    "abs": _unary(np.abs, np.sign),
    "tanh": _unary(np.tanh, lambda v: 1.0 - np.tanh(v) ** 2),
    "minimum": _minimum,
    "maximum": _maximum,
    "where": _where,
}
