"""`costlaw recommend --db`: laws fitted from a store built by the store's own writers from known laws."""

import json

import pytest

from costlaw.costmodel import params_non_embedding

from .conftest import load_data

FX = load_data("fixtures")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return FX.build_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def fitset(store):
    from costlaw.analysis.recommend import fit_store

    return fit_store(store, n_boot=8)


def test_fits_recover_the_known_laws(fitset):
    by = {c.label: c for c in fitset.candidates}
    for label in ("4,4", "4,1", "2,1", "1,1", "4,1 full=0.50 sink_window(4,32)"):
        c = by[label]
        a, b, E = FX.LAWS[label]
        assert c.params["a"] == pytest.approx(a, rel=1e-3)
        assert c.params["b"] == pytest.approx(b, rel=1e-3)
        assert c.params["E"] == pytest.approx(E, rel=1e-4)
        # draws of the resamples of its configs that identify the law (fitting/bootstrap.py leaves out the others)
        assert c.fit_extra["n_bootstrap"] == 8 and 2 <= len(c.samples["a"]) == c.fit_extra["n_used"] <= 8
        assert c.n_max == max(params_non_embedding(FX.model(label, L, d)) for L, d in FX.SHAPES)
    assert by["4,1 full=0.50 sink_window(4,32)"].family == "hybrid"
    assert not by["8,2"].fitted and "3 size(s)" in by["8,2"].reason  # listed, not dropped
    for keep, delta in FX.KV_DELTA.items():
        c = by[f"4,4 snapkv keep={keep:g}"]
        assert c.family == "compressed" and c.base == "4,4" and c.delta_nll == pytest.approx(delta)
        assert c.params == by["4,4"].params


def test_recommend_from_the_db_and_fits_round_trip(store, fitset, tmp_path, cli):
    from costlaw.analysis.recommend import load_fits, recommend

    target = 1.9
    out = tmp_path / "fits.json"
    rc, text, err = cli("recommend", "--db", store, "--target-loss", target, "--context", "128,32K", "--bootstrap", 8,
                        "--fits-out", out, "--json")
    assert rc == 0, err
    doc = json.loads(text)
    by = {c["label"]: c for c in doc["candidates"]}
    assert by["8,2"]["status"] == "unfit" and "needs >= 4" in by["8,2"]["reason"]
    for c in doc["candidates"]:
        if c["status"] == "ok":
            assert c["aspect_anchors"] == "ladder"  # d/L from the candidate's own runs
            assert c["config"]["head_dim"] == 16 and c["config"]["vocab_size"] == 257
    hyb = by["4,1 full=0.50 sink_window(4,32)"]
    n_layers = hyb["config"]["n_layers"]
    full = [x for x in hyb["config"]["layout"] if x.startswith("full")]
    assert full == [f"full*{max(1, round(0.5 * n_layers))}"]
    again = recommend(load_fits(out), target, [128, 32768])
    for ctx in doc["by_context"]:
        T = ctx["context"]
        assert again.winner(T).label == ctx["winner"]
        assert again.winner(T).predicted == pytest.approx(ctx["predicted_loss"], rel=1e-12)
        # the fits file carries the bootstrap draws and the noise: the same two intervals come back
        got, want = again.winner(T).interval.to_json(), ctx["predicted_loss_interval"]
        for part in ("mean", "new_run"):
            assert [got[part]["lo"], got[part]["hi"]] == pytest.approx([want[part]["lo"], want[part]["hi"]], rel=1e-12)
        assert want["new_run"]["covers"].startswith("one new training run")


def test_mha_standard_when_no_8_kv_heads(fitset):
    from costlaw.analysis.recommend import recommend

    rec = recommend(fitset, 1.95, [131072])
    assert rec.standard is not None and rec.standard.cand.n_heads == rec.standard.cand.n_kv_heads
    assert "no fitted candidate has 8 KV heads" in rec.standard_note


def test_db_errors(tmp_path, cli):
    from costlaw.analysis.store.ingest import ingest

    (tmp_path / "root").mkdir()
    empty = tmp_path / "empty.duckdb"
    ingest(tmp_path / "root", empty)
    for db, expect in [(empty, "has no completed runs"), (tmp_path / "missing.duckdb", "no such results file")]:
        rc, _, err = cli("recommend", "--db", db, "--target-loss", "2", "--context", "8K")
        assert rc == 2 and len(err.strip().splitlines()) == 1 and expect in err, err


def test_too_few_sizes_everywhere(tmp_path, cli):
    db = FX.build_store(tmp_path, labels=("8,2",))
    rc, _, err = cli("recommend", "--db", db, "--target-loss", "2", "--context", "8K", "--bootstrap", "0")
    assert rc == 2 and "none of the 1 selected candidates has a fitted law" in err and "8,2" in err


def test_a_store_whose_laws_are_not_identified_gives_no_winner(tmp_path, cli):
    """Runs that fall as a pure power law (no floor) over four sizes: every law's E runs to its bound, so recommend
    exits 0 with no winner and says why; --allow-weak-laws names one, flagged."""
    from costlaw.analysis.store.ingest import ingest
    from tests.support.synth_runs import write_run

    for label in ("4,4", "4,1"):
        for L, d in FX.SHAPES:
            cfg = FX.model(label, L, d)
            loss = 3.0 * (params_non_embedding(cfg) / 1e5) ** -0.05 * (1.0 if label == "4,4" else 1.02)
            write_run(tmp_path / "root", FX.run_config(cfg), sweep="flat", final_loss=loss + 0.01,
                      evals=[{"eval": "val_loss", "tags": {"context": 128}, "metrics": {"loss": loss, "tokens": 4096}}])
    db = tmp_path / "flat.duckdb"
    ingest(tmp_path / "root", db)
    args = ("recommend", "--db", db, "--target-loss", "2.75", "--context", "128,32K", "--bootstrap", "50")
    rc, out, err = cli(*args, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert [ctx["winner"] for ctx in doc["by_context"]] == [None, None]
    for ctx in doc["by_context"]:
        assert ctx["no_winner_reason"].startswith("every candidate within the budgets is excluded: a weak law (")
        assert "--allow-weak-laws would use them" in ctx["no_winner_reason"]
    assert {e["label"] for e in doc["excluded"]} == {"4,4", "4,1"}
    assert all("is at its bound" in e["why"] and "the runs show no floor" in e["why"] for e in doc["excluded"])
    rc, out, err = cli(*args)
    assert rc == 0 and "no winner: every candidate within the budgets is excluded" in out
    rc, out, err = cli(*args, "--json", "--allow-weak-laws")
    assert rc == 0, err
    asked = json.loads(out)
    assert all(ctx["winner"] and ctx["weak_law"] for ctx in asked["by_context"])
