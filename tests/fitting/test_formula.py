"""Laws from formulas (fitting/formula.py): sums of power terms become LSE laws fitted as the built-ins are; any
other formula is fitted in natural units with an exact forward-mode Jacobian (fitting/dual.py)."""

import numpy as np
import pytest

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import LSELaw, fit, formula_law, get_law
from costlaw.fitting.formula import FormulaLaw


def test_a_power_sum_formula_is_the_built_in_chinchilla_fit(chinchilla):
    law = formula_law("E + A/N**alpha + B/D**beta", ("N", "D"))
    assert isinstance(law, LSELaw) and law.theta_names == ("log_E", "log_A", "alpha", "log_B", "beta")
    res, ref = fit(law, chinchilla["X"], chinchilla["y"]), fit("chinchilla", chinchilla["X"], chinchilla["y"])
    assert res.objective == pytest.approx(ref.objective, rel=1e-12) and res.success
    for k in ref.params:
        assert res.params[k] == pytest.approx(ref.params[k], rel=1e-6), k


@pytest.mark.parametrize("text", ["A*N**(-alpha) + E", "E + 2*A*N**-alpha", "A/N**alpha/D**(2*beta) + 0.5",
                                  "A*N + B*N**2"])
def test_power_sums_are_recognised(text):
    assert isinstance(formula_law(text, ("N", "D") if "D" in text else ("N",)), LSELaw)


@pytest.mark.parametrize("text", ["(a/N)**b + E", "E - A/N**alpha", "A*exp(-k*N) + E", "A/(N + N0)**alpha"])
def test_other_formulas_are_fitted_in_natural_units(text):
    law = formula_law(text, ("N",))
    assert isinstance(law, FormulaLaw) and set(law.scales) == {"identity"}


def test_the_formula_jacobian_is_exact():
    law = formula_law("where(N > 3e7, E + (a/N)**b, c*log(N)) + minimum(s, sqrt(abs(N/1e8))) + exp(-t*N/1e9) "
                      "+ maximum(N/1e9, s)**2 + N**0.0 * (1 if s > 0 and not t < 0 else 2) + 2**(t*3)", ("N",))
    N = np.geomspace(1e6, 1e9, 25)[:, None]
    theta = np.array([2.0, 8.8e7, 0.32, 0.1, 0.4, 0.7])  # E, a, b, c, s, t in order of first use
    assert law.params == ("E", "a", "b", "c", "s", "t")
    model = law.bind(law.features(N))
    v, J = model.linearise_raw(theta)
    np.testing.assert_allclose(v, model.predict(theta[None])[0], rtol=1e-14)
    for i in range(len(theta)):
        h = 1e-6 * max(1.0, abs(theta[i]))
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        fd = (model.predict(up[None])[0] - model.predict(down[None])[0]) / (2 * h)
        np.testing.assert_allclose(J[:, i], fd, rtol=1e-6, atol=1e-9 * np.abs(v).max())
    g, JL = model.linearise(theta)
    np.testing.assert_allclose(JL, J / v[:, None], rtol=1e-14)


def test_a_natural_formula_fits_from_init(synthetic):
    X, y, truth = synthetic("gqa-size", noise=0.002, seed=5)
    law = formula_law("(a/N)**b + E", ("N",))
    res = fit(law, X, y, init={"a": 1e8, "b": 0.3, "E": 2.0}, bounds={"b": (0, 2)})
    ref = fit("gqa-size", X, y)
    assert res.objective == pytest.approx(ref.objective, rel=1e-6) and res.success
    assert res.params["b"] == pytest.approx(ref.params["b"], rel=1e-4)


def test_formula_names_round_trip_through_get_law():
    law = formula_law("E + A/N**alpha", ("N",))
    assert law.name == "formula(N): E + A/N**alpha"
    again = get_law("formula(N): E + A/N**alpha")
    assert again.params == law.params and again.variables == ("N",)


@pytest.mark.parametrize("text, variables, pattern", [
    ("E + A/N**alpha", ("N", "D"), "does not use D"),
    ("N*2", ("N",), "has no parameters"),
    ("__import__('os').system('true')", ("N",), "unknown function"),
    ("A.real + N", ("N",), "attribute access"),
    ("E + A/N**alpha", (), "no variables"),
])
def test_bad_formulas_are_one_line(text, variables, pattern):
    with pytest.raises(CostlawError, match=pattern):
        formula_law(text, variables)
