"""The group-fit pipeline (analysis/fits): what its fingerprint keys on, canonical row order, unfit groups, and the
store lookup that trusts only entries carrying the fingerprint it was asked for."""

import numpy as np
import pandas as pd
import pytest

from costlaw.analysis.fits import FitOptions, data_fingerprint, fit_groups, lookup, make_groups, split, store_rows
from costlaw.costmodel.core.errors import CostlawError

from .conftest import load_data

N = np.array([1e6, 2e6, 4e6, 8e6, 1.6e7])
LOSS = (3e4 / N) ** 0.35 + 1.7
RUNS = [(f"r{i}", f"f{i}") for i in range(len(N))]


def test_fingerprint_keys_on_runs_points_and_options():
    opts = FitOptions(bootstrap=4)
    X = N[:, None]
    fp = data_fingerprint(opts, X, LOSS, RUNS)
    assert fp == data_fingerprint(opts, X, LOSS, RUNS[::-1])  # the runs are a set
    assert fp != data_fingerprint(opts, X, LOSS, [*RUNS[:-1], ("r4", "changed")])  # a run re-ingested with changes
    assert fp != data_fingerprint(opts, X, LOSS, None)
    assert fp != data_fingerprint(opts, X, LOSS + 1e-12, RUNS)
    for other in (FitOptions(bootstrap=5), FitOptions(bootstrap=4, seed=1), FitOptions(bootstrap=4, y="val_loss"),
                  FitOptions(bootstrap=4, delta=1e-2), FitOptions(bootstrap=4, starts=50),
                  FitOptions(bootstrap=4, holdout_largest=1), FitOptions(law="power-plus-constant", bootstrap=4)):
        assert data_fingerprint(other, X, LOSS, RUNS) != fp, other
    # settings that cannot change the fit do not change the key
    assert data_fingerprint(FitOptions(bootstrap=1), X, LOSS, RUNS) == data_fingerprint(FitOptions(), X, LOSS, RUNS)
    l2 = [data_fingerprint(FitOptions(loss="l2", delta=d), X, LOSS, RUNS) for d in (1e-3, 1e-2)]
    assert l2[0] == l2[1]


def frame(order):
    df = pd.DataFrame({"run_id": [r for r, _ in RUNS] * 2, "h": [1] * 5 + [2] * 5,
                       "params_non_embedding": np.concatenate([N, N]), "loss": np.concatenate([LOSS, LOSS + 0.1])})
    return df.iloc[order]


def test_groups_are_ordered_and_fitted_the_same_whatever_the_row_order():
    opts = FitOptions(bootstrap=4)
    runs = dict(RUNS)
    a = make_groups(split(frame(np.arange(10)), ["h"]), opts, runs=runs)
    b = make_groups(split(frame(np.random.default_rng(3).permutation(10)), ["h"]), opts, runs=runs)
    assert [g.label for g in a] == ["h=1", "h=2"] and [g.key for g in a] == [{"h": 1}, {"h": 2}]
    assert [g.fingerprint for g in a] == [g.fingerprint for g in b]
    assert all(np.all(np.diff(g.X[:, 0]) > 0) for g in b)
    fa, fb = fit_groups(a, opts), fit_groups(b, opts)
    assert [f.entry for f in fa] == [f.entry for f in fb]
    e = fa[0].entry
    # 5 points for 3 parameters: a resample with fewer than 3 distinct sizes cannot identify the law and is left out
    assert e["params"]["E"] == pytest.approx(1.7, rel=1e-4) and len(e["bootstrap"]["a"]) == e["n_used"] >= 2
    assert e["n_used"] + e["n_unidentified"] + e["n_failed"] == 4
    # a stored entry stands in for the fit: the group is not fitted, and only its fit fields are taken
    stored = {a[0].fingerprint: {**fa[0].entry, "label": "elsewhere", "group": {"other": 1}}}
    again = fit_groups(a, opts, stored=stored)
    assert again[0].reused and not again[1].reused
    assert again[0].entry == fa[0].entry and again[0].result is None


def test_unfit_groups_and_one_line_errors():
    opts = FitOptions()
    [g] = make_groups([({"h": 1}, frame(np.arange(3)))], opts, min_sizes=4)
    assert g.reason == "runs at 3 size(s); a fit needs >= 4" and g.fingerprint is None
    [f] = fit_groups([g], opts)
    assert not f.fitted and f.entry == {"group": {"h": 1}, "n_points": 3, "reason": g.reason}
    bad = frame(np.arange(5)).assign(loss=-1.0)
    with pytest.raises(CostlawError, match=r"^group h=1: loss: 5 value\(s\) <= 0"):
        make_groups(split(bad, ["h"]), opts)
    with pytest.raises(ValueError, match="derived"):
        fit_groups([], opts, derived={"x": lambda p: 1.0})


def test_lookup_reads_only_entries_with_the_asked_fingerprint(tmp_path):
    from costlaw.analysis.store import write_fits

    db = load_data("fixtures").build_store(tmp_path, labels=("4,4",))
    opts = FitOptions()
    [g] = make_groups(split(frame(np.arange(5)), None), opts, runs=dict(RUNS))
    [f] = fit_groups([g], opts)
    doc = {"format": "costlaw-fits/1", "law": "gqa-size", "options": opts.to_json(), "candidates": [f.entry]}
    assert lookup(db, [g.fingerprint]) == {}
    other = "0" * 64
    write_fits(db, [dict(store_rows(doc)[0], data_fingerprint=other, fit_id="mislabelled")])  # doc says otherwise
    assert lookup(db, [other, g.fingerprint]) == {}
    write_fits(db, store_rows(doc))
    got = lookup(db, [g.fingerprint, other])
    assert list(got) == [g.fingerprint] and got[g.fingerprint]["params"] == f.entry["params"]
    assert "group" not in got[g.fingerprint]
    with pytest.raises(ValueError, match="not a data fingerprint"):
        lookup(db, ["'; DROP TABLE fits; --"])
