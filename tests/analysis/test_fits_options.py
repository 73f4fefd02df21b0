"""The fit options a scientist sets change the stored fit's key (so a stored fit is reused only when made the same
way), fits documents carrying them stay readable, and several results files are fitted as one ladder."""

import json

import numpy as np
import pandas as pd
import pytest

from costlaw.analysis.fits import FitOptions, data_fingerprint, fit_groups, make_groups, split

from .conftest import load_data

N = np.array([1e6, 2e6, 4e6, 8e6, 1.6e7, 3.2e7])
LOSS = (3e4 / N) ** 0.35 + 1.7


@pytest.mark.parametrize("change", [
    {"residuals": "raw"}, {"weights": "w"}, {"fix": {"E": 1.7}}, {"tie": {"E": "b"}}, {"bounds": {"b": (0, 1)}},
    {"init": {"b": 0.3}}, {"start_box": {"b": (0.1, 1.0)}}, {"random_starts": 5}, {"method": "varpro"},
    {"bootstrap_by": "g"}, {"holdout_where": "N > 1e7"}, {"best_of": "loss", "best_by": ("N",)},
    {"law_sha256": "0" * 64}, {"law": "formula(N): E + A/N**alpha"},
])
def test_each_option_changes_the_key_and_round_trips(change):
    base = FitOptions(bootstrap=4)
    other = FitOptions(bootstrap=4, **change)
    X = N[:, None]
    assert data_fingerprint(other, X, LOSS) != data_fingerprint(base, X, LOSS)
    assert FitOptions.from_json(json.loads(json.dumps(other.to_json()))) == other


def test_per_row_weights_groups_and_held_out_rows_change_the_key():
    df = pd.DataFrame({"params_non_embedding": N, "loss": LOSS, "w": 1.0, "g": np.arange(6) // 2})
    keys = []
    for opts, frame in ((FitOptions(weights="w"), df), (FitOptions(weights="w"), df.assign(w=np.arange(1.0, 7.0))),
                        (FitOptions(bootstrap=4, bootstrap_by="g"), df),
                        (FitOptions(bootstrap=4, bootstrap_by="g"), df.assign(g=np.arange(6) // 3)),
                        (FitOptions(holdout_where="params_non_embedding > 1e7"), df),
                        (FitOptions(holdout_where="params_non_embedding > 2e7"), df)):
        [g] = make_groups(split(frame, None), opts)
        keys.append(g.fingerprint)
    assert len(set(keys)) == len(keys)
    [g] = make_groups(split(df, None), FitOptions(bootstrap=4, bootstrap_by="g", holdout_where="loss > 1.9"))
    [f] = fit_groups([g], FitOptions(bootstrap=4, bootstrap_by="g", holdout_where="loss > 1.9"))
    assert f.entry["bootstrap_by"] == {"column": "g", "n_groups": 3} and f.entry["holdout"]["where"] == "loss > 1.9"


def test_old_documents_without_the_new_options_still_load():
    old = {"law": "gqa-size", "x": ["params_non_embedding"], "y": "loss", "loss": "huber", "delta": 0.001,
           "starts": None, "refine": 10, "seed": 0, "bootstrap": 100, "holdout_largest": None, "holdout_by": None,
           "derived": []}
    opts = FitOptions.from_json(old)
    assert opts.residuals == "log" and opts.fix == () and opts.method == "joint"


def test_several_stores_fitted_as_one_ladder(tmp_path, cli):
    fx = load_data("fixtures")
    a = fx.build_store(tmp_path / "a", labels=("4,4",))
    b = fx.build_store(tmp_path / "b", labels=("4,1",))
    sql = ("SELECT run_id, n_heads, n_kv_heads, params_non_embedding, coalesce(val_loss, final_loss) AS loss "
           "FROM runs WHERE status = 'completed'")
    rc, out, err = cli("fit", "--db", a, "--db", b, "--sql", sql, "--law", "gqa-size", "--x",
                       "params_non_embedding", "--group-by", "n_heads,n_kv_heads", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert [e["group"] for e in doc["candidates"]] == [{"n_heads": 4, "n_kv_heads": 1}, {"n_heads": 4, "n_kv_heads": 4}]
    assert all(e["n_points"] == 4 and e["success"] for e in doc["candidates"])
    assert "fits not stored: they come from 2 results files" in err and doc["source"].startswith("stores ")
    one = json.loads(cli("fit", "--db", a, "--sql", sql, "--law", "gqa-size", "--x", "params_non_embedding",
                         "--json")[1])
    # the same runs from one store or two give the same fit (and key)
    assert one["candidates"][0]["data_fingerprint"] == doc["candidates"][1]["data_fingerprint"]
