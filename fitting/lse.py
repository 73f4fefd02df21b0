"""Laws that are a sum of power terms plus a constant, fitted in log-sum-exp form.

`L = E + A/N^alpha + B/D^beta` becomes `log L = LSE(log A - alpha·log N, log B - beta·log D, log E)`
(Hoffmann et al. 2022; Epoch's replication). Every term is affine in the fit-space parameters once log x
is fixed, so a bound model is one design tensor K (terms, params, points): predictions for all starts are
one matrix product and the Jacobian is the softmax-weighted K. Amplitudes and the constant enter as logs,
so they stay positive and predictions stay positive, which the log residuals need.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from costlaw.fitting.law import Law, LogModel

# A term is (intercept theta index or None, ((theta index or None, variable index, coefficient), ...)[, offset]):
# term value = offset + theta[intercept] + sum(coefficient * theta[q] * log x[v]), where a part whose index is None
# is a fixed power (coefficient * log x[v]: the x in `a + b*x`), and offset is the log of a constant factor.
Term = tuple


class LSELaw(Law):
    """A Law whose log prediction is LSE over affine terms; supplies the analytic Jacobian.

    `terms` as described by `Term`; every other argument as for `Law` (log_x is always True here).
    """

    def __init__(self, name: str, variables: tuple[str, ...], params: tuple[str, ...], terms: Sequence[Term],
                 **kwargs):
        self.terms = tuple((t[0], tuple(tuple(p) for p in t[1]), float(t[2]) if len(t) > 2 else 0.0) for t in terms)
        super().__init__(name, variables, params, self._log_predict_lse, log_x=True, **kwargs)

    def _log_predict_lse(self, Theta, F):
        return self.bind(F).log_predict(Theta)

    def bind(self, F: np.ndarray) -> LSEModel:
        return LSEModel(self.terms, len(self.params), np.asarray(F, dtype=float))


class LSEModel(LogModel):
    """An LSE law bound to features F = log X."""

    def __init__(self, terms, p: int, F: np.ndarray):
        n = F.shape[0]
        K = np.zeros((len(terms), p, n))
        offset = np.zeros((len(terms), n))
        for j, (intercept, parts, const) in enumerate(terms):
            offset[j] += const
            if intercept is not None:
                K[j, intercept] = 1.0
            for q, v, coef in parts:
                if q is None:
                    offset[j] += coef * F[:, v]
                else:
                    K[j, q] += coef * F[:, v]
        # Most laws have no fixed part: skip the addition in the hot path then.
        self.offset = offset.ravel() if np.any(offset) else None
        self.n_terms, self.p, self.n = len(terms), p, n
        self.Kmat = np.ascontiguousarray(K.transpose(1, 0, 2).reshape(p, len(terms) * n))
        # When every parameter enters exactly one term (all built-in laws), row p of the Jacobian is that
        # term's softmax weight times K[term, p]: a gather instead of a sum over terms.
        uses = np.array([[bool(np.any(K[j, q])) for j in range(len(terms))] for q in range(p)])
        self.term_of = np.argmax(uses, axis=1) if np.all(uses.sum(axis=1) == 1) else None
        if self.term_of is not None:
            self.Krow = np.ascontiguousarray(K[self.term_of, np.arange(p)])

    def log_predict(self, Theta: np.ndarray) -> np.ndarray:
        Theta = np.atleast_2d(Theta)
        T = Theta @ self.Kmat
        if self.offset is not None:
            T = T + self.offset
        T = T.reshape(len(Theta), self.n_terms, self.n)
        top = T.max(axis=1)
        return top + np.log(np.exp(T - top[:, None, :]).sum(axis=1))

    def linearise(self, theta: np.ndarray):
        # Called once per optimiser step (tens of thousands of times in a bootstrap), hence the bare ufunc
        # reductions: ndarray.max/sum add Python-level dispatch that costs as much as the arithmetic here.
        T = theta @ self.Kmat
        if self.offset is not None:
            T = T + self.offset
        T = T.reshape(self.n_terms, self.n)
        top = np.maximum.reduce(T, axis=0)
        E = np.exp(T - top)
        s = np.add.reduce(E, axis=0)
        E /= s
        # d log_pred / d theta = sum over terms of softmax weight x d term / d theta.
        if self.term_of is not None:
            Jt = E[self.term_of] * self.Krow
        else:
            Jt = np.add.reduce((self.Kmat * E.ravel()).reshape(self.p, self.n_terms, self.n), axis=1)
        return top + np.log(s), Jt.T


def power_grid(F: np.ndarray, logy: np.ndarray, exponents: Sequence[float], sign: float,
               const_fracs: Sequence[float] = (1e-3, 0.25, 0.5, 0.7, 0.85, 0.95),
               offsets: Sequence[float] = (-1.0, 0.0, 1.0)) -> np.ndarray:
    """Data-centred starts (intercept, exponent, log constant) for `exp(c + sign·k·log x) + E`.

    The constant is a fraction of the smallest observed y; for each (k, E) the intercept is the one that
    matches the mean of log(y - E) at the mean log x, then shifted by `offsets`. Centring on the data makes
    the grid independent of the units of x (parameters in millions or in ones).
    """
    lx = F[:, 0]
    y = np.exp(logy)
    rows = []
    for k in exponents:
        for q in const_fracs:
            E = q * y.min()
            c0 = np.mean(np.log(np.maximum(y - E, 1e-3 * y))) - sign * k * lx.mean()
            rows += [(c0 + o, k, np.log(E)) for o in offsets]
    return np.array(rows)
