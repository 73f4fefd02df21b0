"""Variable projection: the exponents searched, the coefficients profiled out; its optimum is the joint fit's."""

import numpy as np
import pytest

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import fit, formula_law, varpro_fit
from costlaw.fitting.varpro import split


@pytest.mark.parametrize("loss", ["huber", "l2"])
def test_varpro_reaches_the_joint_optimum_on_chinchilla(chinchilla, loss):
    X, y = chinchilla["X"], chinchilla["y"]
    joint, vp = fit("chinchilla", X, y, loss=loss), varpro_fit("chinchilla", X, y, loss=loss)
    assert vp.objective == pytest.approx(joint.objective, rel=1e-9) and vp.success
    for k in ("alpha", "beta", "E"):
        assert vp.params[k] == pytest.approx(joint.params[k], rel=1e-5), k
    for k in ("A", "B"):
        assert vp.params[k] == pytest.approx(joint.params[k], rel=1e-4), k
    assert vp.settings["method"] == "varpro" and vp.n_starts == 41 * 41


def test_varpro_on_other_laws_and_raw_weighted_residuals(synthetic):
    X, y, _ = synthetic("gqa-size", noise=0.01, seed=3)
    w = np.linspace(1, 3, len(y))
    for kw in ({}, {"residuals": "raw", "loss": "l2", "weights": w}):
        vp, joint = varpro_fit("gqa-size", X, y, **kw), fit("gqa-size", X, y, **kw)
        assert vp.objective == pytest.approx(joint.objective, rel=1e-8), kw
    assert split(formula_law("E + A/N**alpha + B/D**beta", ("N", "D"))) == ([0, 1, 3], [2, 4])


def test_varpro_refuses_laws_it_cannot_project(synthetic):
    X, y, _ = synthetic("gqa-size")
    with pytest.raises(CostlawError, match="not linear in its coefficients"):
        varpro_fit(formula_law("(a/N)**b + E", ("N",)), X, y)
    with pytest.raises(CostlawError, match="--loss l1 has no smooth profile"):
        varpro_fit("gqa-size", X, y, loss="l1")
