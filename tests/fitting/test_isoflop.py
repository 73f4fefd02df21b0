"""IsoFLOP profiles from curves (fitting/isoflop.py): loss at a budget by interpolation, a parabola per budget,
N*(C) and D*(C) power laws with bootstrap intervals, and every skip said with its reason."""

import numpy as np
import pytest

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting.isoflop import Curve, budget_grid, isoflop, loss_matrix, parabola

A, B, E, ALPHA, BETA = 406.4, 410.7, 1.69, 0.34, 0.28


def curves(sizes=None, d_max=3e11):
    out = []
    for i, N in enumerate(np.geomspace(1e7, 3e9, 16) if sizes is None else sizes):
        D = np.geomspace(1e8, d_max, 200)
        out.append(Curve(f"r{i}", N, 6 * N, 6 * N * D, E + A / N ** ALPHA + B / D ** BETA))
    return out


def test_interpolation_and_coverage():
    c = [Curve("a", 1.0, 1.0, np.array([10.0, 100.0, 1000.0]), np.array([3.0, 2.0, 1.5]))]
    M = loss_matrix(c, [5.0, 10.0, np.sqrt(1000.0), 1000.0, 2000.0])
    np.testing.assert_allclose(M[0], [np.nan, 3.0, 2.5, 1.5, np.nan])  # linear in log C between logged points


def test_parabola_recovers_a_known_minimum():
    x = np.log(np.geomspace(1e7, 1e9, 9))
    a, b, c = parabola(x, 0.1 * (x - np.log(1e8)) ** 2 + 2.0)
    assert np.exp(-b / (2 * a)) == pytest.approx(1e8, rel=1e-9) and a == pytest.approx(0.1)


def test_the_optimum_follows_the_law():
    res = isoflop(curves(), np.geomspace(1e18, 1e21, 7), bootstrap=300, seed=0)
    a_true = BETA / (ALPHA + BETA)
    # A parabola in log N is an approximation of each profile: the exponent is within 0.01 of the law's.
    assert res.N_law["exponent"] == pytest.approx(a_true, abs=0.01)
    assert res.N_law["exponent"] + res.D_law["exponent"] == pytest.approx(1.0, abs=1e-9)  # C = 6·N*·D*
    lo, hi = res.N_law["ci95"]["exponent"]
    assert lo <= res.N_law["exponent"] <= hi and hi - lo < 0.05
    G = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    t = next(t for t in res.budgets if t["C"] == pytest.approx(1e20))
    assert t["N_star"] == pytest.approx(G * (1e20 / 6) ** a_true, rel=0.05)
    assert t["D_star"] == pytest.approx(1e20 / (6 * t["N_star"]), rel=1e-9)
    # The largest budget is beyond the smaller runs' curves: they are skipped there, and counted.
    assert res.budgets[-1]["n_skipped"] > 0 and res.budgets[-1]["n_runs"] + res.budgets[-1]["n_skipped"] == 16
    d = res.to_dict()
    assert d["N_star"]["ci95"] and d["n_bootstrap"] == 300 and d["flops_per_token"]["exponent"] == pytest.approx(1.0)


def test_budgets_without_enough_runs_or_a_minimum_say_why():
    cs = curves(sizes=np.geomspace(1e7, 1e8, 5))
    res = isoflop(cs, [1e16, 1e17, 1e18, 1e19, 1e21], bootstrap=0)
    reasons = {t["C"]: t["reason"] for t in res.budgets}
    assert reasons[1e16] == "1 run(s) reach this budget; a parabola needs 3 at 3 sizes or more"
    assert reasons[1e19] == "the minimum lies outside the sizes measured (an extrapolation)"
    assert reasons[1e17] is None and reasons[1e18] is None and reasons[1e21].startswith("0 run(s)")
    assert [t["inside"] for t in res.budgets] == [False, True, True, False, False]
    with pytest.raises(CostlawError, match="the power laws need 2 or more"):
        isoflop(cs, [1e18, 1e19, 1e21], bootstrap=0)
    with pytest.raises(CostlawError, match="positive finite FLOP budgets"):
        isoflop(cs, [-1.0], bootstrap=0)


def test_default_grid_lies_where_enough_curves_cover():
    cs = curves()
    g = budget_grid(cs, 6)
    M = loss_matrix(cs, g)
    assert len(g) == 6 and np.all(np.isfinite(M).sum(axis=0) >= 3)
