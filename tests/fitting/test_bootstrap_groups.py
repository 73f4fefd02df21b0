"""Bootstrap over groups of rows (seeds, LR-sweep rows, checkpoints of one run), and the guard for resamples that
cannot identify the law."""

import numpy as np
import pytest

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import bootstrap, fit


def test_grouped_rows_are_drawn_together(synthetic):
    # Three identical copies of every run (checkpoints that carry no new information): resampling rows treats them
    # as independent and shrinks the interval by ~sqrt(3); resampling the groups gives the one-copy bootstrap.
    X, y, _ = synthetic("gqa-size", noise=0.01, seed=6)
    Xd, yd, gid = np.tile(X, (3, 1)), np.tile(y, 3), np.tile(np.arange(len(y)), 3)
    one = bootstrap("gqa-size", X, y, fit("gqa-size", X, y), n=200, seed=1)
    res3 = fit("gqa-size", Xd, yd)
    grouped = bootstrap("gqa-size", Xd, yd, res3, n=200, seed=1, groups=gid)
    rows = bootstrap("gqa-size", Xd, yd, res3, n=200, seed=1)
    assert grouped.grouped and grouped.n_groups == len(y) and grouped.to_dict()["n_groups"] == len(y)
    for k in ("b", "E"):
        assert grouped.stderr[k] == pytest.approx(one.stderr[k], rel=1e-4), k
        assert rows.stderr[k] < 0.75 * grouped.stderr[k], k
    # Groups of one row are the row bootstrap.
    same = bootstrap("gqa-size", X, y, fit("gqa-size", X, y), n=50, seed=2, groups=[f"r{i}" for i in range(len(y))])
    np.testing.assert_array_equal(same.theta_samples,
                                  bootstrap("gqa-size", X, y, fit("gqa-size", X, y), n=50, seed=2).theta_samples)
    with pytest.raises(CostlawError, match="every point is in one group"):
        bootstrap("gqa-size", X, y, fit("gqa-size", X, y), n=5, groups=np.zeros(len(y)))


def test_resamples_that_cannot_identify_the_law_are_counted_and_left_out(synthetic):
    # 4 sizes for 3 parameters: a resample holding fewer than 3 distinct sizes has no answer to refit.
    X, y, _ = synthetic("gqa-size", n=4, noise=0.005, seed=1)
    res = fit("gqa-size", X, y)
    boot = bootstrap("gqa-size", X, y, res, n=300, seed=0)
    # P(at most 2 distinct of 4 in 4 draws) = (4 + 6·(2^4 - 2)) / 4^4 = 88/256 = 0.34.
    assert 0.25 * 300 < boot.n_unidentified < 0.45 * 300
    assert boot.n_used + boot.n_failed + boot.n_unidentified == 300
    assert len(boot.samples["b"]) == boot.n_used and len(boot.theta_samples) == boot.n_used
    text = " ".join(boot.warnings)
    assert "4 points for 3 free parameters" in text and "left out of the intervals" in text
    d = boot.to_dict()
    assert d["n_unidentified"] == boot.n_unidentified and d["warnings"] == boot.warnings


def test_enough_runs_give_no_warning(synthetic):
    X, y, _ = synthetic("gqa-size", n=12, noise=0.005, seed=1)
    boot = bootstrap("gqa-size", X, y, fit("gqa-size", X, y), n=100)
    assert boot.warnings == [] and boot.n_unidentified == 0 and boot.n_used == 100
