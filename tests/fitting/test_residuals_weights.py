"""Raw residuals (y - ŷ: y may be <= 0, rising curves fit), weights and the objective's stated definition."""

import numpy as np
import pytest
from scipy.optimize import curve_fit
from scipy.special import huber

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import bootstrap, fit, formula_law


def _accuracy(seed=0, n=14):
    """A rising accuracy curve acc = top - A·C^-alpha with noise whose sd varies by point, some accuracies < 0
    once centred (a chance-corrected score)."""
    rng = np.random.default_rng(seed)
    C = np.geomspace(1e17, 1e21, n)
    sd = np.linspace(0.002, 0.02, n)
    acc = 0.6 - 4.0 * (C / 1e17) ** -0.35 + rng.normal(0, sd)
    return C, acc, sd


def test_raw_l2_with_weights_is_curve_fit_with_sigma():
    C, acc, sd = _accuracy()
    assert (acc < 0).any()  # log residuals could not take these
    law = formula_law("top - A*(C/1e17)**(-alpha)", ("C",))
    res = fit(law, C, acc, residuals="raw", loss="l2", weights=1 / sd ** 2, init={"top": 0.5, "A": 3.0, "alpha": 0.3})
    popt, _ = curve_fit(lambda c, top, A, alpha: top - A * (c / 1e17) ** -alpha, C, acc, p0=[0.5, 3.0, 0.3],
                        sigma=sd, absolute_sigma=True, xtol=1e-15, ftol=1e-15, gtol=1e-15, maxfev=100000)
    for k, v in zip(("top", "A", "alpha"), popt):
        assert res.params[k] == pytest.approx(v, rel=1e-6), k
    r = acc - res.predict(C)
    # The reported objective is half of curve_fit's chi², and says so.
    assert res.objective == pytest.approx(0.5 * np.sum((r / sd) ** 2), rel=1e-9)
    assert res.definition == "sum w·r²/2 (half the sum of squares); r = y - ŷ" and res.success
    d = res.to_dict()
    assert d["residuals"] == "raw" and d["weighted"] is True and d["objective_definition"] == res.definition


def test_log_residuals_refuse_y_at_or_below_zero_and_say_what_to_do():
    C, acc, _ = _accuracy()
    law = formula_law("top - A*(C/1e17)**(-alpha)", ("C",))
    with pytest.raises(CostlawError, match="residuals are taken in log space.*--residuals raw"):
        fit(law, C, acc)


def test_weights_multiply_each_points_loss(synthetic):
    X, y, _ = synthetic("gqa-size", noise=0.01, seed=2)
    w = np.linspace(0.5, 2.0, len(y))
    for loss in ("huber", "l2", "l1"):
        res = fit("gqa-size", X, y, loss=loss, weights=w)
        r = np.log(y) - np.log(res.predict(X))
        per = {"huber": huber(1e-3, r), "l2": 0.5 * r * r, "l1": np.abs(r)}[loss]
        assert res.objective == pytest.approx(float(w @ per), rel=1e-9), loss
    # Integer weights are repeated rows.
    rep = np.repeat(np.arange(len(y)), [1, 2] * (len(y) // 2))
    a = fit("gqa-size", X, y, weights=np.tile([1.0, 2.0], len(y) // 2), loss="l2")
    b = fit("gqa-size", X[rep], y[rep], loss="l2")
    assert a.objective == pytest.approx(b.objective, rel=1e-9)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-6)


def test_bad_weights_are_one_line(synthetic):
    X, y, _ = synthetic("gqa-size")
    for w, pattern in ((-np.ones(len(y)), "negative or not finite"), (np.zeros(len(y)), "every weight is 0"),
                       (np.ones(3), "values for 10 points")):
        with pytest.raises(CostlawError, match=pattern):
            fit("gqa-size", X, y, weights=w)
    res = fit("gqa-size", X, y, weights=np.ones(len(y)))
    with pytest.raises(CostlawError, match="pass the weights the fit used"):
        bootstrap("gqa-size", X, y, res, n=4)


def test_definitions_of_each_objective():
    from costlaw.fitting.objective import definition

    assert definition("huber", 1e-3) == ("sum huber(r), huber(r) = r²/2 if |r| <= 0.001 else 0.001·(|r| - 0.001/2); "
                                         "r = log y - log ŷ")
    assert definition("l1", 1e-3, "raw", True) == "sum w·|r|; r = y - ŷ"


def test_raw_residuals_on_a_built_in_law_match_least_squares(synthetic):
    X, y, _ = synthetic("compute", noise=0.01, seed=3)
    res = fit("compute", X, y, residuals="raw", loss="l2")
    popt, _ = curve_fit(lambda c, A, E, alpha: E + A * c ** -alpha, X[:, 0], y,
                        p0=[res.params["A"], res.params["E"], res.params["alpha"]], xtol=1e-15, ftol=1e-15,
                        gtol=1e-15, maxfev=100000)
    assert res.params["alpha"] == pytest.approx(popt[2], rel=1e-5)
    assert res.objective == pytest.approx(0.5 * np.sum((y - res.predict(X)) ** 2), rel=1e-9)
