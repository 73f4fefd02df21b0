"""Issue 24's data modes end to end: uniform pieces (`data.packing = "uniform"`) and spread val rows
(`eval.val_sample = "spread"`) through the trainer, preempted and resumed; the configs that turn them on; and
committed runs' ids, which the new fields leave exactly as they were."""

import json
import sysconfig
from pathlib import Path

import pytest

from costlaw.costmodel import ModelConfig
from costlaw.costmodel.core.errors import ConfigError
from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from costlaw.runs.train import train_run

REPO = Path(__file__).resolve().parents[2]
EMAIL = str(Path(sysconfig.get_paths()["stdlib"]) / "email")

# config.json of gqa-heads-steps' (8,2) d 256 L 4 seed 0 run, as its results.duckdb holds it (config_json)
COMMITTED = json.loads(
    '{"base_run_id":null,"config":{"data":{"corpus":"site-packages","curriculum":"none","curriculum_frac":0.1,'
    '"doc_mask":true,"long_docs":true,"packing":"balanced","retrieval_mix":0.0,"seq_len":2048,"tokenizer":"byte"},'
    '"eval":{"contexts":[],"decode_tokens":32,"kv_keep":[],"policies":[],"policy_runs":[],"position_buckets":8,'
    '"retrieval_depths":[0.1,0.5,0.9],"retrieval_samples":16,"val_tokens":262144},"model":{"d_model":256,'
    '"ffn_dim":672,"head_dim":64,"layout":["full*4"],"n_heads":8,"n_kv_heads":2,"n_layers":4,"rope_theta":500000.0,'
    '"tied_embeddings":true,"vocab_size":264},"name":"gqa-heads-steps:pretrain:d_model=256 n_layers=4 n_heads=8 '
    'n_kv_heads=2 seed=0","seed":0,"stage":"pretrain","train":{"batch_size":8,"beta1":0.9,"beta2":0.95,'
    '"checkpoint_every":0,"compile":"auto","decay_frac":0.2,"grad_accum":1,"grad_clip":1.0,"init_from":"",'
    '"log_every":50,"lr":0.002,"min_lr_ratio":0.1,"precision":"auto","steps":0,"tokens":67548160,'
    '"trainable":"all","warmup_frac":0.1,"weight_decay":0.1}},"created":"2026-11-24T05:02:07Z","format":1,'
    '"model_id":"126c217e876a","run_id":"cb37ab263651a59b","sweep":"gqa-heads-steps"}')


def _canonical(d: dict) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def test_committed_run_keeps_its_id_and_config():
    cfg = RunConfig.from_dict(COMMITTED["config"])
    assert _canonical(cfg.to_dict()) == _canonical(COMMITTED["config"])  # byte for byte
    assert cfg.run_id == COMMITTED["run_id"] == "cb37ab263651a59b"


def test_every_committed_gqa_heads_steps_run_keeps_its_id():
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect(str(REPO / "studies" / "gqa-heads-steps" / "results.duckdb"), read_only=True)
    try:
        rows = con.execute("select run_id, config_json from runs").fetchall()
    finally:
        con.close()
    assert len(rows) > 50
    for run_id, doc in rows:
        config = json.loads(doc)["config"]
        cfg = RunConfig.from_dict(config)
        assert cfg.run_id == run_id and _canonical(cfg.to_dict()) == _canonical(config)


def test_new_modes_are_part_of_a_run_only_when_set():
    base = RunConfig.from_dict(COMMITTED["config"])
    spread = base.replace(eval=EvalConfig(**{**COMMITTED["config"]["eval"], "val_sample": "spread"}))
    assert spread.to_dict()["eval"]["val_sample"] == "spread" and "val_sample" not in base.to_dict()["eval"]
    uniform = base.replace(data=DataConfig(**{**COMMITTED["config"]["data"], "packing": "uniform"}))
    assert len({base.run_id, spread.run_id, uniform.run_id}) == 3
    for cfg in (spread, uniform):
        assert RunConfig.from_toml(cfg.to_toml()) == cfg and RunConfig.from_toml(cfg.to_toml()).run_id == cfg.run_id
    with pytest.raises(ConfigError, match="^data.curriculum: "):
        RunConfig.from_dict({**COMMITTED["config"], "data": {"packing": "uniform", "curriculum": "short-first"}})
    with pytest.raises(ConfigError, match="^eval.val_sample: "):
        RunConfig.from_dict({**COMMITTED["config"], "eval": {"val_sample": "random"}})


def _cfg(steps=24) -> RunConfig:
    return RunConfig(
        model=ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=64, vocab_size=257),
        data=DataConfig(corpus=EMAIL, seq_len=64, packing="uniform", long_docs=False),
        train=TrainConfig(steps=steps, batch_size=4, grad_accum=2, lr=3e-3, log_every=5, checkpoint_every=0),
        eval=EvalConfig(val_tokens=1024, val_sample="spread", position_buckets=4, retrieval_samples=0,
                        decode_tokens=0))


@pytest.mark.usefixtures("one_thread", "private_cache")
def test_uniform_run_preempted_and_resumed_matches_unbroken(tmp_path, stop_after):
    cfg = _cfg()
    ref = train_run(cfg, tmp_path / "a" / cfg.run_id, device="cpu", progress=False)
    rd = tmp_path / "b" / cfg.run_id
    s = train_run(cfg, rd, device="cpu", stop_event=stop_after(13), progress=False)
    assert s["status"] == "preempted" and s["steps"] == 13
    s2 = train_run(cfg, rd, device="cpu", progress=False)
    assert s2["status"] == "completed" and s2["steps"] == 24
    assert s2["final_loss"] == ref["final_loss"] and s2["val_loss"] == ref["val_loss"]  # bit-identical
    assert s2["data"]["packing"] == "uniform" and s2["data"]["padding_ratio"] == 0.0
    row = json.loads((rd / "evals.jsonl").read_text().splitlines()[0])
    assert row["eval"] == "val_loss" and row["metrics"]["tokens"] == 1024
    m = row["metrics"]
    assert m["loss"] == s2["val_loss"] and 0 < m["loss_se"] < 0.5 and m["docs"] > 1 and m["loss_se_docs"] > 0
