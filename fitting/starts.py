"""The starts of a fit, in free coordinates z (fitting/constraints.py): the law's grid, given starts, `init`
values and random draws in a box.

- starts None: the law's default grid; an int m: m of it (a seeded random subset when smaller, the grid plus
  seeded uniform draws in its bounding box when larger); a dict or list of dicts of natural parameters; an
  (m, p) array in fit space (law.theta_names).
- init {name: value} (natural units): with every free parameter named, one start; with some, the grid with those
  coordinates replaced (the rest from each grid start). Init starts are always refined (as curve_fit's p0).
- random_starts K with box {name: (lo, hi)} (natural units): K seeded uniform draws, uniform in fit space (in log
  for an amplitude fitted as log A); a coordinate outside the box is drawn within its bounds where they are
  finite, else within the grid's range.
Every start is clipped into the bounds.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting.constraints import Space, _to_theta


def build(law, space: Space, F, logy, starts=None, seed: int = 0, init: Mapping | None = None,
          box: Mapping | None = None, random_starts: int = 0) -> tuple[np.ndarray, int]:
    """(Z (m, k), how many of the first rows are init starts)."""
    p = len(law.params)
    rng = np.random.default_rng(seed)
    if starts is None or isinstance(starts, (int, np.integer)):
        grid = law.start_grid(F, logy)
        if starts is None:
            Theta = grid
        elif starts < 1:
            raise CostlawError(f"starts: must be >= 1, got {starts}")
        elif starts <= len(grid):
            Theta = grid[np.sort(rng.choice(len(grid), size=int(starts), replace=False))]
        else:
            lo, hi = grid.min(axis=0), grid.max(axis=0)
            Theta = np.vstack([grid, lo + (hi - lo) * rng.random((int(starts) - len(grid), p))])
    elif isinstance(starts, Mapping):
        Theta = law.theta_of(starts)[None, :]
    elif isinstance(starts, (list, tuple)) and starts and all(isinstance(s, Mapping) for s in starts):
        Theta = np.array([law.theta_of(s) for s in starts])
    else:
        Theta = np.atleast_2d(np.asarray(starts, dtype=float))
        if Theta.ndim != 2 or Theta.shape[1] != p:
            raise CostlawError(f"starts: an array of starts must be (m, {p}) in fit space "
                               f"({', '.join(law.theta_names)}), got shape {Theta.shape}")
    Z = space.z(Theta)
    head = np.empty((0, Z.shape[1]))
    if init:
        head = _init(law, space, Z, init)
    if random_starts:
        if not isinstance(random_starts, (int, np.integer)) or random_starts < 0:
            raise CostlawError(f"random starts: must be a whole number >= 0, got {random_starts!r}")
        Z = np.vstack([Z, _draws(law, space, Z, box or {}, int(random_starts), rng)])
    elif box:
        raise CostlawError("--start-box: gives the box for random starts; add --random-starts K")
    return np.vstack([head, Z]), len(head)


def _init(law, space: Space, Z, init: Mapping) -> np.ndarray:
    given = {k: v for k, v in init.items() if k not in space.fix}
    if set(space.free) <= set(given) or set(law.params) <= set(init):
        if set(law.params) <= set(init) and any(s is None for s in law.scales):
            return space.z(law.theta_of(init)[None, :])  # a law with joint coordinates: through its own map
        vals = space.z_of_params(given)
        return np.array([[vals[j] for j in range(len(space.free))]])
    vals = space.z_of_params(given)
    out = Z.copy()
    for j, v in vals.items():
        out[:, j] = v
    out = np.clip(out, space.lo, space.hi)
    return np.unique(out, axis=0)


def _draws(law, space: Space, Z, box: Mapping, k: int, rng) -> np.ndarray:
    m = len(space.free)
    lo, hi = Z.min(axis=0), Z.max(axis=0)
    lo = np.where(np.isfinite(space.lo) & np.isfinite(space.hi), space.lo, lo)
    hi = np.where(np.isfinite(space.lo) & np.isfinite(space.hi), space.hi, hi)
    for name, (a, b) in box.items():
        if name not in law.params:
            raise CostlawError(f"--start-box: {name!r} is not a parameter of {law.name}; its parameters are "
                               f"{', '.join(law.params)}")
        if name not in space.free:
            raise CostlawError(f"--start-box: {name} is fixed or tied; box a free parameter "
                               f"({', '.join(space.free)})")
        scale = law.scales[law.params.index(name)]
        if scale is None:
            raise CostlawError(f"--start-box: {law.name} fits {name} only jointly with other parameters; box another "
                               "parameter or give the law as --formula")
        if not (np.isfinite(a) and np.isfinite(b) and a < b) or (scale == "log" and a <= 0):
            raise CostlawError(f"--start-box: {name}={a:g}:{b:g} needs finite LO < HI" +
                               (f" with LO > 0 ({name} is > 0)" if scale == "log" else ""))
        j = space.free.index(name)
        lo[j], hi[j] = _to_theta(scale, a), _to_theta(scale, b)
    return np.clip(lo + (hi - lo) * rng.random((k, m)), space.lo, space.hi)
