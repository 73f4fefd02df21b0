"""Fixed, tied and bounded parameters, given starts and random starts in a box (fitting/constraints.py,
fitting/starts.py); bounds bound the parameter's value, never the optimiser's step."""

import numpy as np
import pytest

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import Law, fit, get_law


def _decay_law(bounds):
    # y = A·x^-k, fitted as log y = log A - k·log x; k bounded by the law itself.
    return Law("decay-test", ("x",), ("A", "k"), lambda T, F: T[:, :1] - T[:, 1:2] * F[:, 0],
               theta_names=("log_A", "k"), to_params=lambda t: {"A": np.exp(t[..., 0]), "k": t[..., 1]},
               from_params=lambda p: np.array([np.log(p["A"]), p["k"]]), scales=("log", "identity"),
               bounds=bounds, grid={"log_A": [1.0], "k": [0.5]})


def test_a_bound_bounds_the_parameter_not_the_step():
    # True k = 0.3 lies below the start 0.5; with the bound (0, None) the fit must still reach it. (The bound once
    # bounded the step from the start, so k could only grow: the fit ended at k = 0.5, objective 1.76, "converged".)
    x = np.geomspace(1, 1e4, 12)
    y = 2.0 * x ** -0.3
    law = _decay_law([(None, None), (0.0, None)])
    res = fit(law, x, y, starts={"A": 1.0, "k": 0.5}, loss="l2")
    assert res.params["k"] == pytest.approx(0.3, abs=1e-7) and res.params["A"] == pytest.approx(2.0, rel=1e-6)
    assert res.objective < 1e-12 and res.success and res.at_bounds == []
    # The same through a user bound in natural units, on a law without bounds of its own.
    free = _decay_law(None)
    res = fit(free, x, y, starts={"A": 1.0, "k": 0.5}, loss="l2", bounds={"k": (0.0, None)})
    assert res.params["k"] == pytest.approx(0.3, abs=1e-7)
    # A bound that excludes the truth holds, and the fit says the parameter sits on it.
    res = fit(free, x, y, starts={"A": 1.0, "k": 0.5}, loss="l2", bounds={"k": (0.4, 1.0)})
    assert res.params["k"] == pytest.approx(0.4, abs=1e-12)
    assert res.at_bounds == [{"param": "k", "side": "lower", "bound": 0.4}] and res.to_dict()["at_bounds"]


def test_fix_tie_and_bounds_on_chinchilla(synthetic):
    X, y, truth = synthetic("chinchilla", noise=0.003, seed=4)
    law = get_law("chinchilla")
    res = fit(law, X, y, fix={"E": truth["E"]}, tie={"beta": "alpha"}, bounds={"A": (1.0, 1e5)})
    p = res.params
    assert p["E"] == truth["E"] and p["beta"] == p["alpha"] and 1.0 <= p["A"] <= 1e5
    assert res.space.free == ["A", "B", "alpha"] and res.success
    d = res.to_dict()
    assert d["fixed"] == {"E": truth["E"]} and d["tied"] == {"beta": "alpha"} and d["bounds"] == {"A": [1.0, 1e5]}
    # Holding E at its true value and freeing the rest recovers the others.
    free = fit(law, X, y, fix={"E": truth["E"]})
    assert free.params["alpha"] == pytest.approx(truth["alpha"], abs=0.02)
    assert free.params["beta"] == pytest.approx(truth["beta"], abs=0.02)
    # The fixed fit can only be worse than the free one.
    assert fit(law, X, y).objective <= free.objective * (1 + 1e-9)


def test_init_is_always_refined_and_partial_init_replaces_grid_values(synthetic):
    X, y, truth = synthetic("gqa-size", noise=0.002, seed=3)
    law = get_law("gqa-size")
    res = fit(law, X, y, init=truth, refine=1)
    assert res.n_refined == 2 and res.params["b"] == pytest.approx(truth["b"], rel=0.05)
    part = fit(law, X, y, init={"b": 0.3})
    grid = law.start_grid(law.features(X), np.log(y))
    assert part.n_starts == len(grid) + len(np.unique(grid[:, [0, 2]], axis=0))


def test_random_starts_in_a_box_are_seeded_and_inside(synthetic):
    from costlaw.fitting import starts
    from costlaw.fitting.constraints import Space

    X, y, _ = synthetic("chinchilla", noise=0.003, seed=4)
    law = get_law("chinchilla")
    space = Space(law)
    Z, n_init = starts.build(law, space, law.features(X), np.log(y), starts=10, seed=5,
                             box={"alpha": (0.2, 0.4), "A": (100.0, 1000.0)}, random_starts=50)
    extra = Z[10:]
    assert n_init == 0 and len(extra) == 50
    assert np.all((extra[:, 3] >= 0.2) & (extra[:, 3] <= 0.4))
    assert np.all((np.exp(extra[:, 0]) >= 100) & (np.exp(extra[:, 0]) <= 1000))
    again, _ = starts.build(law, space, law.features(X), np.log(y), starts=10, seed=5,
                            box={"alpha": (0.2, 0.4), "A": (100.0, 1000.0)}, random_starts=50)
    np.testing.assert_array_equal(Z, again)
    res = fit(law, X, y, random_starts=50, start_box={"alpha": (0.2, 0.4)}, starts=100)
    assert res.n_starts == 150


@pytest.mark.parametrize("kwargs, pattern", [
    ({"fix": {"Q": 1.0}}, "--fix: 'Q' is not a parameter of chinchilla; its parameters are A, B, E, alpha, beta"),
    ({"fix": {"E": -1.0}}, "--fix: E=-1 is outside chinchilla's form"),
    ({"tie": {"alpha": "A"}}, "--tie: alpha and A are fitted on different scales"),
    ({"tie": {"alpha": "beta", "beta": "alpha"}}, "--tie: .* is a cycle"),
    ({"tie": {"alpha": "alpha"}}, "ties a parameter to itself"),
    ({"fix": {"alpha": 0.3}, "tie": {"alpha": "beta"}}, "--tie: alpha is also fixed"),
    ({"bounds": {"alpha": (1.0, 0.5)}}, "--bounds: alpha=1:0.5 is empty"),
    ({"bounds": {"E": (None, -1.0)}}, "--bounds: E is > 0 in chinchilla"),
    ({"bounds": {"beta": (0, 1)}, "tie": {"beta": "alpha"}}, "--bounds: beta is tied to alpha; bound alpha"),
    ({"init": {"beta": 0.3}, "tie": {"beta": "alpha"}}, "--init: beta is tied to alpha; give alpha instead"),
    ({"start_box": {"alpha": (0.1, 0.5)}}, "--start-box: gives the box for random starts"),
])
def test_constraint_errors_are_one_line(synthetic, kwargs, pattern):
    X, y, _ = synthetic("chinchilla", n=16)
    with pytest.raises(CostlawError, match=pattern) as e:
        fit("chinchilla", X, y, **kwargs)
    assert "\n" not in str(e.value)


def test_a_jointly_fitted_parameter_cannot_be_constrained_alone(synthetic):
    X, y, truth = synthetic("gqa-size")
    with pytest.raises(CostlawError, match="gqa-size fits a only jointly .* give the law as --formula"):
        fit("gqa-size", X, y, fix={"a": 1e8})
    res = fit("gqa-size", X, y, fix={"b": truth["b"]})  # b and E have scales of their own
    assert res.params["b"] == truth["b"] and res.params["a"] == pytest.approx(truth["a"], rel=1e-5)


def test_not_identified_parameters_are_named():
    from costlaw.fitting.formula import formula_law

    x = np.geomspace(1, 100, 10)
    y = 3.0 * x ** -0.5
    law = formula_law("A*B*x**(-k)", ("x",))  # only the product A·B is identified
    res = fit(law, x, y, init={"A": 1.0, "B": 1.0, "k": 0.4}, loss="l2")
    assert set(res.not_identified) == {"A", "B"} and res.to_dict()["not_identified"] == res.not_identified
    assert res.params["A"] * res.params["B"] == pytest.approx(3.0, rel=1e-6)
    assert fit(formula_law("A*x**(-k)", ("x",)), x, y, init={"A": 1.0, "k": 0.4}).not_identified == []
