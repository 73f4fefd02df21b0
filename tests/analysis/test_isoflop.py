"""`costlaw isoflop` on a store whose training curves follow a known law L(N, D) = E + A/N^a + B/D^b."""

import json

import numpy as np
import pytest

from costlaw.analysis.store.ingest import ingest
from costlaw.costmodel import params_non_embedding
from tests.support.synth_runs import write_run

from .conftest import load_data

SHAPES = ((2, 64), (2, 96), (3, 128), (3, 160), (4, 192), (4, 224), (4, 256), (5, 320))
E, A, B, ALPHA, BETA = 1.5, 200.0, 200.0, 0.3, 0.3


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    fx = load_data("fixtures")
    tmp = tmp_path_factory.mktemp("isoflop")
    root, db = tmp / "root", tmp / "results.duckdb"
    for L, d in SHAPES:
        cfg = fx.model("4,4", L, d)
        N = params_non_embedding(cfg)
        steps = np.unique(np.geomspace(1, 2e5, 80).astype(int))
        metrics = [{"step": int(s), "tokens": int(s) * 512, "loss": E + A / N ** ALPHA + B / (s * 512.0) ** BETA}
                   for s in steps]
        write_run(root, fx.run_config(cfg), metrics=metrics, evals=[])
    short = fx.model("4,4", 1, 32)  # one logged step: no curve, counted
    write_run(root, fx.run_config(short), metrics=[{"step": 1, "tokens": 512, "loss": 5.0}], evals=[])
    ingest(root, db)
    return db


def test_isoflop_recovers_the_laws_optimum(store, cli, tmp_path):
    png = tmp_path / "iso.png"
    rc, out, err = cli("isoflop", "--db", store, "--budgets", "3e11,1e12,3e12,1e13,3e13", "--bootstrap", "200",
                       "--json", "--plot", png)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["format"] == "costlaw-isoflop/1" and doc["n_runs"] == len(SHAPES)
    assert doc["notes"] == ["1 run(s) with fewer than 2 logged steps have no curve and are left out"]
    # N*(C) ∝ C^(b/(a+b)) = C^0.5 for C = 6ND; the store's C counts attention FLOPs too, so allow 0.05.
    assert doc["N_star"]["exponent"] == pytest.approx(BETA / (ALPHA + BETA), abs=0.05)
    lo, hi = doc["N_star"]["ci95"]["exponent"]
    assert lo <= doc["N_star"]["exponent"] <= hi
    for t in doc["budgets"]:
        assert t["n_runs"] + t["n_skipped"] == len(SHAPES)
        if t["inside"]:
            assert t["D_star"] * doc["flops_per_token"]["coefficient"] * t["N_star"] ** doc["flops_per_token"][
                "exponent"] == pytest.approx(t["C"], rel=1e-9)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_human_output_and_default_grid(store, cli):
    rc, out, err = cli("isoflop", "--db", store, "--bootstrap", "50", "--n-budgets", "5")
    assert rc == 0, err
    assert "N*(C) = " in out and "D*(C) = " in out and "budget C" in out and "bootstrap 50 resamples" in out


@pytest.mark.parametrize("args, pattern", [
    (["--sql", "SELECT run_id FROM runs"], "--n: the runs query has no 'params_non_embedding' column"),
    (["--budgets", "1e12,abc"], "--budgets: '1e12,abc' is not comma-separated numbers"),
    (["--min-runs", "2"], "--min-runs: a parabola needs 3 runs"),
    (["--plot", "x.gif"], "--plot: x.gif needs a .png"),
    (["--sql", "SELECT run_id, params_non_embedding, c_train_flops_per_token FROM runs WHERE n_layers > 99"],
     "--sql: the runs query returned no rows"),
])
def test_bad_input_is_one_line(store, cli, args, pattern):
    rc, out, err = cli("isoflop", "--db", store, *args)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1
    assert pattern in err, err
