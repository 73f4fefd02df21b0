"""RunConfig: validation errors are one line naming the field; identity and serialisation round trips."""

import json

import pytest

from costlaw.costmodel import ConfigError, preset
from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig

MODEL = {"preset": "gqa-3m", "vocab_size": 257}
T = {"steps": 10}


def _err(d: dict) -> str:
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(d)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("d, field", [
    ({}, "model: "),
    ({"model": MODEL, "bogus": 1}, "bogus: "),
    ({"model": MODEL}, "train.tokens: "),  # a run states its budget
    ({"model": MODEL, "train": {"steps": 0}}, "train.tokens: "),
    ({"model": MODEL, "train": {"steps": 10, "tokens": 1000}}, "train.tokens: "),
    ({"model": MODEL, "train": {"steps": 10, "lr": 0}}, "train.lr: "),
    ({"model": MODEL, "train": {"steps": 10, "warmup_frac": 0.6, "decay_frac": 0.6}}, "train.decay_frac: "),
    ({"model": MODEL, "train": {"steps": 10, "batch_size": 0}}, "train.batch_size: "),
    ({"model": MODEL, "train": {"steps": 10, "precision": "fp16"}}, "train.precision: "),
    ({"model": MODEL, "train": {"steps": "ten"}}, "train.steps: "),
    ({"model": MODEL, "train": {"steps": 10, "lrr": 1}}, "train.lrr: "),
    ({"model": MODEL, "data": {"packing": "tight"}}, "data.packing: "),
    ({"model": MODEL, "data": {"tokenizer": "gpt3"}}, "data.tokenizer: "),
    ({"model": MODEL, "data": {"seq_len": 4}}, "data.seq_len: "),
    ({"model": MODEL, "data": {"retrieval_mix": 1.5}}, "data.retrieval_mix: "),
    ({"model": MODEL, "data": {"curriculum": "long-first"}}, "data.curriculum: "),
    ({"model": MODEL, "train": T, "eval": {"retrieval_depths": [0.5, 2.0]}}, "eval.retrieval_depths: "),
    ({"model": MODEL, "train": T, "eval": {"kv_keep": [0.0]}}, "eval.kv_keep: "),
    ({"model": {"preset": "gqa-3m", "vocab_size": 256}, "train": T}, "model.vocab_size: "),
    ({"model": MODEL, "train": T, "data": {"tokenizer": "gpt2"}}, "model.vocab_size: "),
    ({"model": MODEL, "train": {"steps": 10, "trainable": "policy"}}, "train.trainable: "),
    ({"model": MODEL, "train": T, "stage": "extend"}, "train.init_from: "),
    ({"model": MODEL, "train": T, "stage": "finetune"}, "stage: "),
    ({"model": MODEL, "train": T, "seed": -1}, "seed: "),
    ({"model": {"preset": "gqa-3m", "vocab_size": 257, "n_kv_heads": 3}}, "model.n_kv_heads: "),
])
def test_errors_name_the_field(d, field):
    assert _err(d).startswith(field)


def test_round_trips_and_identity(tmp_path):
    cfg = RunConfig(model=preset("gqa-3m", vocab_size=257), data=DataConfig(seq_len=128, retrieval_mix=0.1),
                    train=TrainConfig(tokens=1 << 20, batch_size=4, grad_accum=2),
                    eval=EvalConfig(contexts=(256, 512)), seed=3, name="a")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_toml(cfg.to_toml()) == cfg
    assert cfg.replace(name="b").run_id == cfg.run_id  # the name is a label, not identity
    assert cfg.replace(seed=4).run_id != cfg.run_id
    assert len(cfg.run_id) == 16
    assert cfg.tokens_per_step == 4 * 2 * 128 and cfg.total_steps == -(-(1 << 20) // 1024)
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"run_id": cfg.run_id, "config": cfg.to_dict()}))
    assert RunConfig.load(p) == cfg  # a run directory's config.json loads as the run config
    with pytest.raises(ConfigError, match="^config: "):
        RunConfig.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="^toml: "):
        RunConfig.load(bad)


def test_examples_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "runs" / "examples"
    gqa = RunConfig.load(root / "tiny-gqa.toml")
    hyb = RunConfig.load(root / "tiny-hybrid.toml")
    assert gqa.model.family == "gqa" and hyb.model.family == "hybrid"
    assert hyb.model.n_full_layers == 1 and gqa.data.corpus == hyb.data.corpus == "stdlib"
