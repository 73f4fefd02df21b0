"""`costlaw recommend --record` and the `closed_loop` view: a recommendation, the run trained from it, compared."""

import json
import shutil
import sys
from pathlib import Path

import duckdb
import pytest

from costlaw.analysis.store import SCHEMA_VERSION, ingest, query_df
from costlaw.analysis.store.flatten import runs_schema
from costlaw.analysis.store.recommendations import REC_COLUMNS
from costlaw.analysis.store.schema import MIGRATIONS, migrate
from costlaw.analysis.store.views import VIEWS
from costlaw.costmodel import ModelConfig, params_non_embedding
from tests.support.synth_runs import write_run

from .conftest import load_data

DATA = Path(__file__).parent / "data"


FX = load_data("fixtures")
ARGS = ("--target-loss", "1.9", "--context", "128,32K", "--bootstrap", "8")


def rows(db, sql):
    return query_df(db, sql).rows(named=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return FX.build_store(tmp_path_factory.mktemp("store"))


@pytest.fixture
def store(built, tmp_path):
    """A private copy of the fixture store: these tests write to it."""
    db = tmp_path / "results.duckdb"
    shutil.copy(built, db)
    return db


def train(root: Path, toml: Path, val_loss: float | None, seed: int = 0, sweep: str = "closed",
          final_loss: float | None = None) -> str:
    """Write a finished run of the recommended TOML's config (final_loss: val_loss + 0.01 unless given);
    returns its model_id. val_loss None: a run without a validation eval."""
    cfg = ModelConfig.from_toml(toml.read_text())
    ev = [] if val_loss is None else [
        {"eval": "val_loss", "tags": {"context": 128}, "metrics": {"loss": val_loss, "tokens": 4096}}]
    write_run(root, FX.run_config(cfg, seed=seed), evals=ev, sweep=sweep,
              final_loss=final_loss if final_loss is not None else val_loss + 0.01)
    return cfg.config_id


def test_record_then_train_then_compare(store, tmp_path, cli):
    assert rows(store, "SELECT count(*) AS n FROM recommendations") == [{"n": 0}]
    assert rows(store, "SELECT count(*) AS n FROM closed_loop") == [{"n": 0}]
    toml = tmp_path / "rec.toml"
    rc, out, err = cli("recommend", "--db", store, *ARGS, "--json", "--toml-out", toml)
    assert rc == 0, err
    doc = json.loads(out)
    rc, out, err = cli("recommend", "--db", store, *ARGS, "--toml-out", toml, "--record")
    assert rc == 0, err
    line = out.strip().splitlines()[-1]
    assert line.startswith(f"recorded 2 recommendation(s) in {store}: ")
    assert line.endswith(f'costlaw query --db {store} "select * from closed_loop"')

    recs = rows(store, "SELECT * FROM recommendations ORDER BY context")
    assert [r["context"] for r in recs] == [128, 32768]
    for r, ctx in zip(recs, doc["by_context"]):
        win = next(c for c in doc["candidates"] if c["label"] == ctx["winner"])
        assert r["candidate"] == ctx["winner"] and r["family"] == win["family"]
        assert r["model_id"] == win["config_id"] == ModelConfig.from_dict(ctx["winner_config"]).config_id
        assert json.loads(r["model_json"]) == ctx["winner_config"]
        assert r["target_loss"] == 1.9
        assert r["predicted_loss"] == pytest.approx(ctx["predicted_loss"], rel=1e-12)
        iv = ctx["predicted_loss_interval"]  # the interval a trained run is checked against: a new run's
        assert (r["level"], r["interval_kind"]) == (0.9, "prediction")
        assert [r["predicted_lo"], r["predicted_hi"]] == pytest.approx([iv["new_run"]["lo"], iv["new_run"]["hi"]],
                                                                       rel=1e-12)
        assert [r["mean_lo"], r["mean_hi"]] == pytest.approx([iv["mean"]["lo"], iv["mean"]["hi"]], rel=1e-12)
        assert r["noise_sd"] == pytest.approx(iv["new_run"]["noise_sd_log"]) and r["weak_law"] is None
        assert r["outside_envelope"] is None
        cfg = ctx["winner_config"]  # the law was fitted to every fixture run of the winner's head config
        ladder = rows(store, f"SELECT run_id FROM runs WHERE family = '{win['family']}' AND n_heads = "
                             f"{cfg['n_heads']} AND n_kv_heads = {cfg['n_kv_heads']} ORDER BY run_id")
        assert r["fit_run_ids"] == [x["run_id"] for x in ladder] and len(ladder) == 4
        assert r["params_non_embedding"] == win["n_params"] and r["n_star"] == pytest.approx(win["n_star"])
        assert r["m_infer_bytes"] == ctx["winner_prices"]["m_infer_bytes"]
        assert r["c_infer_flops_per_token"] == ctx["winner_prices"]["c_infer_flops_per_token"]
        assert r["memory_budget"] is None and r["flops_budget"] is None and r["latency_target_ms"] is None
        assert r["train_context"] == 128 and r["sweep"] is None and r["dtype"] == "bf16"
        assert r["source"] == str(store.resolve()) and len(r["rec_id"]) == 16
    assert recs[0]["model_id"] != recs[1]["model_id"]  # the fixture's winners differ by context

    # the same recommendation again: nothing new, and --json says which rows were there already
    rc, out, err = cli("recommend", "--db", store, *ARGS, "--record", "--json")
    assert rc == 0, err
    assert [(e["rec_id"], e["new"]) for e in json.loads(out)["recorded"]] == [(r["rec_id"], False) for r in recs]
    assert "recorded 0 recommendation(s)" in err and "2 already there" in err
    assert rows(store, "SELECT * FROM recommendations ORDER BY context") == recs  # first recorded_at kept
    # nor from a moved copy of the file: where it was read from is not part of the recommendation
    moved = tmp_path / "moved" / "results.duckdb"
    moved.parent.mkdir()
    shutil.copy(store, moved)
    rc, out, err = cli("recommend", "--db", moved, *ARGS, "--record")
    assert rc == 0, err
    assert out.strip().splitlines()[-1].startswith(f"recorded 0 recommendation(s) in {moved}, 2 already there")
    assert rows(moved, "SELECT rec_id FROM recommendations ORDER BY context") == [
        {"rec_id": r["rec_id"]} for r in recs]
    # a different target is a different recommendation
    rc, _, err = cli("recommend", "--db", store, "--target-loss", "1.95", "--context", "128", "--bootstrap", "8",
                     "--record")
    assert rc == 0, err
    assert rows(store, "SELECT count(*) AS n FROM recommendations") == [{"n": 3}]

    # the 128-token winner is not trained yet: one row, run columns NULL
    loop = rows(store, "SELECT * FROM closed_loop WHERE target_loss = 1.9 ORDER BY context")
    assert [(r["rec_id"], r["run_id"], r["inside"], r["error"], r["held_out"]) for r in loop[:1]] == [
        (recs[0]["rec_id"], None, None, None, None)]
    # the 32K winner is a config the ladder trained (kept inside the ladder's shapes, the smallest that reaches N*
    # is a rung); the laws are exact here, so it sits on its law, and that run is one the law was fitted to: not
    # held out, it tests nothing
    assert len(loop) == 2 and loop[1]["rec_id"] == recs[1]["rec_id"] and loop[1]["sweep"] == "fixture"
    assert loop[1]["error"] == pytest.approx(0, abs=1e-9) and loop[1]["held_out"] is False
    for r in rows(store, "SELECT * FROM closed_loop WHERE target_loss = 1.95 AND run_id IS NOT NULL"):
        assert r["sweep"] == "fixture" and r["error"] == pytest.approx(0, abs=1e-9) and r["held_out"] is False

    # train the 128-token winner three times (its TOML from --toml-out): below, inside and above the interval
    first = recs[0]
    toml128 = tmp_path / "rec-128.toml"
    lo, hi = first["predicted_lo"], first["predicted_hi"]
    assert lo - 1e-12 <= first["predicted_loss"] <= hi + 1e-12  # the fixture's laws are exact: a near-zero width
    losses = [lo - 0.05, (lo + hi) / 2, hi + 0.05]
    root = tmp_path / "trained"
    for seed, loss in enumerate(losses):
        assert train(root, toml128, loss, seed=seed) == first["model_id"]
    rep = ingest(root, store)
    assert len(rep.ingested) == 3

    got = rows(store, f"SELECT * FROM closed_loop WHERE rec_id = '{first['rec_id']}' ORDER BY val_loss")
    assert [r["val_loss"] for r in got] == losses
    assert [r["inside"] for r in got] == [False, True, False]
    assert [r["measured"] for r in got] == losses and all(r["held_out"] is True for r in got)
    assert all((r["predicted"], r["lower"], r["upper"]) == (first["predicted_loss"], lo, hi) for r in got)
    assert [r["seed"] for r in got] == [0, 1, 2]
    assert {r["sweep"] for r in got} == {"closed"} and all(r["tokens"] > 0 for r in got)
    for r in got:
        assert r["final_loss"] == pytest.approx(r["val_loss"] + 0.01)
        assert r["error"] == pytest.approx(r["val_loss"] - first["predicted_loss"], abs=1e-12)
        assert r["rel_error"] == pytest.approx((r["val_loss"] - first["predicted_loss"]) / first["predicted_loss"])
    assert got[2]["error"] == pytest.approx(hi + 0.05 - first["predicted_loss"])
    # a new seed of the 32K winner, trained at the laws' context (128), not at the 32K it was priced for: it joins
    # by model_id beside the ladder's run, and is held out
    root2 = tmp_path / "trained-32k"
    assert train(root2, tmp_path / "rec-32768.toml", recs[1]["predicted_hi"] + 0.1, seed=5) == recs[1]["model_id"]
    ingest(root2, store)
    [r] = rows(store, f"SELECT * FROM closed_loop WHERE rec_id = '{recs[1]['rec_id']}' AND held_out")
    assert (r["seq_len"], r["context"], r["inside"], r["seed"]) == (128, 32768, False, 5)
    assert r["error"] == pytest.approx(recs[1]["predicted_hi"] + 0.1 - recs[1]["predicted_loss"])


def test_without_bootstrap_the_interval_covers_the_noise_only(store, tmp_path, cli):
    toml = tmp_path / "rec.toml"
    rc, out, err = cli("recommend", "--db", store, "--target-loss", "1.9", "--context", "128", "--bootstrap", "0",
                       "--record", "--toml-out", toml, "--sweep", "fixture", "--json")
    assert rc == 0, err
    iv = json.loads(out)["by_context"][0]["predicted_loss_interval"]
    assert iv["mean"]["lo"] is None and "run-to-run noise only" in iv["new_run"]["covers"]
    [rec] = rows(store, "SELECT * FROM recommendations")
    assert rec["mean_lo"] is None and rec["interval_kind"] == "prediction" and rec["sweep"] == "fixture"
    assert rec["predicted_lo"] <= rec["predicted_loss"] <= rec["predicted_hi"]
    train(tmp_path / "trained", toml, rec["predicted_loss"] + 0.02)
    # no val_loss: compared on final_loss, the loss the laws fall back to as well
    train(tmp_path / "trained", toml, None, seed=1, final_loss=rec["predicted_loss"] - 0.03)
    ingest(tmp_path / "trained", store)
    got = rows(store, "SELECT * FROM closed_loop ORDER BY error")
    assert [r["val_loss"] for r in got] == [None, rec["predicted_loss"] + 0.02]
    assert [r["loss"] for r in got] == [rec["predicted_loss"] - 0.03, rec["predicted_loss"] + 0.02]
    assert [r["error"] for r in got] == pytest.approx([-0.03, 0.02])
    # the fixture's laws are exact, so its noise (from the residuals) is ~0: both runs miss
    assert all(r["run_id"] is not None and r["inside"] is False and r["inside_mean"] is None for r in got)


def test_spec_out_trains_the_winners_with_the_ladders_recipe_on_a_new_seed(store, tmp_path, cli):
    from costlaw.sweeps.expand import expand
    from costlaw.sweeps.spec import load

    recipe = tmp_path / "ladder.toml"
    recipe.write_text(LADDER_SPEC)
    spec = tmp_path / "loop.toml"
    args = ("--spec-out", spec, "--recipe-from", recipe, "--train-seed")
    rc, out, err = cli("recommend", "--db", store, *ARGS, "--record", *args, "0")
    assert rc == 2 and "--train-seed: seed 0 trained" in err and "pick a seed no ladder run used" in err
    rc, out, err = cli("recommend", "--db", store, *ARGS, "--record", "--json", *args, "7")
    assert rc == 0, err
    doc = json.loads(out)
    winners = [ModelConfig.from_dict(c["winner_config"]) for c in doc["by_context"]]
    planned = expand(load(spec), tmp_path / "root")
    assert [r.config.model for r in planned] == winners and {r.seed for r in planned} == {7}
    assert doc["spec"]["run_ids"] == [r.run_id for r in planned] and doc["spec"]["points"] == 2
    for r in planned:  # the recipe's settings and formulas, at the recommended N
        cfg = r.config
        assert cfg.data.seq_len == 128 and cfg.train.lr == 3e-3 and cfg.eval.val_tokens == 4096
        assert cfg.train.tokens == 20 * params_non_embedding(cfg.model)
        assert cfg.train.batch_size == (2 if cfg.model.d_model < 192 else 4)
    text = spec.read_text()
    assert text.startswith("# costlaw recommend --spec-out") and "model.ffn_dim" in text  # dropped, and said so
    # another call adds its winner; one already there is not added twice
    rc, out, err = cli("recommend", "--db", store, "--target-loss", "1.95", "--context", "128", "--bootstrap", "8",
                       "--json", *args, "7")
    assert rc == 0, err
    assert json.loads(out)["spec"]["points"] == 3 and len(expand(load(spec), tmp_path / "root")) == 3
    rc, out, err = cli("recommend", "--db", store, *ARGS, "--json", *args, "7")
    assert rc == 0 and json.loads(out)["spec"]["added"] == [] and json.loads(out)["spec"]["points"] == 3
    rc, _, err = cli("recommend", "--db", store, *ARGS, *args, "8")
    assert rc == 2 and "was written from recipe" in err
    rc, _, err = cli("recommend", "--db", store, *ARGS, "--spec-out", spec)
    assert rc == 2 and "needs --recipe-from" in err


LADDER_SPEC = """
[sweep]
name = "fixture-ladder"
runs_cap = 20
contexts = [128, "32K"]

[base]
seed = 0

[base.model]
d_model = 64
n_layers = 2
n_heads = 4
n_kv_heads = 4
head_dim = 16
ffn_dim = 192
vocab_size = 257

[base.data]
seq_len = 128

[base.train]
tokens = 100000
lr = 3e-3

[base.eval]
val_tokens = 4096
position_buckets = 4

[[axes]]
zip = { "model.d_model" = [64, 128], "model.n_layers" = [2, 3] }

[derived]
"model.ffn_dim" = "paper_ffn(model.d_model)"
"train.tokens" = "20 * N"
"train.batch_size" = "2 if model.d_model < 192 else 4"

[resources]
cpus = 1
"""


def test_budgets_are_recorded(store, cli):
    rc, _, err = cli("recommend", "--db", store, "--target-loss", "1.9", "--context", "32K", "--bootstrap", "0",
                     "--memory-budget", "64MiB", "--flops-budget", "1G", "--record")
    assert rc == 0, err
    [rec] = rows(store, "SELECT memory_budget, flops_budget, latency_target_ms FROM recommendations")
    assert rec == {"memory_budget": 64 * 2**20, "flops_budget": 1e9, "latency_target_ms": None}


def test_record_needs_a_db(cli):
    rc, out, err = cli("recommend", "--fits", DATA / "paper_like_fits.json", "--target-loss", "2.6", "--context",
                       "8K", "--record")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--record" in err and "--db" in err


def _old_views(con):
    for name, (_, sql) in VIEWS.items():
        if name != "closed_loop":  # what the version-2 costlaw created
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")


def test_a_version_2_database_upgrades_and_keeps_its_data(tmp_path, monkeypatch, cli):
    ingest_mod = sys.modules["costlaw.analysis.store.ingest"]  # the package's `ingest` attribute is the function

    with monkeypatch.context() as m:  # ingest as the previous release did: schema version 2, its views
        m.setattr(ingest_mod, "migrate", lambda con, db: migrate(con, db, target=2))
        m.setattr(ingest_mod, "create_views", _old_views)
        v4 = ("sparse_params", "source_sha256", "git_diff_sha256")  # columns the version-2 costlaw did not write
        m.setattr(ingest_mod, "runs_schema", lambda: {c: t for c, t in runs_schema().items() if c not in v4})
        db = FX.build_store(tmp_path)
    assert rows(db, "SELECT max(version) AS v FROM schema_version") == [{"v": 2}]
    assert rows(db, "SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'recommendations'") == [{"n": 0}]
    before = rows(db, "SELECT run_id, val_loss FROM runs ORDER BY run_id")
    con = duckdb.connect(str(db))  # a fit the version-2 costlaw stored
    con.execute("INSERT INTO fits (fit_id, created, law, params) VALUES ('f0', now()::TIMESTAMP, 'gqa-size', "
                "'{\"a\":1}')")
    con.close()

    rc, _, err = cli("recommend", "--db", db, *ARGS, "--record")
    assert rc == 0, err
    assert [r["version"] for r in rows(db, "SELECT version FROM schema_version ORDER BY 1")] == list(
        range(1, len(MIGRATIONS) + 1))
    assert rows(db, "SELECT run_id, val_loss FROM runs ORDER BY run_id") == before and len(before) == 23
    # the old fit is kept; recommend stored its own fits beside it, keyed by their data
    old = rows(db, "SELECT fit_id, law FROM fits WHERE data_fingerprint IS NULL")
    assert old == [{"fit_id": "f0", "law": "gqa-size"}]
    hybrids = rows(db, "SELECT sparse_kind, sparse_params FROM runs WHERE family = 'hybrid'")  # v4 back-fills these
    assert hybrids and all(json.loads(r["sparse_params"]) == {"sink": 4, "window": 32} for r in hybrids), hybrids
    assert rows(db, "SELECT count(*) AS n FROM recommendations") == [{"n": 2}]
    assert len(rows(db, "SELECT * FROM closed_loop")) == 2


def test_a_fresh_store_gets_the_table_and_view(tmp_path):
    (tmp_path / "root").mkdir()
    db = tmp_path / "r.duckdb"
    ingest(tmp_path / "root", db)
    assert rows(db, "SELECT max(version) AS v FROM schema_version") == [{"v": SCHEMA_VERSION}]
    assert rows(db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'recommendations' "
                    "ORDER BY ordinal_position") == [{"column_name": c} for c in REC_COLUMNS]
    assert rows(db, "SELECT count(*) AS n FROM closed_loop") == [{"n": 0}]


def test_a_version_4_recommendation_keeps_what_it_claimed(tmp_path, monkeypatch, cli):
    """Rows recorded before v5 hold the law's bootstrap 95% interval (fit only): the migration says so (level 0.95,
    interval_kind 'mean', the mean's bounds), and closed_loop checks them against what they claimed."""
    ingest_mod = sys.modules["costlaw.analysis.store.ingest"]
    with monkeypatch.context() as m:  # ingest as the v4 release did (its closed_loop had no v5 columns)
        m.setattr(ingest_mod, "migrate", lambda con, db: migrate(con, db, target=4))
        m.setattr(ingest_mod, "create_views", _old_views)
        db = FX.build_store(tmp_path)
    con = duckdb.connect(str(db))
    cols = REC_COLUMNS[:REC_COLUMNS.index("model_json") + 1]  # the v3/v4 columns
    model = FX.model("4,4", 4, 128)
    values = {"rec_id": "old0", "recorded_at": None, "model_id": model.config_id, "candidate": "4,4", "family": "gqa",
              "context": 128, "target_loss": 1.9, "predicted_loss": 1.89, "predicted_lo": 1.87, "predicted_hi": 1.91,
              "model_json": json.dumps(model.to_dict())}
    con.execute(f"INSERT INTO recommendations ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [values.get(c) if c != "recorded_at" else "2026-01-01 00:00:00" for c in cols])
    con.close()
    train(tmp_path / "trained", _toml(tmp_path, model), 1.905)
    ingest(tmp_path / "trained", db)  # migrates to v5
    [r] = rows(db, "SELECT * FROM closed_loop WHERE rec_id = 'old0'")
    assert (r["level"], r["interval_kind"], r["mean_lo"], r["mean_hi"]) == (0.95, "mean", 1.87, 1.91)
    assert (r["lower"], r["upper"], r["measured"], r["inside"], r["inside_mean"]) == (1.87, 1.91, 1.905, True, True)
    assert r["held_out"] is None  # which runs its law was fitted to was not recorded then


def _toml(tmp_path, model) -> Path:
    p = tmp_path / "old.toml"
    p.write_text(model.to_toml())
    return p


STAGED = LADDER_SPEC.replace('contexts = [128, "32K"]', 'contexts = [512, "32K"]') + """
[[stages]]
name = "pretrain"

[[stages]]
name = "extend"
from = "pretrain"
set = { "data.seq_len" = 512 }
derived = { "train.tokens" = "round(0.1 * train.tokens)", "model.attention.full_layers" = "1" }

[[stages.axes]]
list = [{ "model.attention.sparse" = "full" }, { "model.attention.sparse" = "sink_window(4,64)" }]

[[stages]]
name = "compress"
from = "extend"
set = { "train.trainable" = "policy" }

[[stages.axes]]
grid = { "model.kv_policy.method" = ["kv_distill"], "model.kv_policy.keep" = [0.25] }
"""


def test_spec_out_follows_a_staged_recipe(store, tmp_path, cli):
    """Laws fitted on a staged ladder's extensions: each winner is pretrained as the recipe pretrains and extended
    as it extends (the extension run is the winner); the compress stage is left out. A recipe whose extension
    would change the winner into another model is refused before anything is written."""
    from costlaw.sweeps.expand import expand
    from costlaw.sweeps.spec import load

    recipe, spec = tmp_path / "staged.toml", tmp_path / "loop.toml"
    recipe.write_text(STAGED)
    rc, out, err = cli("recommend", "--db", store, *ARGS, "--json", "--spec-out", spec, "--recipe-from", recipe,
                       "--train-seed", "7")
    assert rc == 0, err
    winners = [ModelConfig.from_dict(c["winner_config"]) for c in json.loads(out)["by_context"]]
    planned = expand(load(spec), tmp_path / "root")
    ext = [r for r in planned if r.stage == "extend"]
    assert {r.stage for r in planned} == {"pretrain", "extend"} and len(ext) == len(winners) == 2
    assert [r.config.model for r in ext] == winners and {r.config.data.seq_len for r in ext} == {512}
    for r in ext:
        parent = next(p for p in planned if p.run_id == r.parent_id).config
        assert parent.data.seq_len == 128 and parent.model == r.config.model  # dense winners: the same model
        assert r.config.train.tokens == round(0.1 * parent.train.tokens)
    assert "# chain: dense" in spec.read_text()
    moved = tmp_path / "moved.toml"  # an extension that also raises RoPE theta: the winner's theta is not reached
    moved.write_text(STAGED.replace('set = { "data.seq_len" = 512 }',
                                    'set = { "data.seq_len" = 512, "model.rope_theta" = 123456.0 }'))
    rc, _, err = cli("recommend", "--db", store, *ARGS, "--spec-out", tmp_path / "x.toml", "--recipe-from", moved,
                     "--train-seed", "7")
    assert rc == 2 and "following its stages does not give the recommended config(s)" in err
    assert not (tmp_path / "x.toml").exists()


def test_a_hybrid_winner_is_pretrained_dense_and_extended_as_the_ladders_hybrids(tmp_path):
    """The long-context ladder's recipe (studies/long-context/spec-r2.toml): a hybrid winner's chain pretrains it
    with every layer full at RoPE theta 5e5 and extends it to 16K with its own pattern and full-layer count, so the
    extension is the winner's model_id; a winner of another chain is refused for that file."""
    from pathlib import Path

    from costlaw.analysis.recommend.specout import (
        chain_of,
        merge_points,
        point_line,
        pretrain_model,
        read_recipe,
        spec_text,
    )
    from costlaw.costmodel.config import hybrid_layout
    from costlaw.costmodel.core.errors import CostlawError
    from costlaw.sweeps.expand import expand
    from costlaw.sweeps.spec import parse

    recipe = Path(__file__).resolve().parents[2] / "studies/long-context/spec-r2.toml"
    raw = read_recipe(recipe)
    winner = ModelConfig(d_model=320, n_layers=5, n_heads=8, n_kv_heads=2, head_dim=64, ffn_dim=864, vocab_size=264,
                         tied_embeddings=True, rope_theta=5e6,
                         layout=hybrid_layout(5, "sink_window(64,1024)", full_layers=2))
    chain = chain_of(winner.to_dict())
    assert chain == "sink_window(64,1024) full_layers=2"
    pre = pretrain_model(winner.to_dict(), raw)
    assert "layout" not in pre and pre["rope_theta"] == 5e5
    text = spec_text([point_line(pre, "w")], recipe, 9, chain=chain)
    runs = expand(parse(text), "/tmp/x")
    assert [r.stage for r in runs] == ["pretrain", "extend"]
    assert runs[0].config.model.family == "gqa" and runs[0].config.data.seq_len == 2048
    assert runs[1].config.model.config_id == winner.config_id and runs[1].config.data.seq_len == 16384
    out = tmp_path / "loop.toml"
    out.write_text(text)
    with pytest.raises(CostlawError, match="trains sink_window.64,1024. full_layers=2 extensions"):
        merge_points(out, recipe, 9, "dense")
    assert len(merge_points(out, recipe, 9, chain)) == 1


def test_closed_loop_compares_runs_at_the_laws_context(store, tmp_path, cli):
    """A run of the winner's model trained at another context than the laws' (a staged chain's pretraining run
    when the extension changes no model field) is not the run a prediction is about."""
    toml = tmp_path / "rec.toml"
    rc, _, err = cli("recommend", "--db", store, "--target-loss", "1.9", "--context", "128", "--bootstrap", "8",
                     "--toml-out", toml, "--record")
    assert rc == 0, err
    [rec] = rows(store, "SELECT model_id, train_context FROM recommendations")
    assert rec["train_context"] == 128
    cfg = ModelConfig.from_toml(toml.read_text())
    for T, loss in ((128, 1.95), (512, 1.5)):
        rcfg = FX.run_config(cfg, seed=9)
        rcfg["data"]["seq_len"] = T
        write_run(tmp_path / "trained", rcfg, sweep="closed", final_loss=loss + 0.01,
                  evals=[{"eval": "val_loss", "tags": {"context": T}, "metrics": {"loss": loss, "tokens": 4096}}])
    ingest(tmp_path / "trained", store)
    got = rows(store, "SELECT seq_len, measured FROM closed_loop")
    assert got == [{"seq_len": 128, "measured": 1.95}]
