"""analysis.hybrid and `costlaw compare-hybrid` on a synthetic store: a dense pretrain extended twice (dense,
hybrid), with known measurements. The ideals are checked against costmodel directly, the pairing against runs that
must not be paired."""

import json

import pytest

from costlaw.analysis.hybrid import compare, render_markdown
from costlaw.analysis.store.ingest import ingest
from costlaw.cli import main as costlaw
from costlaw.costmodel import ModelConfig, c_infer, c_train, hybrid_layout, kv_cache_bytes, params_total, prefill_flops
from costlaw.costmodel.core.errors import CostlawError
from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from tests.support.synth_runs import write_run

T_PRE, T_EXT, CONTEXTS, DECODE = 128, 1024, (1024, 2048), 16
DENSE = ModelConfig(d_model=64, n_layers=6, n_heads=4, n_kv_heads=1, head_dim=16, ffn_dim=192, vocab_size=257,
                    tied_embeddings=True, rope_theta=10000.0)
HYBRID = DENSE.with_layout(hybrid_layout(6, "sink_window(4,64)", full_layers=2))
TOKENS_PER_S = {"dense": 100_000.0, "hybrid": 150_000.0}
PREFILL_S = {"dense": {1024: 0.020, 2048: 0.050}, "hybrid": {1024: 0.010, 2048: 0.020}}
DECODE_TPS = {"dense": {1024: 200.0, 2048: 150.0}, "hybrid": {1024: 300.0, 2048: 330.0}}
POSITION = {"dense": [3.0, 2.8, 2.7, 2.65], "hybrid": [3.01, 2.79, 2.72, 2.66]}
RETRIEVAL = {"dense": {0.1: 0.5, 0.9: 1.0}, "hybrid": {0.1: 0.25, 0.9: 0.75}}
VAL = {"dense": 2.5, "hybrid": 2.52}
KV_OFF = 4096  # the hybrid's measured cache at 2048 is this much off the analytic one


def _pretrain(root, seed=0) -> str:
    rc = RunConfig(model=DENSE, data=DataConfig(seq_len=T_PRE), train=TrainConfig(steps=10, batch_size=4), seed=seed)
    write_run(root, rc.to_dict(), sweep="hx")
    return rc.run_id


def _evals(name: str, cfg: ModelConfig) -> list[dict]:
    ev = [{"eval": "val_loss", "tags": {"context": T_EXT}, "metrics": {"loss": VAL[name], "tokens": 8192}}]
    span = T_EXT // len(POSITION[name])
    for b, loss in enumerate(POSITION[name]):
        ev.append({"eval": "position_loss", "tags": {"context": T_EXT, "bucket": b, "start": b * span,
                                                     "end": (b + 1) * span}, "metrics": {"loss": loss, "tokens": 512}})
    # another context than the training length, in both runs: must stay out of the table
    ev.append({"eval": "position_loss", "tags": {"context": 2048, "bucket": 0, "start": 0, "end": 2048},
               "metrics": {"loss": 9.0, "tokens": 512}})
    for depth, acc in RETRIEVAL[name].items():
        ev.append({"eval": "retrieval", "tags": {"context": T_EXT, "depth": depth},
                   "metrics": {"accuracy": acc, "samples": 4}})
    for ctx in CONTEXTS:
        kv = kv_cache_bytes(cfg, ctx, "bf16") + (KV_OFF if (name, ctx) == ("hybrid", 2048) else 0)
        ev.append({"eval": "inference", "tags": {"context": ctx, "batch": 1},
                   "metrics": {"prefill_s": PREFILL_S[name][ctx], "prefill_tokens": ctx - DECODE,
                               "decode_tokens_per_s": DECODE_TPS[name][ctx], "kv_bytes": kv,
                               "kv_bytes_analytic": kv_cache_bytes(cfg, ctx, "bf16"), "peak_bytes": 1 << 26}})
    return ev


def _extend(root, base: str, name: str, seed=0) -> str:
    cfg = DENSE if name == "dense" else HYBRID
    rc = RunConfig(model=cfg, data=DataConfig(seq_len=T_EXT, doc_mask=False),
                   train=TrainConfig(steps=10, batch_size=1, init_from=f"/x/runs/{base}"),
                   eval=EvalConfig(contexts=CONTEXTS, decode_tokens=DECODE), seed=seed, stage="extend")
    d = write_run(root, rc.to_dict(), evals=_evals(name, cfg), sweep="hx", base_run_id=base)
    summary = json.loads((d / "summary.json").read_text())
    summary["tokens_per_s"] = TOKENS_PER_S[name]  # synth writes one throughput for every run
    (d / "summary.json").write_text(json.dumps(summary))
    return rc.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hybrid")
    base = _pretrain(tmp / "root")
    ids = {"base": base, "dense": _extend(tmp / "root", base, "dense"),
           "hybrid": _extend(tmp / "root", base, "hybrid")}
    ingest(tmp / "root", tmp / "results.duckdb")
    return tmp / "results.duckdb", ids


def test_pairs_the_hybrid_with_its_dense_twin(store):
    db, ids = store
    res = compare(db)
    assert len(res["pairs"]) == 1
    p = res["pairs"][0]
    assert (p["dense"]["run_id"], p["hybrid"]["run_id"], p["base_run_id"]) == (ids["dense"], ids["hybrid"], ids["base"])
    assert p["base"]["run_id"] == ids["base"] and p["base"]["seq_len"] == T_PRE
    assert (p["dense"]["n_full_layers"], p["hybrid"]["n_full_layers"]) == (6, 2)
    assert p["val_loss"] == pytest.approx({"context": T_EXT, "dense": 2.5, "hybrid": 2.52, "delta": 0.02})
    assert [b["bucket"] for b in p["position_loss"]] == [0, 1, 2, 3]
    assert [b["dense"] for b in p["position_loss"]] == POSITION["dense"]
    assert [b["delta"] for b in p["position_loss"]] == pytest.approx([0.01, -0.01, 0.02, 0.01])
    assert [(b["start"], b["end"]) for b in p["position_loss"]][-1] == (768, 1024)
    assert [(r["depth"], r["dense"], r["hybrid"], r["samples_dense"]) for r in p["retrieval"]] == [
        (0.1, 0.5, 0.25, 4), (0.9, 1.0, 0.75, 4)]


def test_speedups_and_ideals_match_costmodel(store):
    db, _ = store
    p = compare(db)["pairs"][0]
    tr = p["train"]
    ideal = c_train(DENSE, T_EXT) / c_train(HYBRID, T_EXT)
    assert ideal > 1.2  # the sparse layers must buy something, or the check below proves little
    assert tr["measured"] == pytest.approx(1.5)
    assert tr["ideal"] == pytest.approx(ideal, rel=1e-12)
    assert tr["share"] == pytest.approx(1.5 / ideal)
    assert [i["context"] for i in p["inference"]] == list(CONTEXTS)
    for inf in p["inference"]:
        ctx = inf["context"]
        prompt = ctx - DECODE
        assert inf["prefill_tokens"] == prompt
        pf = inf["prefill"]
        pf_ideal = prefill_flops(DENSE, prompt) / prefill_flops(HYBRID, prompt)
        assert pf["measured"] == pytest.approx(PREFILL_S["dense"][ctx] / PREFILL_S["hybrid"][ctx])
        assert pf["ideal"] == pytest.approx(pf_ideal, rel=1e-12)
        assert pf["share"] == pytest.approx(pf["measured"] / pf_ideal)
        dc = inf["decode"]
        measured = DECODE_TPS["hybrid"][ctx] / DECODE_TPS["dense"][ctx]
        by_flops = c_infer(DENSE, ctx) / c_infer(HYBRID, ctx)
        by_bytes = ((2 * params_total(DENSE) + kv_cache_bytes(DENSE, ctx, "bf16"))
                    / (2 * params_total(HYBRID) + kv_cache_bytes(HYBRID, ctx, "bf16")))
        assert by_flops > 1 and by_bytes > 1 and by_flops != pytest.approx(by_bytes)
        assert dc["measured"] == pytest.approx(measured)
        assert dc["ideal_flops"] == pytest.approx(by_flops, rel=1e-12)
        assert dc["ideal_bytes"] == pytest.approx(by_bytes, rel=1e-12)
        assert dc["share_flops"] == pytest.approx(measured / by_flops)
        assert dc["share_bytes"] == pytest.approx(measured / by_bytes)


def test_kv_bytes_measured_vs_analytic(store):
    db, _ = store
    kv = {i["context"]: i["kv"] for i in compare(db)["pairs"][0]["inference"]}
    for ctx in CONTEXTS:
        assert kv[ctx]["dense"]["analytic"] == kv_cache_bytes(DENSE, ctx, "bf16")
        assert kv[ctx]["hybrid"]["analytic"] == kv_cache_bytes(HYBRID, ctx, "bf16")
        assert kv[ctx]["dense"]["exact"] is True
    assert kv[1024]["hybrid"]["exact"] is True
    assert kv[2048]["hybrid"]["exact"] is False
    assert kv[2048]["hybrid"]["measured"] - kv[2048]["hybrid"]["analytic"] == KV_OFF
    assert kv[1024]["hybrid_over_dense"]["analytic"] == pytest.approx(
        kv_cache_bytes(HYBRID, 1024) / kv_cache_bytes(DENSE, 1024))


def test_markdown_shows_the_numbers(store):
    db, ids = store
    res = compare(db)
    md = render_markdown(res)
    p = res["pairs"][0]
    assert ids["hybrid"] in md and ids["dense"] in md
    assert "| val loss @ 1K (nats/token) | 2.5000 | 2.5200 | +0.0200 |" in md
    assert f"| 1.50× | {p['train']['ideal']:.2f}× (C_train) | {100 * p['train']['share']:.0f}% |" in md
    assert "| 0.2500 (1/4) |" in md  # hybrid retrieval at depth 0.1
    assert "| 0 | 0–256 | 3.0000 | 3.0100 | +0.0100 |" in md
    assert "9.0000" not in md  # the position loss at another context
    kv_rows = [line for line in md.splitlines() if line.startswith("| 2K | hybrid |")]
    assert len(kv_rows) == 1 and "| no |" in kv_rows[0]


def test_verb_writes_outputs(store, tmp_path, capsys):
    db, ids = store
    out = tmp_path / "out"
    assert costlaw(["compare-hybrid", "--db", str(db), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"pair 1: hybrid {ids['hybrid']}" in printed and f"vs dense {ids['dense']}" in printed
    assert "hybrid − dense = +0.0200 nats/token; train speedup 1.50×" in printed
    for name in ("hybrid.json", "hybrid.md", "hybrid.png", "hybrid.svg"):
        assert f"wrote {out / name}" in printed
    doc = json.loads((out / "hybrid.json").read_text())
    assert doc["pairs"][0]["hybrid"]["run_id"] == ids["hybrid"]
    assert (out / "hybrid.md").read_text() == render_markdown(compare(db))
    png = out / "hybrid.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "<svg" in (out / "hybrid.svg").read_text()


def test_no_dense_twin_is_a_one_line_error(tmp_path, capsys):
    root = tmp_path / "root"
    base = _pretrain(root)
    other = _pretrain(root, seed=1)
    _extend(root, other, "dense")  # a dense extension, but of another checkpoint: not a twin
    hybrid = _extend(root, base, "hybrid")
    ingest(root, tmp_path / "results.duckdb")
    with pytest.raises(CostlawError, match=f"hybrid run {hybrid}: no dense twin found.*base_run_id {base}"):
        compare(tmp_path / "results.duckdb")
    assert costlaw(["compare-hybrid", "--db", str(tmp_path / "results.duckdb"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no dense twin found" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "hybrid.md").exists()


def test_no_hybrid_extension_is_an_error(tmp_path):
    root = tmp_path / "root"
    _extend(root, _pretrain(root), "dense")
    ingest(root, tmp_path / "results.duckdb")
    with pytest.raises(CostlawError, match="no completed hybrid run started from another run"):
        compare(tmp_path / "results.duckdb")


def test_verb_json_is_the_comparison(store, tmp_path, capsys):
    db, _ = store
    capsys.readouterr()
    assert costlaw(["compare-hybrid", "--db", str(db), "--out", str(tmp_path / "out"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "out" / "hybrid.json").read_text())


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "--db: no such results file"),
    (lambda p: p.write_text("not a database"), "--db: cannot open"),
])
def test_verb_bad_store_is_one_line(tmp_path, capsys, setup, message):
    db = tmp_path / "results.duckdb"
    setup(db)
    assert costlaw(["compare-hybrid", "--db", str(db), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("costlaw compare-hybrid: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_committed_study_is_reproduced(tmp_path, monkeypatch):
    """studies/hybrid-extend's hybrid.json and hybrid.md are what the verb derives from its committed store."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    study = root / "studies" / "hybrid-extend"
    monkeypatch.chdir(root)  # hybrid.json records the store's path as given, relative to the checkout
    assert costlaw(["compare-hybrid", "--db", "studies/hybrid-extend/results.duckdb", "--out", str(tmp_path)]) == 0
    for name in ("hybrid.json", "hybrid.md"):
        assert (tmp_path / name).read_text() == (study / name).read_text(), name
