"""Is a candidate's law identified well enough to recommend from? The rules, each a measured fact about the fit:

1. **Sizes.** Runs at fewer than MIN_SIZES distinct N: not fitted at all (candidates.py).
2. **Floor at its bound.** E below E_FLOOR_SHARE of the lowest config-mean loss: the fitted constant ran to the
   edge of its space (log E -> -inf), i.e. these runs show no floor and the law degenerates into a pure power law
   whose extrapolation is unbounded.
3. **Not identified by the data.** From the bootstrap over configs (seeds resampled together): the 95% interval
   of a scale parameter (a, E) spans more than SPAN_DECADES decade(s), or any parameter's interval has a
   non-finite end, or b's reaches <= 0 (the loss would not fall with N in some resamples). Such a law's
   predictions swing with which configs happen to be in the ladder.
4. **R² below R2_MIN** on the points it was fitted to (the config means): the runs do not follow the curve.
   0.98 is the studies' bar (studies/gqa-heads-steps: five of six candidates clear it on seed means, the one
   that misses, (1,1), is the one whose held-out configs miss by 10%+); the GQA paper's own fits reach > 0.999.
5. **What the fitter says** (fitting/diagnose.py): the fit did not converge, a parameter sits on a bound, or the
   data do not identify a parameter (a direction of the Jacobian at the optimum with no singular value).

A weak law gives no winner unless the user asks (`--allow-weak-laws`); the output names the law and the rule.
What cannot be checked (a fits file without R² or bootstrap draws) is listed as unchecked, not held against it.
"""

from __future__ import annotations

import math

import numpy as np

R2_MIN = 0.98
E_FLOOR_SHARE = 1e-3
SPAN_DECADES = 1.0
SCALE_PARAMS = ("a", "E")


def weaknesses(cand) -> list[str]:
    """Why `cand`'s law is not fit to recommend from (empty: no rule applies). See the module doc."""
    if not cand.fitted:
        return []
    out = []
    p = cand.params
    losses = [pt["loss"] for pt in cand.ladder if pt.get("loss") is not None]
    floor = min(losses) if losses else None
    E = p.get("E")
    if E is not None and floor is not None and E < E_FLOOR_SHARE * floor:
        out.append(f"E = {E:.3g} is at its bound (below {E_FLOOR_SHARE:g} x the lowest loss {floor:.4g}): the runs "
                   "show no floor")
    for k, (lo, hi) in interval95(cand).items():
        if not (math.isfinite(lo) and math.isfinite(hi)):
            out.append(f"{k}'s bootstrap 95% interval [{lo:.3g}, {hi:.3g}] is not finite")
        elif k in SCALE_PARAMS and lo > 0 and math.log10(hi / lo) > SPAN_DECADES:
            out.append(f"{k}'s bootstrap 95% interval [{lo:.3g}, {hi:.3g}] spans {math.log10(hi / lo):.2f} decades")
        elif k in SCALE_PARAMS and lo <= 0:
            out.append(f"{k}'s bootstrap 95% interval [{lo:.3g}, {hi:.3g}] reaches 0")
        elif k == "b" and lo <= 0:
            out.append(f"b's bootstrap 95% interval [{lo:.3g}, {hi:.3g}] reaches <= 0 (no fall with N)")
    if cand.r2 is not None and cand.r2 < R2_MIN:
        out.append(f"R² {cand.r2:.3f} < {R2_MIN} on the {cand.n_points} points fitted")
    fit = cand.fit_extra
    if fit.get("success") is False:
        out.append("the fit did not converge" + (f" ({fit['reason']})" if fit.get("reason") else ""))
    for b in fit.get("at_bounds") or []:
        out.append(f"{b.get('param')} is at its {b.get('side')} bound {b.get('bound')}")
    if fit.get("not_identified"):
        out.append(f"the runs do not identify {', '.join(map(str, fit['not_identified']))} (fitting/diagnose.py)")
    return out


def unchecked(cand) -> list[str]:
    """The rules that could not be applied to `cand` for lack of data."""
    if not cand.fitted:
        return []
    out = []
    if cand.samples is None:
        out.append("identification (no bootstrap draws)")
    if cand.r2 is None:
        out.append("R² (not given)")
    if not any(pt.get("loss") is not None for pt in cand.ladder) and "E" in cand.params:
        out.append("E's bound (no run losses)")
    return out


def interval95(cand) -> dict[str, tuple[float, float]]:
    """The 2.5-97.5% range of each parameter's bootstrap draws (NaN draws dropped). An end is infinite when more than
    2.5% of the draws are (a resample whose refit ran off to infinity), else the percentile of the finite draws."""
    if not cand.samples:
        return {}
    out = {}
    for k, v in cand.samples.items():
        if k not in cand.params:
            continue
        v = np.asarray(v, dtype=float)
        v = v[~np.isnan(v)]
        fin = v[np.isfinite(v)]
        if len(v) < 2:
            continue
        lo = -math.inf if np.mean(v == -np.inf) > 0.025 or not len(fin) else float(np.percentile(fin, 2.5))
        hi = math.inf if np.mean(v == np.inf) > 0.025 or not len(fin) else float(np.percentile(fin, 97.5))
        out[k] = (lo, hi)
    return out
