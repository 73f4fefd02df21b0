"""Evaluation: validation rows, loss by position, the passkey probe through the KV cache, inference KV bytes."""

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from costlaw.costmodel import ModelConfig, kv_cache_bytes
from costlaw.costmodel.core.rundir import RunDir
from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from costlaw.runs.data.prepare import load
from costlaw.runs.data.shards import Split
from costlaw.runs.data.tokenizers import ByteTokenizer
from costlaw.runs.evaluate import evaluate, greedy_decode, val_rows
from costlaw.runs.models import build_model

EMAIL = str(Path(sysconfig.get_paths()["stdlib"]) / "email")


pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")


def _split(lens, seed=0):
    rng = np.random.default_rng(seed)
    lens = np.asarray(lens, np.int64)
    toks = rng.integers(0, 256, int(lens.sum())).astype(np.uint16)
    return Split("val", [toks], np.stack([np.zeros(len(lens), np.int64), np.cumsum(lens) - lens, lens], 1), 256)


def test_val_rows_full_windows_then_packed():
    split = _split([40, 300, 20, 130, 10])
    hb = val_rows(split, 64, 8, 256)
    # positions: 301, 131 -> 4 + 2 full windows, longest document first
    stream1 = np.concatenate([[256], split.doc_tokens(1), [256]])
    for r in range(4):
        assert list(hb.idx[r]) == list(stream1[64 * r:64 * r + 64])
        assert list(hb.targets[r]) == list(stream1[64 * r + 1:64 * r + 65])
        assert (hb.doc_ids[r] == 0).all() and list(hb.positions[r]) == list(range(64))
    stream3 = np.concatenate([[256], split.doc_tokens(3), [256]])
    assert list(hb.idx[4]) == list(stream3[:64]) and list(hb.idx[5]) == list(stream3[64:128])
    assert (hb.targets[6:] != -100).any()  # topped up with packed rows
    assert hb.idx.shape == (8, 64)


def _cfg(model, **ev):
    return RunConfig(model=model, data=DataConfig(corpus=EMAIL, seq_len=128),
                     train=TrainConfig(steps=1, batch_size=4),
                     eval=EvalConfig(**{"val_tokens": 1024, "position_buckets": 4, "retrieval_samples": 3,
                                        "retrieval_depths": (0.0, 1.0), "decode_tokens": 4, "contexts": (160,),
                                        **ev}))


GQA = ModelConfig(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=64, vocab_size=257)
HYBRID = GQA.replace(layout=["sink_window(4,32)", "full", "sink_window(4,32)"])


@pytest.mark.parametrize("model", [GQA, HYBRID], ids=["gqa", "hybrid"])
def test_evaluate_writes_every_result(tmp_path, model):
    cfg = _cfg(model)
    corpus = load(EMAIL, "byte")
    torch.manual_seed(0)
    m = build_model(model)
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    out = evaluate(m, cfg, corpus, torch.device("cpu"), rd, ByteTokenizer())
    rows = [json.loads(x) for x in (rd.path / "evals.jsonl").read_text().splitlines()]
    names = [r["eval"] for r in rows]
    assert names == ["val_loss"] + ["position_loss"] * 4 + ["retrieval"] * 2 + ["inference"] * 2
    vl = rows[0]["metrics"]
    assert out["val_loss"] == vl["loss"] and vl["tokens"] == 1024
    assert abs(vl["loss"] - np.log(257)) < 1.0  # an untrained model is near uniform
    buckets = rows[1:5]
    assert [(b["tags"]["start"], b["tags"]["end"]) for b in buckets] == [(0, 32), (32, 64), (64, 96), (96, 128)]
    weighted = sum(b["metrics"]["loss"] * b["metrics"]["tokens"] for b in buckets) / vl["tokens"]
    assert weighted == pytest.approx(vl["loss"], rel=1e-9)
    for r in rows[5:7]:
        assert 0.0 <= r["metrics"]["accuracy"] <= 1.0 and r["metrics"]["samples"] == 3
    for r, ctx in zip(rows[7:], (128, 160)):
        mt = r["metrics"]
        assert r["tags"] == {"context": ctx, "batch": 1}
        assert mt["kv_bytes"] == mt["kv_bytes_analytic"] == kv_cache_bytes(model, ctx, "fp32")
        assert mt["prefill_s"] > 0 and mt["decode_tokens_per_s"] > 0
    assert out["kv_bytes_measured"] == rows[7]["metrics"]["kv_bytes"]
    # evaluation reruns whole: a second call replaces the file instead of appending to it
    evaluate(m, cfg, corpus, torch.device("cpu"), rd, ByteTokenizer())
    assert len((rd.path / "evals.jsonl").read_text().splitlines()) == len(rows)


def test_hybrid_cache_is_smaller():
    assert kv_cache_bytes(HYBRID, 4096, "fp32") < kv_cache_bytes(GQA, 4096, "fp32")
    m = build_model(HYBRID)
    assert m.new_cache(1, 4096).nbytes() == kv_cache_bytes(HYBRID, 4096, "fp32")


@pytest.mark.parametrize("model", [GQA, HYBRID], ids=["gqa", "hybrid"])
def test_greedy_decode_through_cache_matches_full_forward(model):
    torch.manual_seed(1)
    m = build_model(model).eval()
    prompts = torch.randint(0, 257, (2, 50))
    with torch.no_grad():
        got = greedy_decode(m, prompts, 6, 56)
        seq = prompts
        for _ in range(6):
            nxt = m(seq)[:, -1].argmax(-1)
            seq = torch.cat([seq, nxt[:, None]], 1)
    assert torch.equal(got, seq[:, 50:])


def test_kv_policy_runs_skip_cache_evals(tmp_path):
    from costlaw.costmodel import KVPolicy

    model = GQA.replace(kv_policy=KVPolicy("streaming", keep=0.5))
    cfg = _cfg(model)
    corpus = load(EMAIL, "byte")
    out = evaluate(build_model(model), cfg, corpus, torch.device("cpu"), None, ByteTokenizer())
    assert out["kv_bytes_measured"] is None and out["evals"] == 5
