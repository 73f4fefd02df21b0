"""Compressed candidates from `costlaw kv-eval`'s own runs: kv-eval writes its kv_policy rows into a compress-stage
run that names the dense run it evaluated (base_run_id); the recommender and the frontier find them through it,
as they find rows written into a dense run itself."""

import pytest

from .conftest import load_data

FX = load_data("fixtures")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The fixture ladder with 4,4's kv_policy rows moved out of its runs into kv-eval-style compress runs."""
    from costlaw.analysis.store.ingest import ingest
    from costlaw.runs.config import RunConfig
    from tests.support.synth_runs import write_run

    tmp = tmp_path_factory.mktemp("store")
    mp = pytest.MonkeyPatch()
    plain = FX.evals
    moved = []

    def evals(label, cfg, loss):
        out = plain(label, cfg, loss)
        kv = [e for e in out if e["eval"] == "kv_policy"]
        if kv:
            moved.append((cfg, kv))
        return [e for e in out if e["eval"] != "kv_policy"]

    mp.setattr(FX, "evals", evals)
    try:
        db = FX.build_store(tmp)
    finally:
        mp.undo()
    root = tmp / "root"
    for cfg, kv in moved:
        base = RunConfig.from_dict(FX.run_config(cfg))
        ev = RunConfig.from_dict({**base.to_dict(), "stage": "compress",
                                  "train": {**base.to_dict()["train"], "init_from": str(root / "runs" / base.run_id)}})
        # as kv-eval writes it: no training, so no loss of its own
        write_run(root, ev.to_dict(), evals=kv, metrics=[], sweep="fixture", base_run_id=base.run_id)
    ingest(root, db)
    return db


def test_kv_eval_runs_give_compressed_candidates(store):
    from costlaw.analysis.recommend import fit_store
    from costlaw.runs.config import RunConfig

    by = {c.label: c for c in fit_store(store, n_boot=8).candidates}
    for keep, delta in FX.KV_DELTA.items():
        c = by[f"4,4 snapkv keep={keep:g}"]
        assert c.family == "compressed" and c.delta_nll == pytest.approx(delta)
        L, d = max(FX.SHAPES, key=lambda s: s[1])  # the largest dense run: the ΔNLL is read there
        assert f"on run {RunConfig.from_dict(FX.run_config(FX.model('4,4', L, d))).run_id}" in c.delta_source


def test_kv_eval_runs_reach_the_frontier(store):
    from costlaw.analysis.frontier import points

    df = points(store, [128])
    comp = df[df["family"] == "compressed"]
    assert len(comp) == len(FX.SHAPES) * len(FX.KV_DELTA)  # every 4,4 run, each keep
    assert sorted(comp["delta_nll"].round(6).unique()) == sorted(FX.KV_DELTA.values())


def test_a_policy_measured_on_several_sizes_gets_a_delta_law(tmp_path_factory):
    """ΔNLL measured on four base sizes, falling as c·N^b: the candidate carries that law, the search solves
    law(N) + ΔNLL(N) = target with it, and a fits file keeps it."""
    import math

    from costlaw.analysis.recommend import fit_store, load_fits, recommend
    from costlaw.costmodel import params_non_embedding

    c0, b0 = 0.4, -0.2
    mp = pytest.MonkeyPatch()
    plain = FX.evals

    def evals(label, cfg, loss):
        out = plain(label, cfg, loss)
        for e in out:
            if e["eval"] == "kv_policy" and e["tags"]["keep"] == 0.25:
                d = c0 * params_non_embedding(cfg) ** b0
                e["metrics"].update(nll=loss + d, delta_nll=d)
        return out

    mp.setattr(FX, "evals", evals)
    try:
        store = FX.build_store(tmp_path_factory.mktemp("law"))
    finally:
        mp.undo()
    fs = fit_store(store, n_boot=8)
    c = fs.get("4,4 snapkv keep=0.25")
    assert c.delta_law["sizes"] == len(FX.SHAPES)
    assert math.exp(c.delta_law["a"]) == pytest.approx(c0, rel=1e-6) and c.delta_law["b"] == pytest.approx(b0)
    flat = fs.get("4,4 snapkv keep=0.5")  # the same ΔNLL at every size: a flat law
    assert flat.delta_law["b"] == pytest.approx(0.0, abs=1e-9)
    rec = recommend(fs, 1.9, [128], candidates="4,4 snapkv keep=0.25")
    r = rec.rows[0]
    n = r.shape.n_params
    base = fs.get("4,4")
    from costlaw.fitting import get_law

    want = float(get_law(base.law).predict(base.params, [[float(n)]])[0]) + c0 * n ** b0
    assert r.predicted == pytest.approx(want, rel=1e-9)
    assert r.predicted <= 1.9 + 1e-9  # N* met the target with the ΔNLL at N*, not at the largest run
    again = load_fits(fs.save(tmp_path_factory.mktemp("f") / "fits.json")).get("4,4 snapkv keep=0.25")
    assert again.delta_law["b"] == pytest.approx(b0)


def test_frontier_points_are_lm_losses_measured_nearest_the_context(tmp_path):
    """A trained KV policy's run (its loss is the policy's training objective) is no point of its own, and at
    each context the frontier takes the runs trained nearest it: an extension at 1,024 is the point at 64K, its
    pretraining run at 128 the point at 128, never both in one Pareto set."""
    from costlaw.analysis.frontier import points
    from costlaw.analysis.store.ingest import ingest
    from costlaw.runs.config import RunConfig
    from tests.support.synth_runs import standard_evals, write_run

    db = FX.build_store(tmp_path)
    L, d = max(FX.SHAPES, key=lambda s: s[1])
    base = RunConfig.from_dict(FX.run_config(FX.model("4,4", L, d)))
    root = tmp_path / "more"
    parent = str(root / "runs" / base.run_id)
    ext = RunConfig.from_dict({**base.to_dict(), "stage": "extend", "data": {**base.to_dict()["data"], "seq_len": 1024},
                               "train": {**base.to_dict()["train"], "init_from": parent}})
    write_run(root, ext.to_dict(), evals=standard_evals(1024), sweep="fixture", base_run_id=base.run_id)
    pol = RunConfig.from_dict({**ext.to_dict(), "stage": "compress",
                               "model": {**ext.to_dict()["model"], "kv_policy": {"method": "kv_distill", "keep": 0.25}},
                               "train": {**ext.to_dict()["train"], "trainable": "policy",
                                         "init_from": str(root / "runs" / ext.run_id)}})
    objective = [{"eval": "val_loss", "tags": {"context": 1024}, "metrics": {"loss": 0.02, "tokens": 4096}}]
    write_run(root, pol.to_dict(), evals=objective, sweep="fixture", base_run_id=ext.run_id)
    ingest(root, db)
    df = points(db, [128, 65536])
    assert pol.run_id not in set(df["run_id"]) and df["loss"].min() > 0.5
    assert set(df[df["context"] == 65536]["run_id"]) == {ext.run_id}
    short = df[df["context"] == 128]
    assert ext.run_id not in set(short["run_id"]) and base.run_id in set(short["run_id"])
    notes = df.attrs["notes"]
    assert notes[0].startswith("1 compress-stage run(s) are no points of their own")
    assert notes[1].startswith("context 128: points are the runs trained at seq_len 128")
    assert notes[2].startswith("context 65536: points are the runs trained at seq_len 1024, the nearest measured; ")


def test_a_policy_over_sizes_and_keeps_gets_a_keep_law(tmp_path, cli):
    """ΔNLL measured as c·N^b·(1/keep - 1)^g at keeps 0.5 and 0.25 on every size and at 0.1 on the largest only: the
    joint law recovers (c, b, g); the keep measured on one size takes its ΔNLL(N) from it; --keep-grid adds keeps
    between the measured ones, priced by the same law and saying so."""
    import math

    from costlaw.analysis.recommend import fit_store
    from costlaw.costmodel import params_non_embedding

    c0, b0, g0 = 0.5, -0.15, 0.8
    top = max(d for _, d in FX.SHAPES)
    mp = pytest.MonkeyPatch()
    plain = FX.evals

    def law(n, k):
        return c0 * n ** b0 * (1 / k - 1) ** g0

    def evals(label, cfg, loss):
        out = [e for e in plain(label, cfg, loss) if e["eval"] != "kv_policy"]
        if label == "4,4":
            n = params_non_embedding(cfg)
            for k in (0.5, 0.25) + ((0.1,) if cfg.d_model == top else ()):
                out.append({"eval": "kv_policy", "tags": {"context": 128, "policy": "snapkv", "keep": k},
                            "metrics": {"nll": loss + law(n, k), "nll_full": loss, "delta_nll": law(n, k)}})
        return out

    mp.setattr(FX, "evals", evals)
    try:
        store = FX.build_store(tmp_path)
    finally:
        mp.undo()
    fs = fit_store(store, n_boot=8, keep_grid=2)
    kl = fs.get("4,4 snapkv keep=0.25").keep_law
    assert math.exp(kl["a"]) == pytest.approx(c0, rel=1e-6) and kl["b"] == pytest.approx(b0)
    assert kl["c"] == pytest.approx(g0) and kl["rms_log"] < 1e-9 and (kl["keep_min"], kl["keep_max"]) == (0.1, 0.5)
    one_size = fs.get("4,4 snapkv keep=0.1")
    assert one_size.delta_at(1e6) == pytest.approx(law(1e6, 0.1), rel=1e-6)
    assert "ΔNLL(N) from ΔNLL(N, keep)" in one_size.delta_source
    between = {c.template.kv_policy["keep"]: c for c in fs.candidates if "interpolated" in (c.delta_source or "")}
    assert sorted(between) == [0.171, 0.292]
    for k, c in between.items():
        assert c.delta_at(3e6) == pytest.approx(law(3e6, k), rel=1e-6) and c.retrieval is None
    plain_fs = fit_store(store, n_boot=8)
    assert not any("interpolated" in (c.delta_source or "") for c in plain_fs.candidates)
    from costlaw.analysis.recommend import load_fits

    again = load_fits(fs.save(tmp_path / "fits.json"))
    assert again.get("4,4 snapkv keep=0.25").keep_law["c"] == pytest.approx(g0)
    assert again.get("4,4 snapkv keep=0.171").delta_at(3e6) == pytest.approx(law(3e6, 0.171), rel=1e-6)
    rc, out, err = cli("recommend", "--db", store, "--target-loss", "2.0", "--context", "128", "--bootstrap", "8",
                       "--keep-grid", "2", "--families", "gqa,compressed", "--json")
    assert rc == 0, err
    import json

    labels = {c["label"] for c in json.loads(out)["candidates"]}
    assert {"4,4 snapkv keep=0.171", "4,4 snapkv keep=0.292"} <= labels
