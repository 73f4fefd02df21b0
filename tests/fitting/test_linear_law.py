"""The linear law y = a + b·x: exact on noiseless data, recovers a and b through noise, proportional data
drive a to 0, the Jacobian is right, and `costlaw fit --law linear` fits per group."""

import json

import numpy as np
import pandas as pd
import pytest

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import fit, get_law, laws
from costlaw.fitting.objective import value_and_grad

CONTEXTS = 2.0 ** np.arange(10, 17)  # 1K..64K, the calibration benchmark's contexts


def test_registered_with_two_positive_params():
    law = laws()["linear"]
    assert law.variables == ("x",) and law.params == ("a", "b")
    assert law.theta_names == ("log_a", "log_b")
    with pytest.raises(CostlawError, match="outside the linear form"):
        law.theta_of({"a": -1.0, "b": 2.0})


@pytest.mark.parametrize("a, b", [(2e-4, 3e-9), (5.0, 2.0), (1.6e8, 2.4e4)])
def test_noiseless_fit_is_exact(a, b):
    y = a + b * CONTEXTS
    res = fit("linear", CONTEXTS, y)
    assert res.success, res.message
    assert res.n_at_best >= 2 and res.objective < 1e-20 and res.r2 > 1 - 1e-12
    assert res.params["a"] == pytest.approx(a, rel=1e-8)
    assert res.params["b"] == pytest.approx(b, rel=1e-8)
    np.testing.assert_allclose(res.predict(CONTEXTS), y, rtol=1e-10)


def test_proportional_data_send_the_intercept_to_zero():
    y = 6e-9 * CONTEXTS
    res = fit("linear", CONTEXTS, y)
    assert res.success, res.message
    assert res.params["b"] == pytest.approx(6e-9, rel=1e-7)
    assert res.params["a"] < 1e-6 * y.min()


def test_recovers_known_params_through_noise():
    a, b = 2.5e-4, 4e-9  # decode seconds per token: a fixed step plus KV reads growing with T
    x = np.repeat(np.geomspace(1024, 65536, 13), 3)
    rng = np.random.default_rng(7)
    y = (a + b * x) * np.exp(rng.normal(0.0, 0.01, len(x)))
    res = fit("linear", x, y)
    assert res.success, res.message
    assert res.params["a"] == pytest.approx(a, rel=0.02)
    assert res.params["b"] == pytest.approx(b, rel=0.02)
    assert 0.99 < res.r2 < 1.0
    # The optimum is interior, so the objective cannot be lowered by nudging either parameter.
    law = get_law("linear")
    model = law.bind(law.features(x[:, None]))
    for i in range(2):
        for h in (-1e-4, 1e-4):
            t = res.theta.copy()
            t[i] += h
            assert value_and_grad(model, t, np.log(y), None, "huber", 1e-3)[0] > res.objective


def test_jacobian_matches_finite_differences():
    law = get_law("linear")
    model = law.bind(law.features(CONTEXTS[:, None]))
    theta = np.array([np.log(3e-4), np.log(2e-9)])
    g, J = model.linearise(theta)
    np.testing.assert_allclose(g, np.log(3e-4 + 2e-9 * CONTEXTS), rtol=1e-13)
    h = 1e-6
    for i in range(2):
        step = np.zeros(2)
        step[i] = h
        fd = (model.log_predict((theta + step)[None])[0] - model.log_predict((theta - step)[None])[0]) / (2 * h)
        np.testing.assert_allclose(J[:, i], fd, rtol=1e-7, atol=1e-10)


def test_inverse_and_floor():
    law = get_law("linear")
    p = {"a": 2e-4, "b": 3e-9}
    assert law.inverse(p, 2e-4 + 3e-9 * 50_000) == pytest.approx(50_000)
    assert law.inverse(p, 1e-4, strict=False) == np.inf
    with pytest.raises(CostlawError, match="unreachable"):
        law.inverse(p, 1e-4)


def test_cli_fits_per_family(tmp_path, capsys):
    from costlaw.cli import main

    truth = {"gqa": (2e-4, 4e-9), "hybrid": (2.2e-4, 1.5e-9)}
    df = pd.DataFrame([{"family": f, "context": T, "decode_s_per_token": a + b * T}
                       for f, (a, b) in truth.items() for T in CONTEXTS])
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    capsys.readouterr()
    rc = main(["fit", "--data", str(path), "--law", "linear", "--x", "context", "--y", "decode_s_per_token",
               "--group-by", "family", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    got = {r["group"]["family"]: r["params"] for r in json.loads(out)["candidates"]}
    for f, (a, b) in truth.items():
        assert got[f]["a"] == pytest.approx(a, rel=1e-7) and got[f]["b"] == pytest.approx(b, rel=1e-7)
    rc = main(["fit", "--list-laws"])
    out, _ = capsys.readouterr()
    assert rc == 0 and "linear" in out and "a + b*x" in out
