"""Fits stored once: `costlaw fit --db` stores its fits in the store's fits table keyed by the runs, points, options
and fitter they came from; `costlaw recommend --db` and `costlaw report` reuse them (a counter on the fitter shows
no law fitted again), refit only the group whose runs changed, refit everything with --refit, and store what they
fit so the next call reuses it."""

import json

import pytest

from costlaw.analysis.store import query_rows

from .conftest import load_data

FX = load_data("fixtures")
# recommend's selection of the fixture store (completed pretraining runs, loss = val_loss else final_loss) in SQL,
# in a random order: the pipeline orders rows itself, so the fingerprints cannot depend on the query's order
FIT_SQL = ("SELECT run_id, family, n_heads, n_kv_heads, head_dim, params_non_embedding, "
           "coalesce(val_loss, final_loss) AS loss FROM runs "
           "WHERE status = 'completed' AND coalesce(stage, 'pretrain') = 'pretrain' ORDER BY random()")
FIT_ARGS = ("--law", "gqa-size", "--x", "params_non_embedding", "--group-by", "family,n_heads,n_kv_heads,head_dim")
FITTED = {"4,4", "4,1", "2,1", "1,1", "4,1 full=0.50 sink_window(4,32)"}  # 8,2 has 3 sizes: recommend leaves it unfit


@pytest.fixture
def fits_made(monkeypatch):
    """The laws costlaw.fitting.fit is asked to fit, by name, while a test runs (the pipeline looks `fit` up on
    the package at each call)."""
    import costlaw.fitting as fitting

    made, real = [], fitting.fit

    def counting(law, X, y, **kw):
        made.append(fitting.get_law(law).name)
        return real(law, X, y, **kw)

    monkeypatch.setattr(fitting, "fit", counting)
    return made


def recommend(cli, db, *extra):
    rc, out, err = cli("recommend", "--db", db, "--target-loss", 1.9, "--context", "8K,32K", "--bootstrap", 8,
                       "--json", *extra)
    assert rc == 0, err
    return json.loads(out)


def fits_rows(db) -> list[tuple]:
    return query_rows(db, "SELECT fit_id, data_fingerprint, created, doc FROM fits ORDER BY fit_id")[1]


def test_fit_db_then_recommend_makes_no_fit(tmp_path, cli, fits_made):
    db = FX.build_store(tmp_path)
    rc, out, err = cli("fit", "--db", db, "--sql", FIT_SQL, *FIT_ARGS, "--bootstrap", 8, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert fits_made == ["gqa-size"] * 6 and len(doc["candidates"]) == 6
    assert f"6 fit(s) stored in {db}'s fits table" in err
    stored = fits_rows(db)
    assert sorted(r[1] for r in stored) == sorted(e["data_fingerprint"] for e in doc["candidates"])
    for _, fp, _, text in stored:  # each row's doc is the fits format with its one entry
        one = json.loads(text)
        assert one["format"] == "costlaw-fits/1" and one["options"]["bootstrap"] == 8
        assert [e["data_fingerprint"] for e in one["candidates"]] == [fp]

    fits_made.clear()
    reused = recommend(cli, db)
    assert fits_made == []
    assert sorted(reused["fits"]["reused"]) == sorted(FITTED) and reused["fits"]["fitted"] == []
    assert fits_rows(db) == stored  # everything reused: nothing written

    refit = recommend(cli, db, "--refit")
    assert fits_made == ["gqa-size"] * 5
    assert sorted(refit["fits"]["fitted"]) == sorted(FITTED) and refit["fits"]["refit"] is True
    # a stored fit is the refit it stands for: the same laws, bootstrap draws, intervals and winners
    assert refit["by_context"] == reused["by_context"] and refit["candidates"] == reused["candidates"]
    by_fp = {e["data_fingerprint"]: e for e in doc["candidates"]}
    assert len(fits_rows(db)) == 6  # the refits replaced their rows (same data): each fit stored once
    from costlaw.analysis.recommend import fit_store

    fs = fit_store(db, n_boot=8)
    assert fs.fit_status["fitted"] == []
    for c in fs.candidates:
        if c.fitted and not c.base:
            assert c.params == by_fp[c.fit_extra["data_fingerprint"]]["params"]


def test_changed_runs_refit_only_their_group(tmp_path, cli, fits_made):
    from costlaw.analysis.store.ingest import ingest
    from costlaw.costmodel import params_non_embedding
    from tests.support.synth_runs import write_run

    db = FX.build_store(tmp_path)
    first = recommend(cli, db)
    assert sorted(first["fits"]["fitted"]) == sorted(FITTED) and len(fits_made) == 5
    fits_made.clear()
    again = recommend(cli, db)
    assert fits_made == [] and again["fits"]["fitted"] == []

    cfg = FX.model("4,1", 2, 64)  # a second seed of 4,1's smallest rung
    loss = FX.law_loss("4,1", params_non_embedding(cfg)) + 0.01
    write_run(tmp_path / "more", FX.run_config(cfg, seed=1), sweep="fixture",
              evals=[{"eval": "val_loss", "tags": {"context": 128}, "metrics": {"loss": loss, "tokens": 4096}}])
    ingest(tmp_path / "more", db)
    after = recommend(cli, db)
    assert fits_made == ["gqa-size"] and after["fits"]["fitted"] == ["4,1"]
    assert sorted(after["fits"]["reused"]) == sorted(FITTED - {"4,1"})
    fits_made.clear()
    rc, out, err = cli("recommend", "--db", db, "--target-loss", 1.9, "--context", "8K", "--bootstrap", 8)
    assert rc == 0, err
    assert fits_made == [] and "fits: 5 reused from the fits table (same runs, options and fitter)" in out
    # other options are other fits: a new bootstrap count refits every law, and is stored beside the old ones
    fits_made.clear()
    other = recommend(cli, db, "--bootstrap", 4)
    assert len(fits_made) == 5 and other["fits"]["reused"] == []
    assert len(fits_rows(db)) == 5 + 1 + 5


def test_report_reuses_what_recommend_stored(tmp_path, cli, fits_made):
    db = FX.build_store(tmp_path)
    recommend(cli, db, "--bootstrap", 4)
    fits_made.clear()
    # --no-validate: the report's cross-validation refits every law on subsets, which are fits of other data
    rc, out, err = cli("report", "--db", db, "--out", tmp_path / "r", "--bootstrap", 4, "--context", "8K", "--json",
                       "--no-validate")
    assert rc == 0, err
    assert "gqa-size" not in fits_made  # (its heads figure fits its own power law: not a stored fit)
    status = json.loads(out)["fits_status"]
    assert sorted(status["reused"]) == sorted(FITTED) and status["fitted"] == []
    assert "Fits: 5 reused from the fits table" in (tmp_path / "r" / "report.md").read_text()
    fits_made.clear()
    rc, out, err = cli("report", "--db", db, "--out", tmp_path / "r2", "--bootstrap", 4, "--context", "8K", "--refit",
                       "--no-validate")
    assert rc == 0, err
    assert fits_made.count("gqa-size") == 5 and "fits: 5 fitted (--refit), stored in the fits table" in out
    # the report's fits.json is the same format, read back by recommend --fits
    rc, out, err = cli("recommend", "--fits", tmp_path / "r2" / "fits.json", "--target-loss", 1.9, "--context", "8K",
                       "--json")
    assert rc == 0, err


def test_fit_db_errors(tmp_path, cli):
    db = FX.build_store(tmp_path, labels=("4,4",))
    before = fits_rows(db)
    cases = [
        (["--db", db, *FIT_ARGS], "--sql: required with --db"),
        (["--sql", FIT_SQL, *FIT_ARGS], "--sql: queries a results file; give --db"),
        (["--db", db, "--data", "x.csv", "--sql", FIT_SQL, *FIT_ARGS], "--db: reads rows from a results file"),
        (["--db", tmp_path / "none.duckdb", "--sql", FIT_SQL, *FIT_ARGS], "--db: no such results file"),
        (["--db", db, "--sql", "SELECT params_non_embedding, val_loss AS loss FROM runs", *FIT_ARGS[:4]],
         "--sql: the result has no run_id column"),
        (["--db", db, "--sql", "DELETE FROM fits", *FIT_ARGS], "--sql: DELETE statements are refused"),
        (["--db", db, "--sql", "SELECT * FROM runs WHERE false", *FIT_ARGS], "--sql: the query returned no rows"),
    ]
    for args, expect in cases:
        rc, out, err = cli("fit", *args)
        lines = err.strip().splitlines()
        assert rc == 2 and out == "" and len(lines) == 1 and expect in lines[0], (expect, err)
    assert fits_rows(db) == before
    rc, _, err = cli("recommend", "--fits", tmp_path / "f.json", "--refit", "--target-loss", 2, "--context", "8K")
    assert rc == 2 and "--refit: refits the laws from --db's runs" in err


def test_a_store_that_cannot_be_written_still_recommends(tmp_path, cli, monkeypatch):
    import costlaw.analysis.store.fits as fits_mod
    from costlaw.costmodel.core.errors import CostlawError

    db = FX.build_store(tmp_path, labels=("4,4", "4,1"))

    def busy(db, rows, wait=0):
        raise CostlawError(f"--db: {db} is being written by another process (PID 1)")

    monkeypatch.setattr(fits_mod, "write_fits", busy)
    doc = recommend(cli, db)
    assert doc["fits"]["fitted"] == ["4,4", "4,1"] and "being written by another process" in doc["fits"]["not_stored"]
    assert doc["by_context"][0]["winner"] is not None and fits_rows(db) == []
