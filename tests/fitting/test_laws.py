"""Laws: each recovers known parameters from noiseless data, analytic gradients match finite differences,
inverses invert, the registry takes user forms."""

import numpy as np
import pytest

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import (
    CHINCHILLA_GRID,
    Law,
    LSELaw,
    chinchilla_optimal,
    fit,
    get_law,
    laws,
    register_law,
    unregister_law,
)
from costlaw.fitting.objective import value_and_grad

BUILTIN = ["power-plus-constant", "gqa-size", "chinchilla", "compute"]


def test_registry_names_and_unknown_law():
    assert set(BUILTIN) <= set(laws())
    law = get_law("gqa-size")
    assert law.variables == ("N",) and law.params == ("a", "b", "E")
    assert get_law("chinchilla").params == ("A", "B", "E", "alpha", "beta")
    with pytest.raises(CostlawError, match="unknown law 'kaplan'.*chinchilla"):
        get_law("kaplan")


@pytest.mark.parametrize("name", BUILTIN)
def test_noiseless_recovery(name, synthetic):
    X, y, truth = synthetic(name)
    res = fit(name, X, y)
    assert res.success, res.message
    assert res.n_at_best >= 1 and res.n_refined >= 1 and res.n_starts == len(get_law(name).start_grid(
        np.log(X), np.log(y)))
    assert res.objective < 1e-16 and res.r2 > 1 - 1e-12
    for k, v in truth.items():
        assert res.params[k] == pytest.approx(v, rel=1e-5), k
    np.testing.assert_allclose(res.predict(X), y, rtol=1e-8)


def test_chinchilla_default_grid_is_epochs():
    g = get_law("chinchilla").start_grid(np.zeros((1, 2)), np.zeros(1))
    assert g.shape == (4500, 5)
    assert sorted(set(g[:, 0])) == [0, 5, 10, 15, 20, 25] == sorted(set(g[:, 1]))
    assert sorted(set(g[:, 2])) == [-1, -0.5, 0, 0.5, 1]
    assert sorted(set(g[:, 3])) == [0, 0.5, 1, 1.5, 2] == sorted(set(g[:, 4]))
    assert set(CHINCHILLA_GRID) == set(get_law("chinchilla").theta_names)


def test_one_variable_grids_do_not_depend_on_units(synthetic):
    # Data-centred starts: N in millions must fit as well as N in ones.
    X, y, truth = synthetic("gqa-size")
    res = fit("gqa-size", X / 1e6, y)
    assert res.params["a"] == pytest.approx(truth["a"] / 1e6, rel=1e-5)
    assert res.params["b"] == pytest.approx(truth["b"], rel=1e-6)


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("loss", ["huber", "l2"])
def test_gradient_matches_finite_differences(name, loss, synthetic):
    law = get_law(name)
    X, y, truth = synthetic(name, noise=0.02, seed=3)
    rng = np.random.default_rng(1)
    w = rng.integers(0, 3, len(y)).astype(float)
    model = law.bind(law.features(X))
    logy = np.log(y)
    # Perturbed away from the optimum so residuals straddle delta (both Huber zones are exercised).
    theta = law.theta_of(truth) + rng.normal(0, 0.01, len(law.params))
    for weights in (None, w):
        f, g = value_and_grad(model, theta, logy, weights, loss, 1e-3)
        num = np.empty_like(g)
        for i in range(len(theta)):
            h = 1e-6 * max(1.0, abs(theta[i]))
            e = np.zeros_like(theta)
            e[i] = h
            num[i] = (value_and_grad(model, theta + e, logy, weights, loss, 1e-3)[0]
                      - value_and_grad(model, theta - e, logy, weights, loss, 1e-3)[0]) / (2 * h)
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-9 * max(1.0, abs(f)))
    # The Jacobian of log predictions itself, and agreement of the batched and single-vector paths.
    g0, J = model.linearise(theta)
    np.testing.assert_allclose(g0, model.log_predict(theta[None, :])[0], rtol=1e-13)
    for i in range(len(theta)):
        e = np.zeros_like(theta)
        e[i] = 1e-6
        np.testing.assert_allclose(J[:, i], (model.log_predict((theta + e)[None])[0]
                                             - model.log_predict((theta - e)[None])[0]) / 2e-6, rtol=1e-6,
                                   atol=1e-8)


@pytest.mark.parametrize("name", ["power-plus-constant", "gqa-size", "compute"])
def test_inverse_round_trip_and_vectorised(name, synthetic):
    law = get_law(name)
    X, _, truth = synthetic(name)
    y = law.predict(truth, X)
    np.testing.assert_allclose(law.inverse(truth, y), X[:, 0], rtol=1e-9)
    assert isinstance(law.inverse(truth, float(y[0])), float)
    # Bootstrap-style: arrays of params, one target.
    floor = "E" if "E" in truth else "c"
    samples = {k: np.full(3, v) for k, v in truth.items()}
    samples[floor] = np.array([truth[floor], truth[floor], y.min() * 2])
    out = law.inverse(samples, float(y.min() * 1.5), strict=False)
    assert out.shape == (3,) and np.isfinite(out[:2]).all() and out[2] == np.inf
    with pytest.raises(CostlawError, match="unreachable"):
        law.inverse(samples, float(y.min() * 1.5))
    with pytest.raises(CostlawError, match="unreachable"):
        law.inverse(truth, truth[floor] * 0.99)


def test_gqa_inverse_is_the_papers_eq8():
    p = {"a": 8.8e7, "b": 0.32, "E": 1.9}
    assert get_law("gqa-size").inverse(p, 2.5) == pytest.approx(p["a"] / (2.5 - p["E"]) ** (1 / p["b"]))


def test_chinchilla_has_no_inverse():
    with pytest.raises(CostlawError, match="inverse needs one variable"):
        get_law("chinchilla").inverse({"A": 1, "B": 1, "E": 1, "alpha": 1, "beta": 1}, 2.0)


def test_chinchilla_optimal_allocation_matches_research_table():
    # ../shared/research/fitting.md: at C = 5.88e23 the Huber optimum gives N* 7.40e10, D* 1.32e12.
    p = {"A": 477.826, "B": 2143.42, "E": 1.817218, "alpha": 0.347310, "beta": 0.367173}
    N, D = chinchilla_optimal(p, 6 * 70e9 * 1.4e12)
    assert N == pytest.approx(7.40e10, rel=5e-3) and D == pytest.approx(1.32e12, rel=5e-3)
    assert get_law("chinchilla").derived["N_opt_exponent"](p) == pytest.approx(0.367173 / (0.347310 + 0.367173))


def test_theta_of_rejects_params_outside_the_form():
    with pytest.raises(CostlawError, match="amplitudes and constants must be > 0"):
        get_law("gqa-size").theta_of({"a": -1.0, "b": 0.3, "E": 1.0})
    with pytest.raises(CostlawError, match="needs E"):
        get_law("gqa-size").theta_of({"a": 1.0, "b": 0.3})


def _pure_power():
    def log_predict(theta, F):
        return theta[:, :1] + theta[:, 1:2] * F[:, 0]

    def jacobian(theta, F):
        return theta[0] + theta[1] * F[:, 0], np.column_stack([np.ones(len(F)), F[:, 0]])

    return dict(log_predict=log_predict, jacobian=jacobian, theta_names=("log_A", "k"),
                to_params=lambda t: {"A": np.exp(t[..., 0]), "k": t[..., 1]},
                from_params=lambda p: np.array([np.log(p["A"]), p["k"]]),
                grid={"log_A": [0.0, 1.0, 2.0], "k": [-1.0, -0.5, -0.1]}, formula="L = A*x^k")


@pytest.mark.parametrize("with_jacobian", [True, False])
def test_register_law_user_form(with_jacobian):
    spec = _pure_power()
    if not with_jacobian:
        spec.pop("jacobian")  # central differences instead
    law = register_law(Law("test-pure-power", ("x",), ("A", "k"), spec.pop("log_predict"), **spec))
    try:
        assert get_law("test-pure-power") is law
        with pytest.raises(CostlawError, match="already registered"):
            register_law(law)
        x = np.geomspace(1, 1e4, 9)
        y = 3.0 * x ** -0.2
        res = fit("test-pure-power", x, y)
        assert res.params["A"] == pytest.approx(3.0, rel=1e-6) and res.params["k"] == pytest.approx(-0.2, rel=1e-6)
        assert res.n_starts == 9
    finally:
        unregister_law("test-pure-power")
    with pytest.raises(CostlawError, match="unknown law"):
        get_law("test-pure-power")


def test_register_lse_law_two_power_terms():
    # A user LSE form, L = E + A/N^alpha + B/C^gamma, with its own (coarse) grid.
    law = LSELaw("test-two-terms", ("N", "C"), ("A", "B", "E", "alpha", "gamma"),
                 terms=[(0, ((3, 0, -1.0),)), (1, ((4, 1, -1.0),)), (2, ())],
                 to_params=lambda t: {"A": np.exp(t[..., 0]), "B": np.exp(t[..., 1]), "E": np.exp(t[..., 2]),
                                      "alpha": t[..., 3], "gamma": t[..., 4]},
                 from_params=lambda p: np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"],
                                                 p["gamma"]]),
                 grid={"t0": [0, 5, 10], "t1": [0, 5, 10], "t2": [0.0, 0.5], "t3": [0.2, 0.5], "t4": [0.2, 0.5]},
                 theta_names=("t0", "t1", "t2", "t3", "t4"))
    register_law(law)
    try:
        N, C = np.meshgrid(np.geomspace(1e7, 1e10, 5), np.geomspace(1e3, 1e6, 5))
        X = np.column_stack([N.ravel(), C.ravel()])
        truth = {"A": 300.0, "B": 20.0, "E": 1.5, "alpha": 0.3, "gamma": 0.4}
        res = fit("test-two-terms", X, law.predict(truth, X))
        for k, v in truth.items():
            assert res.params[k] == pytest.approx(v, rel=1e-5)
    finally:
        unregister_law("test-two-terms")


def test_law_definition_errors():
    with pytest.raises(CostlawError, match="one theta name per parameter"):
        Law("bad", ("x",), ("a", "b"), lambda t, F: t, theta_names=("a",))
    with pytest.raises(CostlawError, match="both to_params and from_params"):
        Law("bad", ("x",), ("a",), lambda t, F: t, to_params=lambda t: {"a": t})
    with pytest.raises(CostlawError, match="expected a fitting.Law"):
        register_law("gqa-size")


def test_lse_law_with_a_parameter_in_two_terms():
    # Chinchilla with alpha = beta tied (a fallback when data are thin): the shared exponent enters two
    # terms, which takes the general Jacobian path (sum over terms) rather than the one-term gather.
    law = LSELaw("test-tied", ("N", "D"), ("log_A", "log_B", "log_E", "alpha"),
                 terms=[(0, ((3, 0, -1.0),)), (1, ((3, 1, -1.0),)), (2, ())],
                 grid={"log_A": [0.0, 5.0, 10.0], "log_B": [0.0, 5.0, 10.0], "log_E": [0.0, 0.5],
                       "alpha": [0.2, 0.5]})
    N, D = np.meshgrid(np.geomspace(5e7, 1e10, 5), np.geomspace(1e9, 3e11, 5))
    X = np.column_stack([N.ravel(), D.ravel()])
    theta = np.array([np.log(400.0), np.log(900.0), np.log(1.8), 0.33])
    model = law.bind(law.features(X))
    assert model.term_of is None
    g, J = model.linearise(theta)
    for i in range(4):
        e = np.zeros(4)
        e[i] = 1e-6
        np.testing.assert_allclose(J[:, i], (model.log_predict((theta + e)[None])[0]
                                             - model.log_predict((theta - e)[None])[0]) / 2e-6, rtol=1e-6)
    res = fit(law, X, np.exp(g))
    np.testing.assert_allclose(res.theta, theta, rtol=1e-6)
