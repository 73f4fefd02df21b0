"""bootstrap: intervals cover the truth, refits really refit, derived quantities, seeded reproducibility."""

import json

import numpy as np
import pytest

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import bootstrap, fit, get_law


def test_intervals_cover_the_true_parameters(synthetic):
    # 20 noisy data sets from known parameters: each parameter inside its 95% percentile interval in at
    # least 90% of them (80 resamples each and 3 refined starts, to stay fast).
    law = get_law("gqa-size")
    covered = {k: 0 for k in law.params}
    for seed in range(20):
        X, y, truth = synthetic("gqa-size", n=24, noise=0.02, seed=seed)
        res = fit(law, X, y, refine=3)
        boot = bootstrap(law, X, y, res, n=80, seed=seed)
        for k in law.params:
            lo, hi = boot.ci95[k]
            covered[k] += lo <= truth[k] <= hi
    assert all(c >= 18 for c in covered.values()), covered


def test_refits_move_and_noiseless_data_gives_zero_spread(synthetic):
    X, y, truth = synthetic("compute", noise=0.01, seed=5)
    res = fit("compute", X, y)
    boot = bootstrap("compute", X, y, res, n=40, seed=1)
    assert boot.n_failed == 0
    # A refit that stalled at its start (the full-data optimum) would return it unchanged.
    assert not np.any(np.all(boot.theta_samples == res.theta, axis=1))
    assert all(boot.stderr[k] > 0 for k in ("A", "E", "alpha"))
    X, y, truth = synthetic("compute")
    exact = bootstrap("compute", X, y, fit("compute", X, y), n=10, seed=1)
    for k, v in truth.items():
        np.testing.assert_allclose(exact.samples[k], v, rtol=1e-6)


def test_same_seed_same_output_other_seed_differs(synthetic):
    X, y, _ = synthetic("gqa-size", noise=0.01, seed=2)
    res = fit("gqa-size", X, y)
    a = bootstrap("gqa-size", X, y, res, n=30, seed=7)
    b = bootstrap("gqa-size", X, y, res, n=30, seed=7)
    c = bootstrap("gqa-size", X, y, res, n=30, seed=8)
    assert json.dumps(a.to_dict(samples=True)) == json.dumps(b.to_dict(samples=True))
    assert not np.array_equal(a.samples["b"], c.samples["b"])


def test_derived_quantities_and_chinchilla_exponent(synthetic):
    X, y, truth = synthetic("chinchilla", n=36, noise=0.005, seed=3)
    law = get_law("chinchilla")
    res = fit(law, X, y, refine=3)
    point = np.array([[3e10, 6e11]])  # beyond the data: an extrapolated prediction with an interval
    boot = bootstrap(law, X, y, res, n=40, seed=0,
                     derived={"loss@3e10,6e11": lambda p: float(law.predict(p, point)[0])})
    assert set(boot.samples) == {*law.params, "N_opt_exponent", "D_opt_exponent", "loss@3e10,6e11"}
    a = boot.samples["N_opt_exponent"]
    np.testing.assert_allclose(a, boot.samples["beta"] / (boot.samples["alpha"] + boot.samples["beta"]))
    assert boot.estimates["N_opt_exponent"] == pytest.approx(res.params["beta"] / (res.params["alpha"]
                                                                                  + res.params["beta"]))
    lo, hi = boot.ci95["loss@3e10,6e11"]
    assert lo < boot.estimates["loss@3e10,6e11"] < hi
    assert lo < float(law.predict(truth, point)[0]) < hi
    assert boot.stderr["loss@3e10,6e11"] == pytest.approx(np.std(boot.samples["loss@3e10,6e11"], ddof=1))
    json.dumps(boot.to_dict(), allow_nan=False)


def test_inverse_over_samples_for_the_recommender(synthetic):
    # N* = inverse(target) per resample, vectorised; a target below some samples' floor E gives inf there.
    X, y, _ = synthetic("gqa-size", noise=0.01, seed=4)
    law = get_law("gqa-size")
    res = fit(law, X, y)
    boot = bootstrap(law, X, y, res, n=50, seed=0)
    n_star = law.inverse(boot.param_samples(), 2.3, strict=False)
    assert n_star.shape == (50,) and np.all(np.isfinite(n_star))
    np.testing.assert_allclose(law.predict({k: boot.samples[k][0] for k in law.params}, [[n_star[0]]]), 2.3)
    E = boot.samples["E"]
    target = float(np.median(E))
    edge = law.inverse(boot.param_samples(), target, strict=False)
    assert np.all(np.isinf(edge[E >= target])) and np.all(np.isfinite(edge[E < target]))
    with pytest.raises(CostlawError, match="strict=False gives inf"):
        bootstrap(law, X, y, res, n=5, derived={"N*": lambda p: law.inverse(p, target)})


def test_percentile_interval_handles_infinite_samples(synthetic):
    X, y, _ = synthetic("gqa-size", noise=0.01, seed=4)
    law = get_law("gqa-size")
    res = fit(law, X, y)
    boot = bootstrap(law, X, y, res, n=40, seed=0, derived={"N*": lambda p: law.inverse(p, 1.0, strict=False)})
    assert boot.ci95["N*"] == [np.inf, np.inf]
    assert boot.to_dict()["ci95"]["N*"] == [None, None]


def test_band_and_predict_samples(synthetic):
    X, y, _ = synthetic("gqa-size", noise=0.01, seed=6)
    res = fit("gqa-size", X, y)
    boot = bootstrap("gqa-size", X, y, res, n=30, seed=0)
    P = boot.predict_samples(X)
    lo, hi = boot.band(X)
    assert P.shape == (30, len(y)) and np.all(lo <= hi)
    assert np.all((lo <= res.predict(X) * (1 + 1e-9)) & (res.predict(X) <= hi * (1 + 1e-9)))


def test_bootstrap_input_errors(synthetic):
    X, y, _ = synthetic("gqa-size", noise=0.01, seed=1)
    res = fit("gqa-size", X, y)
    with pytest.raises(CostlawError, match="the fit is of law gqa-size"):
        bootstrap("compute", X, y, res, n=10)
    with pytest.raises(CostlawError, match="n must be an integer >= 2"):
        bootstrap("gqa-size", X, y, res, n=1)
    with pytest.raises(CostlawError, match="pass the fitted data"):
        bootstrap("gqa-size", X[:-1], y[:-1], res, n=10)
    with pytest.raises(CostlawError, match="is a parameter name"):
        bootstrap("gqa-size", X, y, res, n=5, derived={"E": lambda p: 1.0})
