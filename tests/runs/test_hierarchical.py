"""Hierarchical balance packing (runs/hierarchical.py): routing to the smallest level, equal positions per
micro-batch, no position lost or repeated, balanced steps, determinism and resume; the new statistics (Ave-T,
level shares, DBR, step-time CV); per-level activation recomputation; a run trained end to end."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from costlaw.costmodel.core.errors import ConfigError
from costlaw.runs.config import check_levels
from costlaw.runs.hierarchical import HierarchicalPacker, _shares
from costlaw.runs.packing import MicroBatch, Packer, PackStats, abr
from costlaw.runs.train import step_time_stats, train_run
from tests.runs.test_packing import (
    _drawn_positions,
    _emitted,
    _lognormal_lengths,
    assert_deterministic_and_resumable,
)
from tests.runs.test_train import EMAIL, run_dir, tiny_cfg

LEVELS = (32, 64, 256)


def _route(length: int, levels=LEVELS) -> int:
    return next(L for L in levels if L >= length)


def test_pieces_go_to_the_smallest_level_and_nothing_is_lost():
    m = _lognormal_lengths(400, seed=1)
    p = HierarchicalPacker(m, seq_len=256, batch_size=2, grad_accum=4, levels=LEVELS, seed=3, window_rows=16)
    pieces, seen, whole, n_fragments = [], Counter(), 0, 0
    for _ in range(80):
        step = p.next_step()
        assert len(step) == 4
        for mb in step:
            assert mb.rows * mb.seq_len == 2 * 256  # the same positions at every level
            seen[mb.seq_len] += 1
            end = mb.col + mb.length
            assert end.max() <= mb.seq_len and mb.row.max() < mb.rows
            for r in range(mb.rows):  # pieces in a row never overlap
                sel = mb.row == r
                assert np.all(mb.col[sel][1:] >= end[sel][:-1])
            for d, s, n in zip(mb.doc.tolist(), mb.start.tolist(), mb.length.tolist()):
                if s % 256 == 0 and n == min(256, int(m[d]) - s):  # a whole piece (a split one's rest is a piece
                    assert mb.seq_len == _route(n)              # of its own in the next window: routed by its length)
                    whole += 1
            pieces += list(zip(mb.doc, mb.start, mb.length))
            n_fragments += len(mb.doc)
    for mb in p._window[p._window_pos:]:
        pieces += list(zip(mb.doc, mb.start, mb.length))
    pieces += list(zip(*p.carry))
    assert _emitted(pieces) == _drawn_positions(p, m)
    assert p.epoch >= 1 and set(seen) == set(LEVELS)  # every level used, an epoch crossed
    assert whole > 0.6 * n_fragments  # most fragments are whole pieces (74% here; balanced packing: 79%)


def test_levels_share_micro_batches_by_their_positions():
    assert _shares(np.array([10.0, 30.0, 60.0]), 10).tolist() == [1, 3, 6]
    assert _shares(np.array([1.0, 1.0, 1.0]), 4).sum() == 4
    assert _shares(np.array([0.0, 0.0, 0.0]), 3).tolist() == [0, 0, 3]
    # a corpus of only short documents trains in short rows only
    p = HierarchicalPacker(np.full(200, 20), seq_len=256, batch_size=2, grad_accum=2, levels=LEVELS, seed=0,
                           window_rows=16)
    assert {mb.seq_len for _ in range(10) for mb in p.next_step()} == {32}


def test_steps_are_balanced_and_padding_low():
    m = _lognormal_lengths(3000, seed=2)
    p = HierarchicalPacker(m, 256, 2, 8, levels=LEVELS, seed=0)
    stats = PackStats()
    step_costs = []
    for _ in range(60):
        step = p.next_step()
        stats.add_step(step)
        step_costs.append(sum(mb.cost for mb in step))
    assert stats.padding_ratio < 0.02
    # LPT over the window's micro-batches: steps cost about the same; a plain deal in planning order does not
    assert abr(step_costs) < 0.1
    flat = Packer(m, 256, 2, 8, mode="greedy", seed=0)
    greedy = [sum(mb.cost for mb in flat.next_step()) for _ in range(60)]
    assert abr(step_costs) < abr(greedy)


def test_deterministic_and_resumable():
    m = _lognormal_lengths(500, seed=4)
    kw = dict(seq_len=256, batch_size=2, grad_accum=2, levels=LEVELS, seed=7, curriculum_steps=5,
              retrieval_mix=0.2, window_rows=32)
    assert_deterministic_and_resumable(lambda **o: HierarchicalPacker(m, **{**kw, **o}))


def test_level_errors_name_the_fix():
    assert check_levels([32, 64, 256], 256, 2) == (32, 64, 256)
    for levels, match in [((), "needs the pack groups"), ((64, 32, 256), "strictly ascending"),
                          ((32, 64), "must equal data.seq_len 256"), ((48, 256), "must divide")]:
        with pytest.raises(ConfigError, match=f"^data.pack_levels: .*{match}"):
            check_levels(levels, 256, 2)
    with pytest.raises(ConfigError, match="^data.pack_levels: applies to packing \"hierarchical\""):
        tiny_cfg(data={"pack_levels": (32, 64)})
    with pytest.raises(ConfigError, match="^data.pack_levels: the last level"):
        tiny_cfg(data={"packing": "hierarchical", "pack_levels": (16, 32)})
    # an older run's config (no pack_levels, no recompute_from) keeps its id: both are left out at their defaults
    d = tiny_cfg().to_dict()
    assert "pack_levels" not in d["data"] and "recompute_from" not in d["train"]


def _mb(i, rows, T, lengths):
    n = len(lengths)
    return MicroBatch(i, rows, T, np.zeros(n, np.int64), np.cumsum([0] + lengths[:-1]), np.arange(n),
                      np.zeros(n, np.int64), np.array(lengths), np.zeros(rows, bool), np.zeros(rows, np.int64),
                      np.zeros(rows))


def test_stats_ave_t_levels_and_dbr():
    s = PackStats()
    step = [_mb(0, 1, 8, [8]), _mb(1, 2, 4, [2, 2]), _mb(2, 1, 8, [4, 4]), _mb(3, 2, 4, [4])]
    s.add_step(step, world=2)
    assert s.ave_t == 8 + 4 + 8 + 4
    assert s.level_shares == {"4": 0.5, "8": 0.5}
    # rank 0 gets micro-batches 0 and 2 (costs 64 + 32), rank 1 gets 1 and 3 (8 + 16)
    assert s.dbr == pytest.approx(abr([96, 24]))
    again = PackStats(json.loads(json.dumps(s.state_dict())))
    assert again.dbr == s.dbr and again.level_shares == s.level_shares and again.ave_t == s.ave_t
    one = PackStats()
    one.add_step(step)
    assert one.dbr == 0.0


def test_step_time_stats():
    assert step_time_stats({"step_n": 1, "step_sum": 1.0, "step_sumsq": 1.0})["step_time_cv"] is None
    t = [0.1, 0.2, 0.3]
    got = step_time_stats({"step_n": 3, "step_sum": sum(t), "step_sumsq": sum(x * x for x in t)})
    assert got["step_time_s"] == pytest.approx(0.2)
    assert got["step_time_cv"] == pytest.approx(np.std(t, ddof=1) / 0.2)


def test_recompute_gives_the_same_gradients(monkeypatch):
    from costlaw.runs.models import build_model, transformer

    cfg = tiny_cfg().model
    torch.manual_seed(0)
    model = build_model(cfg)
    idx = torch.randint(0, 257, (2, 32))
    grads = []
    calls = []
    real = transformer.checkpoint
    monkeypatch.setattr(transformer, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    for recompute in (False, True):
        model.zero_grad()
        loss = model(idx, targets=idx, recompute=recompute)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert len(calls) == cfg.n_layers  # only the recomputing pass checkpoints, once per block
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.usefixtures("one_thread", "private_cache")
def test_hierarchical_run_trains_resumes_and_reports(tmp_path, stop_after):
    # files of 20-300 bytes cut from real modules: pieces for every level
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = "".join(p.read_text() for p in sorted(Path(EMAIL).glob("*.py"))[:6])
    rng = np.random.default_rng(0)
    at = 0
    for i in range(300):
        n = int(rng.integers(20, 300))
        (corpus / f"f{i:03d}.py").write_text(text[at:at + n])
        at += n
    cfg = tiny_cfg(steps=24, corpus=str(corpus),
                   data={"seq_len": 128, "packing": "hierarchical", "pack_levels": (32, 128), "long_docs": False},
                   train={"checkpoint_every": 0, "grad_accum": 2, "recompute_from": 128})
    ref = train_run(cfg, run_dir(tmp_path / "a", cfg), device="cpu", progress=False)
    assert ref["status"] == "completed"
    data = ref["data"]
    assert data["packing"] == "hierarchical" and set(data["level_shares"]) == {"32", "128"}
    assert sum(data["level_shares"].values()) == pytest.approx(1.0)
    assert data["ave_t"] == pytest.approx(ref["tokens"] / ref["steps"], rel=0.05)  # targets; padding is rare
    assert data["dbr"] == 0.0 and data["cr"] == 0.0
    assert ref["step_time_s"] > 0 and ref["step_time_cv"] >= 0
    rd = run_dir(tmp_path / "b", cfg)
    s = train_run(cfg, rd, device="cpu", stop_event=stop_after(11), progress=False)
    assert s["status"] == "preempted"
    s2 = train_run(cfg, rd, device="cpu", progress=False)
    assert s2["final_loss"] == ref["final_loss"] and s2["data"]["level_shares"] == data["level_shares"]


@pytest.mark.usefixtures("one_thread", "private_cache")
def test_passkey_rows_need_levels_that_hold_them(tmp_path):
    cfg = tiny_cfg(steps=2, data={"seq_len": 256, "packing": "hierarchical", "pack_levels": (32, 256),
                                  "retrieval_mix": 0.1})
    with pytest.raises(ConfigError, match="^data.pack_levels: passkey rows .* the smallest level is 32"):
        train_run(cfg, run_dir(tmp_path, cfg), device="cpu", progress=False)
