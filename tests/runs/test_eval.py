"""Evaluation: validation rows (longest, spread), the val loss's standard errors, loss by position, the passkey
probe through the KV cache, inference KV bytes."""

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from costlaw.costmodel import ModelConfig, kv_cache_bytes
from costlaw.costmodel.core.rundir import RunDir
from costlaw.runs import evaluate as ev
from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from costlaw.runs.data.prepare import load
from costlaw.runs.data.shards import Split
from costlaw.runs.data.tokenizers import ByteTokenizer
from costlaw.runs.evaluate import evaluate, greedy_decode, se_clusters, se_successive, spread_plan, val_loss, val_rows
from costlaw.runs.models import build_model
from costlaw.runs.packing import materialize

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


@pytest.mark.parametrize("model", [GQA, HYBRID], ids=["gqa", "hybrid"])
def test_rows_per_forward_change_no_result(model, monkeypatch):
    """Val loss, loss by position and passkey accuracy are the same with one row per forward as with many."""
    cfg = _cfg(model, retrieval_samples=5, decode_tokens=0).replace(train=TrainConfig(steps=1, batch_size=1))
    corpus = load(EMAIL, "byte")
    torch.manual_seed(0)
    m = build_model(model).eval()
    outs = []
    for tokens in (1, 1 << 16):
        monkeypatch.setattr(ev, "EVAL_TOKENS", tokens)
        outs.append((ev.eval_rows(cfg, 128), val_loss(m, cfg, corpus, torch.device("cpu"), None),
                     ev.retrieval(m, cfg, corpus, ByteTokenizer(), torch.device("cpu"), 128)))
    (r1, (v1, b1), k1), (rn, (vn, bn), kn) = outs
    assert (r1, rn) == (1, 512)
    assert vn["metrics"]["loss"] == pytest.approx(v1["metrics"]["loss"], rel=1e-6)
    assert [b["metrics"]["loss"] for b in bn] == pytest.approx([b["metrics"]["loss"] for b in b1], rel=1e-6)
    assert kn == k1


def test_eval_rows_hold_a_training_step_or_64k_tokens():
    cfg = _cfg(GQA)  # 4 rows of 128 a training step
    assert ev.eval_rows(cfg, 16384) == 4 and ev.eval_rows(cfg, 2048) == 32 and ev.eval_rows(cfg, 1 << 17) == 1
    big_step = cfg.replace(train=TrainConfig(steps=1, batch_size=1024))
    assert ev.eval_rows(big_step, 128) == 1024  # never fewer rows than a training step holds


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


# ---------------------------------------------------------------- spread rows and standard errors
def _doc_split(n=200, mean_len=2000, seed=0):
    rng = np.random.default_rng(seed)
    return _split(np.maximum(1, rng.lognormal(np.log(mean_len), 1.0, n)).astype(np.int64), seed)


def test_spread_rows_one_window_per_stretch_of_the_split():
    split = _split([40, 300, 20, 130, 10, 500, 70])
    P = int(split.positions.sum())
    plan, sampled = spread_plan(split, 32, 10)
    assert plan.rows == 10 and sampled == pytest.approx(320 / P)
    width = P / 10
    start = np.cumsum(split.positions) - split.positions
    for r in range(10):
        sel = plan.row == r
        first = int(start[plan.doc[sel][0]] + plan.start[sel][0])
        assert r * width <= first and first + 32 <= (r + 1) * width  # inside its stretch: windows never overlap
        assert plan.length[sel].sum() == 32 and plan.col[sel][0] == 0
    hb = val_rows(split, 32, 10, 256, "spread")
    assert (hb.targets != -100).all()  # whole windows: every position is scored
    again, _ = spread_plan(split, 32, 10)
    assert plan.doc.tolist() == again.doc.tolist() and plan.start.tolist() == again.start.tolist()
    whole, share = spread_plan(split, 32, 1000)  # asked for more than the split holds: all of it, once
    assert share == 1.0 and whole.rows == -(-P // 32) and int(whole.length.sum()) == P


class TokenLoss(torch.nn.Module):
    """A stand-in model whose loss at a position is a fixed function of its target token (plus its document's
    offset when `effect` is given through `doc_of`), so the val split's true mean loss is known."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32))

    def forward(self, idx, targets=None, doc_ids=None, reduction="none"):
        return torch.where(targets >= 0, self.table[targets.clamp(min=0)], torch.zeros(()))


def test_spread_val_rows_are_the_same_for_every_run():
    corpus = load(EMAIL, "byte", long_docs=False)  # a file a document: several in val
    table = np.random.default_rng(1).random(257) * 2
    outs = []
    for seed in (0, 1, 5):
        cfg = _cfg(GQA, val_sample="spread", val_tokens=2048).replace(seed=seed)
        outs.append(val_loss(TokenLoss(table), cfg, corpus, torch.device("cpu"), None))
    assert outs[0] == outs[1] == outs[2]
    m = outs[0][0]["metrics"]
    assert m["tokens"] == 2048 and m["docs"] > 1 and m["loss_se"] > 0 and m["loss_se_docs"] > 0
    longest = val_loss(TokenLoss(table), _cfg(GQA, val_tokens=2048), corpus, torch.device("cpu"), None)[0]
    assert "loss_se" not in longest["metrics"]  # its rows are the longest documents, not a sample of the split
    assert longest["metrics"]["loss"] != m["loss"]


def test_successive_difference_se_matches_the_spread_of_redrawn_rows(monkeypatch):
    """Redraw the spread rows' offsets 300 times on a split whose documents differ in level (sd `tau`): the
    reported se tracks the estimates' real spread — equal to it without document effects, larger (conservative)
    with them — and ±2 se holds the split's true mean at least 93% of the time."""
    split = _doc_split()
    rng = np.random.default_rng(2)
    table = rng.random(257) * 2
    T, R = 64, 100
    full, _ = spread_plan(split, T, 10**9)
    for tau, lo, hi in ((0.0, 0.85, 1.15), (0.3, 0.9, 1.6)):
        effect = rng.normal(0, tau, split.n_docs)

        def losses(plan, effect=effect):
            hb = materialize(split, plan, 256)
            return np.where(hb.targets >= 0, table[np.maximum(hb.targets, 0)] + effect[ev.doc_map(plan)], 0.0)

        truth = losses(full).sum() / split.positions.sum()
        est, se = [], []
        for seed in range(300):
            monkeypatch.setattr(ev, "SPREAD_SEED", seed)
            plan, sampled = spread_plan(split, T, R)
            rows = losses(plan).sum(1)
            est.append(rows.sum() / (R * T))
            se.append(se_successive(rows, np.full(R, T), sampled))
        est, se = np.array(est), np.array(se)
        assert lo < se.mean() / est.std() < hi
        assert np.mean(np.abs(est - truth) < 2 * se) >= 0.93


def test_cluster_se_on_documents_of_known_variance():
    """G equal documents whose mean losses scatter with sd tau around mu: the mean's standard error is
    tau / sqrt(G), and the cluster estimate averages to it (and is None for one document)."""
    rng = np.random.default_rng(3)
    G, n, mu, tau = 50, 400, 1.0, 0.2
    est, se = [], []
    for _ in range(2000):
        means = mu + rng.normal(0, tau, G)
        est.append(means.mean())
        se.append(se_clusters(means * n, np.full(G, n)))
    assert np.mean(se) == pytest.approx(tau / np.sqrt(G), rel=0.03)
    assert np.std(est) == pytest.approx(tau / np.sqrt(G), rel=0.06)
    assert se_clusters([3.0], [3]) is None and se_clusters([3.0, 0.0], [3, 0]) is None
    assert se_successive([1.0], [1], 0.0) is None
    assert se_successive([1.0, 2.0, 5.0], [1, 1, 1], 1.0) == 0.0  # the whole split: nothing left to sample


def test_spread_val_loss_scores_the_whole_split_when_asked_for_all_of_it():
    corpus = load(EMAIL, "byte")
    val = corpus.val
    table = np.random.default_rng(4).random(257) * 2
    cfg = _cfg(GQA, val_sample="spread", val_tokens=10**8)
    vl, buckets = val_loss(TokenLoss(table), cfg, corpus, torch.device("cpu"), None)
    targets = np.concatenate([np.r_[val.doc_tokens(d), 256] for d in range(val.n_docs)])
    m = vl["metrics"]
    assert m["tokens"] == len(targets) and m["docs"] == val.n_docs and m["loss_se"] == 0.0
    assert m["loss"] == pytest.approx(table[targets].mean(), rel=1e-6)
    assert sum(b["metrics"]["tokens"] for b in buckets) == m["tokens"]
