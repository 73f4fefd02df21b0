"""IsoFLOP profiles (Hoffmann et al. 2022, "Approach 2") from training curves, in numpy.

1. Each run's loss at a compute budget C: its curve (cumulative training FLOPs = tokens x training FLOPs per token,
   loss) interpolated linearly in log C between the two logged points around C. A run whose curve does not reach
   C (or starts after it) is skipped at that budget, and counted.
2. Per budget, a parabola in log N through the runs' losses (at least `min_runs` runs, else the budget is skipped
   with the reason): loss = a·(log N)² + b·log N + c, N*(C) = exp(-b / 2a) where a > 0; a minimum outside the
   sizes measured is marked `inside: false` and left out of the power laws (it is an extrapolation).
3. D*(C) = C / c(N*), c the training FLOPs per token, a power law in N fitted across the runs (c ≈ 6N plus
   attention).
4. N*(C) = k_N·C^a_N and D*(C) = k_D·C^a_D by least squares in log-log over the usable budgets, with bootstrap
   intervals: resample the runs (with replacement), redo every budget's parabola with the runs' multiplicities as
   weights, refit both power laws; a resample with fewer than two usable budgets is counted as failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import clean_json


@dataclass
class Curve:
    """One run: N (parameters), c_per_token (training FLOPs per token), and its logged (C, loss) in order of C."""

    run_id: str
    N: float
    c_per_token: float
    C: np.ndarray
    loss: np.ndarray


def loss_matrix(curves: list[Curve], budgets) -> np.ndarray:
    """(runs, budgets) losses interpolated at each budget; NaN where a run's curve does not cover it."""
    budgets = np.asarray(budgets, dtype=float)
    out = np.full((len(curves), len(budgets)), np.nan)
    for i, c in enumerate(curves):
        ok = np.isfinite(c.C) & np.isfinite(c.loss) & (c.C > 0)
        C, L = c.C[ok], c.loss[ok]
        if len(C) < 2:
            continue
        order = np.argsort(C, kind="stable")
        lc, L = np.log(C[order]), L[order]
        cover = (budgets >= C.min()) & (budgets <= C.max())
        out[i, cover] = np.interp(np.log(budgets[cover]), lc, L)
    return out


def budget_grid(curves: list[Curve], n: int, min_runs: int = 3) -> np.ndarray:
    """n log-spaced budgets over the range where at least min_runs curves cover the budget."""
    lo = np.array([np.nanmin(c.C[c.C > 0]) for c in curves if np.any(c.C > 0)])
    hi = np.array([np.nanmax(c.C) for c in curves if np.any(c.C > 0)])
    if len(lo) < min_runs:
        raise CostlawError(f"--budgets: {len(lo)} run(s) with a training curve; an IsoFLOP profile needs at least "
                           f"{min_runs}")
    cands = np.unique(np.concatenate([lo, hi]))
    counts = np.array([np.sum((lo <= c) & (hi >= c)) for c in cands])
    good = cands[counts >= min_runs]
    if len(good) == 0:
        raise CostlawError(f"--budgets: no budget is covered by {min_runs} runs' curves; give --budgets or more runs")
    return np.geomspace(good.min(), good.max(), n) if good.max() > good.min() else good[:1]


def parabola(logN, loss, w=None):
    """(a, b, c) of the weighted least-squares parabola loss = a·x² + b·x + c in x = log N (centred for accuracy:
    returned in x itself)."""
    x0 = float(np.average(logN, weights=w))
    x = logN - x0
    A = np.column_stack([x * x, x, np.ones_like(x)])
    sw = np.ones_like(x) if w is None else np.sqrt(w)
    coef, *_ = np.linalg.lstsq(A * sw[:, None], loss * sw, rcond=None)
    a, b, c = coef
    return a, b - 2 * a * x0, c - b * x0 + a * x0 * x0


def _power(C, v):
    """(coefficient k, exponent) of v = k·C^exponent, least squares in log-log."""
    slope, icept = np.polyfit(np.log(C), np.log(v), 1)
    return float(np.exp(icept)), float(slope)


@dataclass
class IsoflopResult:
    budgets: list  # per budget: C, n_runs, n_skipped, N_star, D_star, loss_star, curvature, inside, reason
    N_law: dict  # {"coefficient", "exponent", "ci95": {...}, "stderr": {...}}
    D_law: dict
    c_law: dict  # the FLOPs-per-token power law used for D*
    n_runs: int
    n_bootstrap: int
    n_failed: int
    seed: int
    warnings: list = field(default_factory=list)
    matrix: np.ndarray | None = None  # (runs, budgets) losses, for plots

    def to_dict(self) -> dict:
        return clean_json({"n_runs": self.n_runs, "budgets": self.budgets, "N_star": self.N_law,
                           "D_star": self.D_law, "flops_per_token": self.c_law, "n_bootstrap": self.n_bootstrap,
                           "n_failed": self.n_failed, "seed": self.seed, "warnings": self.warnings})


def _star(logN, M, w, min_runs):
    """N*, D*, loss*, curvature, inside, reason per budget column of M, for run weights w."""
    out = []
    for j in range(M.shape[1]):
        have = np.isfinite(M[:, j]) & (w > 0)
        if np.count_nonzero(have) < min_runs or len(np.unique(logN[have])) < 3:
            out.append((np.nan, np.nan, np.nan, np.nan, False,
                        f"{int(np.count_nonzero(have))} run(s) reach this budget; a parabola needs {min_runs} at "
                        "3 sizes or more"))
            continue
        a, b, c = parabola(logN[have], M[have, j], w[have])
        if not a > 0:
            out.append((np.nan, np.nan, np.nan, a, False, "the parabola opens downward: no minimum in log N"))
            continue
        x = -b / (2 * a)
        inside = bool(logN[have].min() <= x <= logN[have].max())
        out.append((float(np.exp(x)), np.nan, float(c - b * b / (4 * a)), float(a), inside,
                    None if inside else "the minimum lies outside the sizes measured (an extrapolation)"))
    return out


def isoflop(curves: list[Curve], budgets, min_runs: int = 3, bootstrap: int = 1000, seed: int = 0) -> IsoflopResult:
    """The IsoFLOP analysis of `curves` at `budgets` (module doc)."""
    if len(curves) < min_runs:
        raise CostlawError(f"runs: {len(curves)} run(s); an IsoFLOP profile needs at least {min_runs}")
    budgets = np.asarray(budgets, dtype=float)
    if budgets.ndim != 1 or not len(budgets) or not np.all(np.isfinite(budgets) & (budgets > 0)):
        raise CostlawError("--budgets: give positive finite FLOP budgets, e.g. --budgets 1e18,3e18,1e19")
    budgets = np.unique(budgets)
    M = loss_matrix(curves, budgets)
    N = np.array([c.N for c in curves], dtype=float)
    cpt = np.array([c.c_per_token for c in curves], dtype=float)
    if not (np.all(N > 0) and np.all(cpt > 0)):
        raise CostlawError("runs: every run needs N > 0 and training FLOPs per token > 0; check the selected columns")
    logN = np.log(N)
    kc, ec = _power(N, cpt) if len(np.unique(N)) > 1 else (float(cpt[0] / N[0]), 1.0)
    w = np.ones(len(curves))
    rows = _star(logN, M, w, min_runs)
    table = []
    for j, (C, r) in enumerate(zip(budgets, rows)):
        n_have = int(np.isfinite(M[:, j]).sum())
        d_star = C / (kc * r[0] ** ec) if np.isfinite(r[0]) else np.nan
        table.append({"C": float(C), "n_runs": n_have, "n_skipped": len(curves) - n_have, "N_star": r[0],
                      "D_star": float(d_star), "loss_star": r[2], "curvature": r[3], "inside": r[4], "reason": r[5]})
    use = [t for t in table if t["inside"]]
    warnings = []
    if len(use) < 2:
        raise CostlawError(f"--budgets: {len(use)} budget(s) have a minimum inside the sizes measured; the power laws "
                           "need 2 or more (give budgets the runs bracket, or add sizes)")
    Cs = np.array([t["C"] for t in use])
    kN, aN = _power(Cs, np.array([t["N_star"] for t in use]))
    kD, aD = _power(Cs, np.array([t["D_star"] for t in use]))
    samples, failed = [], 0
    if bootstrap:
        rng = np.random.default_rng(seed)
        ucols = [j for j, t in enumerate(table) if t["inside"]]
        for _ in range(int(bootstrap)):
            cw = np.bincount(rng.integers(0, len(curves), len(curves)), minlength=len(curves)).astype(float)
            rs = _star(logN, M[:, ucols], cw, min_runs)
            ok = [(budgets[j], r[0]) for j, r in zip(ucols, rs) if r[4]]
            if len(ok) < 2:
                failed += 1
                continue
            C_b, N_b = np.array(ok).T
            samples.append((*_power(C_b, N_b), *_power(C_b, C_b / (kc * N_b ** ec))))
        if len(samples) < 2:
            warnings.append(f"only {len(samples)} of {bootstrap} resamples gave both power laws: no interval")
        elif failed > 0.05 * bootstrap:
            warnings.append(f"{failed} of {bootstrap} resamples had fewer than 2 usable budgets and are left out "
                            "of the intervals")
    S = np.array(samples) if len(samples) >= 2 else None

    def law(k, a, i):
        d = {"coefficient": k, "exponent": a}
        if S is not None:
            d["ci95"] = {"coefficient": np.percentile(S[:, i], [2.5, 97.5]).tolist(),
                         "exponent": np.percentile(S[:, i + 1], [2.5, 97.5]).tolist()}
            d["stderr"] = {"coefficient": float(np.std(S[:, i], ddof=1)),
                           "exponent": float(np.std(S[:, i + 1], ddof=1))}
        return d

    return IsoflopResult(budgets=table, N_law=law(kN, aN, 0), D_law=law(kD, aD, 2),
                         c_law={"coefficient": kc, "exponent": ec}, n_runs=len(curves), n_bootstrap=int(bootstrap),
                         n_failed=failed, seed=int(seed), warnings=warnings, matrix=M)
