"""Laws at the asked context (issue 24, item 5): the recommender fits the runs measured nearest the context it
is asked about, pretraining or extension runs alike, and says so; without a context, the ladder's own."""

import pandas as pd
import pytest

from .conftest import load_data

FX = load_data("fixtures")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from costlaw.analysis.recommend.fromstore import load_runs

    return load_runs(FX.build_store(tmp_path_factory.mktemp("store")))


def with_extension(df, T=1024, shift=0.1):
    """The ladder again as extension runs at seq_len T, each 'shift' nats above its pretraining run."""
    ext = df.copy()
    ext["run_id"] = ext["run_id"] + "-ext"
    ext["stage"], ext["seq_len"] = "extend", T
    ext["loss"] = ext["loss"] + shift
    return pd.concat([df, ext], ignore_index=True)


def test_nearest_measured_context_is_fitted(runs):
    from costlaw.analysis.recommend.fromstore import fit_runs

    df = with_extension(runs)
    base = fit_runs(runs, n_boot=0)
    assert base.train_context == 128
    at_long = fit_runs(df, n_boot=0, context=8192)
    assert at_long.train_context == 1024
    assert any("measured at seq_len 1024, the measured context nearest 8192" in n for n in at_long.notes)
    by, ext = {c.label: c for c in base.candidates}, {c.label: c for c in at_long.candidates}
    for label in ("4,4", "4,1"):  # the same ladder 0.1 higher: the floor moves by 0.1, the power law stays
        assert ext[label].params["E"] == pytest.approx(by[label].params["E"] + 0.1, rel=1e-3)
        assert ext[label].params["b"] == pytest.approx(by[label].params["b"], rel=1e-3)
    # near the ladder's own context, and without a context, the pretraining runs fit the laws
    assert fit_runs(df, n_boot=0, context=256).train_context == 128
    assert fit_runs(df, n_boot=0).train_context == 128
    assert fit_runs(df, n_boot=0, context=8192, train_context=128).train_context == 128


def test_a_context_without_enough_sizes_falls_back(runs):
    from costlaw.analysis.recommend.fromstore import fit_runs

    big = runs[runs["d_model"] == runs["d_model"].max()]  # one size per candidate at the long context
    df = pd.concat([runs, with_extension(big).query("stage == 'extend'")], ignore_index=True)
    fs = fit_runs(df, n_boot=0, context=8192)
    assert fs.train_context == 128 and not any("measured at seq_len" in n for n in fs.notes)
