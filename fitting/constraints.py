"""Fixed, tied and bounded parameters: the free coordinates z that the optimiser moves, theta = M·z + c.

Users state constraints on the natural parameters (`law.params`, in natural units); each maps into fit space
through the parameter's scale (`law.scales`): a "log" parameter (an amplitude fitted as log A) is fixed at
log(value), bounded by (log lo, log hi), and tied only to another log parameter; an "identity" one (an exponent)
directly. Fixing removes a coordinate, tying makes two parameters share one, bounds become L-BFGS-B's box on the
free coordinate (applied to the parameter's value, not to the optimiser's step). Every map here is affine, so the
Jacobian of the constrained model is the law's Jacobian times M, exact.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from costlaw.costmodel.core.errors import CostlawError


def _to_theta(scale: str, v: float) -> float:
    return float(np.log(v)) if scale == "log" else float(v)


def _to_natural(scale: str, t: float) -> float:
    return float(np.exp(t)) if scale == "log" else float(t)


class Space:
    """The free coordinates of `law` under `fix` {name: value}, `tie` {name: name it equals} and `bounds`
    {name: (lo or None, hi or None)}, all in natural units. `free` names the free coordinates (for a tied group,
    the parameter the others are tied to); `lo`/`hi` are their bounds in fit space (-inf/inf when open)."""

    def __init__(self, law, fix: Mapping | None = None, tie: Mapping | None = None, bounds: Mapping | None = None):
        self.law = law
        self.fix = {k: float(v) for k, v in (fix or {}).items()}
        self.tie = dict(tie or {})
        self.bounds = {k: (None if lo is None else float(lo), None if hi is None else float(hi))
                       for k, (lo, hi) in (bounds or {}).items()}
        names = list(law.params)
        for flag, d in (("--fix", self.fix), ("--tie", self.tie), ("--bounds", self.bounds)):
            for k in d:
                self._check_name(flag, k)
                self._check_scale(flag, k)
        for k, target in self.tie.items():
            self._check_name("--tie", target, f" (in {k}={target})")
            self._check_scale("--tie", target)
            if target == k:
                raise CostlawError(f"--tie: {k}={k} ties a parameter to itself; name another parameter")
            if law.scales[names.index(k)] != law.scales[names.index(target)]:
                raise CostlawError(f"--tie: {k} and {target} are fitted on different scales in {law.name} "
                                   f"({law.scales[names.index(k)]} vs {law.scales[names.index(target)]}); "
                                   "tie parameters of one kind (two exponents, or two amplitudes)")
            if k in self.fix:
                raise CostlawError(f"--tie: {k} is also fixed by --fix; give one of them")
        root = {k: self._root(k) for k in names}
        for k, (lo, hi) in self.bounds.items():
            if k in self.fix:
                raise CostlawError(f"--bounds: {k} is fixed by --fix; drop one of them")
            if lo is not None and hi is not None and not lo < hi:
                raise CostlawError(f"--bounds: {k}={lo:g}:{hi:g} is empty; give LO < HI")
            if root[k] != k:
                raise CostlawError(f"--bounds: {k} is tied to {root[k]}; bound {root[k]} instead")
        self.free = [k for k in names if root[k] == k and k not in self.fix]
        p, kf = len(names), len(self.free)
        self.M = np.zeros((p, kf))
        self.c = np.zeros(p)
        for i, k in enumerate(names):
            r = root[k]
            if r in self.fix:
                self.c[i] = self._fixed_theta(r)
            else:
                self.M[i, self.free.index(r)] = 1.0
        self.lo = np.full(kf, -np.inf)
        self.hi = np.full(kf, np.inf)
        for j, k in enumerate(self.free):
            rows = np.flatnonzero(self.M[:, j])
            for i in rows:
                if law.bounds is not None:
                    lo, hi = law.bounds[i]
                    self.lo[j] = max(self.lo[j], -np.inf if lo is None else lo)
                    self.hi[j] = min(self.hi[j], np.inf if hi is None else hi)
            if k in self.bounds:
                lo, hi = self._theta_bounds(k)
                self.lo[j], self.hi[j] = max(self.lo[j], lo), min(self.hi[j], hi)
            if not self.lo[j] < self.hi[j]:
                raise CostlawError(f"--bounds: {k}'s bounds and the law's own leave no room; widen them")
        for k in self.fix:
            b = law.bounds[names.index(k)] if law.bounds is not None else (None, None)
            t = self._fixed_theta(k)
            if (b[0] is not None and t < b[0]) or (b[1] is not None and t > b[1]):
                raise CostlawError(f"--fix: {k}={self.fix[k]:g} is outside the law's own bounds; give a value inside")
        self.trivial = not (self.fix or self.tie) and law.bounds is None and not self.bounds
        self.bounded = bool(np.isfinite(self.lo).any() or np.isfinite(self.hi).any())
        self.rep = np.array([names.index(k) for k in self.free], dtype=int)

    def _check_name(self, flag, k, where=""):
        if k not in self.law.params:
            raise CostlawError(f"{flag}: {k!r}{where} is not a parameter of {self.law.name}; its parameters are "
                               f"{', '.join(self.law.params)}")

    def _check_scale(self, flag, k):
        i = self.law.params.index(k)
        if self.law.scales[i] is None:
            raise CostlawError(f"{flag}: {self.law.name} fits {k} only jointly with other parameters (fit space "
                               f"{', '.join(self.law.theta_names)}), so it cannot be fixed, tied or bounded alone; "
                               "constrain another parameter, or give the law as --formula")

    def _root(self, k, seen=()):
        if k in seen:
            raise CostlawError(f"--tie: {' = '.join((*seen, k))} is a cycle; tie each group to one parameter")
        return self._root(self.tie[k], (*seen, k)) if k in self.tie else k

    def _fixed_theta(self, k) -> float:
        scale = self.law.scales[self.law.params.index(k)]
        v = self.fix[k]
        if not np.isfinite(v) or (scale == "log" and v <= 0):
            raise CostlawError(f"--fix: {k}={v:g} is outside {self.law.name}'s form ({k} is fitted as log {k}, so "
                               "it must be > 0); give a positive finite value")
        return _to_theta(scale, v)

    def _theta_bounds(self, k):
        scale = self.law.scales[self.law.params.index(k)]
        lo, hi = self.bounds[k]
        if scale == "log":
            if hi is not None and hi <= 0:
                raise CostlawError(f"--bounds: {k} is > 0 in {self.law.name} (fitted as log {k}); give HI > 0")
            lo = None if lo is None or lo <= 0 else lo
        return (-np.inf if lo is None else _to_theta(scale, lo), np.inf if hi is None else _to_theta(scale, hi))

    # ---- maps -------------------------------------------------------------------------------------------

    def theta(self, Z) -> np.ndarray:
        """Fit-space theta (..., p) of free coordinates Z (..., k)."""
        Z = np.asarray(Z, dtype=float)
        return Z @ self.M.T + self.c

    def z(self, Theta) -> np.ndarray:
        """The free coordinates of fit-space Theta (..., p): each group's root value, clipped to the bounds."""
        Theta = np.asarray(Theta, dtype=float)
        return np.clip(Theta[..., self.rep], self.lo, self.hi)

    def bind(self, model):
        return model if self.trivial else ReducedModel(model, self.M, self.c)

    def z_of_params(self, params: Mapping, where: str = "--init") -> dict[int, float]:
        """{free index: value} for the free parameters named in `params` (natural units); others are ignored
        when fixed, refused when tied (name the parameter they are tied to)."""
        out = {}
        for k, v in params.items():
            self._check_name(where, k)
            if k in self.fix:
                continue
            if k not in self.free:
                raise CostlawError(f"{where}: {k} is tied to {self._root(k)}; give {self._root(k)} instead")
            scale = self.law.scales[self.law.params.index(k)]
            if scale is None:
                self._check_scale(where, k)
            v = float(v)
            if not np.isfinite(v) or (scale == "log" and v <= 0):
                raise CostlawError(f"{where}: {k}={v:g} is outside {self.law.name}'s form ({k} is > 0); give a "
                                   "positive finite value")
            out[self.free.index(k)] = _to_theta(scale, v)
        return out

    def natural_bounds(self, j: int) -> tuple[float, float]:
        """Free coordinate j's bounds in natural units."""
        scale = self.law.scales[self.rep[j]] or "identity"
        return _to_natural(scale, self.lo[j]), _to_natural(scale, self.hi[j])

    def to_dict(self) -> dict:
        return {"fixed": dict(self.fix), "tied": dict(self.tie),
                "bounds": {k: list(v) for k, v in self.bounds.items()}, "free": list(self.free)}


class ReducedModel:
    """A bound model seen through theta = M·z + c: predictions of z, and the Jacobian J·M."""

    def __init__(self, model, M: np.ndarray, c: np.ndarray):
        self.model, self.M, self.c = model, M, c

    def log_predict(self, Z):
        return self.model.log_predict(np.atleast_2d(Z) @ self.M.T + self.c)

    def predict(self, Z):
        return self.model.predict(np.atleast_2d(Z) @ self.M.T + self.c)

    def linearise(self, z):
        g, J = self.model.linearise(self.M @ z + self.c)
        return g, J @ self.M

    def linearise_raw(self, z):
        g, J = self.model.linearise_raw(self.M @ z + self.c)
        return g, J @ self.M
