"""holdout_largest: fit below the largest runs, predict them, report relative errors."""

import json

import numpy as np
import pytest

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import holdout_largest


def test_noiseless_law_extrapolates_exactly(synthetic):
    X, y, _ = synthetic("gqa-size", n=10)
    ho = holdout_largest("gqa-size", X, y, k=2)
    assert ho.n_train == 8 and len(ho.rows) == 2 and ho.by == "N"
    assert ho.threshold == pytest.approx(X[-2, 0])
    assert [r["x"]["N"] for r in ho.rows] == pytest.approx(list(X[-2:, 0]))
    assert ho.max_abs_rel_error < 1e-8
    assert all(r["extrapolation"] > 1 for r in ho.rows)
    assert ho.rows[0]["extrapolation"] < ho.rows[1]["extrapolation"]
    json.dumps(ho.to_dict(), allow_nan=False)


def test_errors_are_signed_relative_errors_of_the_heldout_runs(synthetic):
    X, y, truth = synthetic("compute", n=14, noise=0.005, seed=1)
    y = y.copy()
    y[-1] *= 1.05  # the largest run came out 5% worse than the law says
    ho = holdout_largest("compute", X, y, k=3)
    last = ho.rows[-1]
    assert last["y_true"] == pytest.approx(y[-1])
    assert last["rel_error"] == pytest.approx(last["y_pred"] / last["y_true"] - 1)
    assert last["rel_error"] == pytest.approx(1 / 1.05 - 1, abs=0.01)
    assert ho.max_abs_rel_error == pytest.approx(max(abs(r["rel_error"]) for r in ho.rows))
    assert ho.mean_abs_rel_error == pytest.approx(np.mean([abs(r["rel_error"]) for r in ho.rows]))
    # The training fit never saw the held-out rows.
    assert ho.fit.n_points == 11


def test_ties_at_the_threshold_are_held_out_together(synthetic):
    X, y, _ = synthetic("chinchilla", n=36, noise=0.003, seed=2)
    ho = holdout_largest("chinchilla", X, y, k=1, by="N", refine=3)
    # k = 1 by N: the whole largest-N column of the 6 x 6 grid goes, so the fit is a clean extrapolation.
    assert len(ho.rows) == 6 and ho.n_train == 30
    assert all(r["x"]["N"] == X[:, 0].max() for r in ho.rows)
    by_d = holdout_largest("chinchilla", X, y, k=2, by=1, refine=3)
    assert by_d.by == "D" and len(by_d.rows) == 6


def test_rank_by_another_quantity(synthetic):
    X, y, _ = synthetic("chinchilla", n=36, noise=0.003, seed=2)
    C = 6 * X[:, 0] * X[:, 1]
    ho = holdout_largest("chinchilla", X, y, k=4, by=C, refine=3)
    assert ho.by == "values" and len(ho.rows) == 4
    assert sorted(6 * r["x"]["N"] * r["x"]["D"] for r in ho.rows) == pytest.approx(sorted(C)[-4:])


@pytest.mark.parametrize("kwargs,pattern", [
    ({"k": 0}, "k must be a positive integer"),
    ({"k": 10}, "leaves no training rows"),
    ({"k": 8}, "2 training rows .* 3 free parameters"),
    ({"by": "D"}, "'D' is not one of N"),
    ({"by": 3}, "index 3 out of range"),
    ({"by": np.ones(3)}, "need 10 finite values"),
])
def test_holdout_input_errors(synthetic, kwargs, pattern):
    X, y, _ = synthetic("gqa-size", n=10)
    with pytest.raises(CostlawError, match=pattern):
        holdout_largest("gqa-size", X, y, **kwargs)
