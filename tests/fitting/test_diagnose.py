"""Convergence is called by what the fit shows (a negligible gradient where the starts agree), not by scipy's
message; a fit that did not converge says why; --eval-at's objective at published parameters."""

import numpy as np
import pytest

from costlaw.fitting import evaluate_at, fit, get_law


def test_a_correct_fit_with_a_line_search_message_is_converged(synthetic):
    # Near-noiseless Chinchilla-like data: L-BFGS-B ends every refinement with "ABNORMAL" (a line search at float
    # precision) although all ten starts agree at |grad| ~1e-11. This was labelled "NOT CONVERGED (ABNORMAL: )".
    X, y, _ = synthetic("chinchilla", n=16, noise=1e-6, seed=1)
    res = fit("chinchilla", X, y)
    assert "scipy: ABNORMAL" in res.message and res.n_at_best == res.n_refined == 10
    assert res.success and res.reason is None and res.grad_norm < 1e-9


def test_a_fit_that_did_not_converge_names_the_reason(synthetic, monkeypatch):
    from costlaw.fitting import minimise

    monkeypatch.setattr(minimise, "MAXITER", 2)
    X, y, _ = synthetic("chinchilla", noise=0.01, seed=2)
    res = fit("chinchilla", X, y, starts=40)
    assert not res.success
    assert res.reason.startswith("iteration limit reached after") and "refined starts reach the best" in res.reason
    assert "ITERATIONS" in res.message and res.to_dict()["reason"] == res.reason
    from costlaw.analysis.fits.render import render

    entry = {**res.to_dict(), "group": {}}
    text = render(entry, {"law": "chinchilla", "formula": "", "x": ["N", "D"], "y": "loss", "options": {"seed": 0}})
    assert f"NOT CONVERGED ({res.reason})" in text


def test_eval_at_published_parameters(chinchilla):
    law = get_law("chinchilla")
    for key in ("hoffmann_rounded", "hoffmann_tex_unrounded"):
        a = chinchilla["anchors"][key]
        ev = evaluate_at(law, chinchilla["X"], chinchilla["y"], {k: a[k] for k in law.params})
        assert ev.objective == pytest.approx(a["objective_sum_huber_on_240"], rel=1e-4), key
        assert ev.grad_norm > 1e-3  # not an optimum of these data
    h = chinchilla["anchors"]["epoch_headline_huber_mle_with_scale"]
    ev = evaluate_at(law, chinchilla["X"], chinchilla["y"], {k: h[k] for k in law.params}, loss="l1")
    assert ev.objective == pytest.approx(h["lad_objective"], rel=1e-5)  # the anchor's parameters are rounded
    best = chinchilla["anchors"]["huber_sum_delta1e-3_optimum"]
    res = fit(law, chinchilla["X"], chinchilla["y"])
    at = evaluate_at(law, chinchilla["X"], chinchilla["y"], res.params)
    assert at.objective == pytest.approx(res.objective, rel=1e-12) and at.grad_norm < 1e-6
    assert at.objective == pytest.approx(best["objective_sum_huber"], rel=1e-6)
    np.testing.assert_allclose(at.y_pred, res.predict(chinchilla["X"]), rtol=1e-12)
    assert at.r2 == pytest.approx(res.r2, rel=1e-12)
