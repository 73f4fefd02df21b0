"""Packing: no token lost or duplicated, correct document segments, ABR, balance, determinism, resume; uniform
pieces: whole windows of the stream, an epoch covering it once, determinism per seed, exact resume, document
segments."""

from collections import Counter

import numpy as np
import pytest

from costlaw.costmodel.core.errors import ConfigError
from costlaw.runs.data.shards import Corpus, Split
from costlaw.runs.packing import (
    PAD_TARGET,
    MicroBatch,
    Packer,
    PackStats,
    UniformPieces,
    abr,
    abr_from,
    materialize,
    passkey_min_len,
    passkey_sequence,
    passkey_tokens,
    stream_pieces,
)


def _drawn_positions(p: Packer, m: np.ndarray) -> Counter:
    """Multiset of (doc, stream position) over every document the packer has drawn so far (all epochs)."""
    out = Counter()
    for e in range(p.epoch + 1):
        order = np.random.default_rng([p.seed, 1, e]).permutation(len(m))
        upto = p.cursor if e == p.epoch else len(m)
        for d in order[:upto].tolist():
            out.update((d, j) for j in range(int(m[d])))
    return out


def _emitted(pieces) -> Counter:
    out = Counter()
    for d, s, n in pieces:
        out.update((int(d), j) for j in range(int(s), int(s + n)))
    return out


@pytest.mark.parametrize("mode", ["balanced", "greedy", "none"])
def test_no_position_lost_or_repeated(mode):
    rng = np.random.default_rng(0)
    m = rng.integers(1, 300, size=120)  # input positions per document
    p = Packer(m, seq_len=64, batch_size=4, grad_accum=2, mode=mode, seed=3, window_rows=16)
    pieces = []
    for _ in range(60):
        for mb in p.next_step():
            assert mb.row.min() >= 0 and mb.row.max() < 4
            end = mb.col + mb.length
            assert end.max() <= 64
            for r in range(4):  # pieces in a row never overlap
                sel = mb.row == r
                cols, ends = mb.col[sel], end[sel]
                assert np.all(cols[1:] >= ends[:-1])
            pieces += list(zip(mb.doc, mb.start, mb.length))
    # the packer may be ahead of the consumer by its current window: add what it has planned but not handed out
    for mb in p._window[p._window_pos:]:
        pieces += list(zip(mb.doc, mb.start, mb.length))
    pieces += list(zip(*p.carry))
    assert _emitted(pieces) == _drawn_positions(p, m)
    assert p.epoch >= 1  # the test crossed an epoch boundary


def test_materialize_segments_and_targets():
    rng = np.random.default_rng(1)
    lens = rng.integers(1, 150, size=40)
    toks = rng.integers(0, 250, size=int(lens.sum())).astype(np.uint16)
    docs = np.stack([np.zeros(40, np.int64), np.cumsum(lens) - lens, lens], 1)
    split = Split("train", [toks], docs, eot=256)
    p = Packer(split.positions, 32, 4, 1, mode="balanced", seed=0, window_rows=8)
    for _ in range(10):
        mb = p.next_step()[0]
        hb = materialize(split, mb, eot=256)
        for r, c, d, s, n in zip(mb.row, mb.col, mb.doc, mb.start, mb.length):
            stream = np.concatenate([[256], split.doc_tokens(d), [256]])
            assert list(hb.idx[r, c:c + n]) == list(stream[s:s + n])
            assert list(hb.targets[r, c:c + n]) == list(stream[s + 1:s + n + 1])  # never crosses a document
            assert len(set(hb.doc_ids[r, c:c + n])) == 1
            assert list(hb.positions[r, c:c + n]) == list(range(n))
        for r in range(4):  # the id changes exactly where a piece (or the padding) starts
            starts = set(mb.col[mb.row == r].tolist())
            changes = {0} | {t for t in range(1, 32) if hb.doc_ids[r, t] != hb.doc_ids[r, t - 1]}
            used = int(mb.length[mb.row == r].sum())
            assert changes == starts | ({used} if used < 32 else set())
        assert hb.tokens == mb.tokens == int((hb.targets != PAD_TARGET).sum())


def test_abr_hand_example():
    # HBP's example: packs {1K x 4} and {2K x 2}: attention costs 4K^2 and 8K^2 -> ABR = (8-4)/(8*2) = 0.25
    assert abr([4 * 1024**2, 2 * (2048**2)]) == pytest.approx(0.25)
    assert abr([5.0, 5.0, 5.0]) == 0.0
    assert abr([1.0, 2.0, 3.0, 4.0]) == pytest.approx((3 + 2 + 1 + 0) / (4 * 4))
    assert abr_from(10.0, 4.0, 4) == pytest.approx(abr([1.0, 2.0, 3.0, 4.0]))
    stats = PackStats()
    assert stats.abr == 0.0 and stats.padding_ratio == 0.0


def test_micro_batch_cost_and_stats():
    m = np.array([10, 30, 64, 5])
    p = Packer(m, 64, 2, 1, mode="none", seed=0, window_rows=2)
    mb = p.next_step()[0]
    assert mb.cost == int((mb.length ** 2).sum())
    assert mb.pad == 2 * 64 - int(mb.length.sum())
    s = PackStats()
    s.add(mb)
    assert s.padding_ratio == pytest.approx(mb.pad / 128)


def _lognormal_lengths(n=3000, seed=0):
    return np.maximum(1, np.random.default_rng(seed).lognormal(np.log(300), 1.0, n)).astype(np.int64)


def test_balanced_beats_greedy_and_none():
    m = _lognormal_lengths()
    results = {}
    for mode in ("balanced", "greedy", "none"):
        p = Packer(m, 256, 8, 2, mode=mode, seed=0)
        stats = PackStats()
        for _ in range(150):
            for mb in p.next_step():
                stats.add(mb)
        results[mode] = (stats.abr, stats.padding_ratio)
    assert results["balanced"][0] < 0.7 * results["greedy"][0]
    assert results["greedy"][0] < results["none"][0]
    assert results["balanced"][1] == 0.0 and results["greedy"][1] == 0.0
    assert results["none"][1] > 0.1  # one document per row pads


def test_balanced_within_step():
    """Within one optimizer step the micro-batches' attention costs are near equal."""
    m = _lognormal_lengths(seed=2)
    p = Packer(m, 256, 4, 8, mode="balanced", seed=1)
    g = Packer(m, 256, 4, 8, mode="greedy", seed=1)
    b_abr = np.mean([abr([mb.cost for mb in p.next_step()]) for _ in range(20)])
    g_abr = np.mean([abr([mb.cost for mb in g.next_step()]) for _ in range(20)])
    assert b_abr < 0.05 and b_abr < g_abr / 3


def _plans(p, steps):
    return [[(mb.index, mb.row.tolist(), mb.col.tolist(), mb.doc.tolist(), mb.start.tolist(), mb.length.tolist(),
              mb.passkey.tolist()) for mb in p.next_step()] for _ in range(steps)]


def assert_deterministic_and_resumable(make):
    """make(**overrides) -> a fresh packer: the same seed plans the same steps, a state_dict (as a checkpoint
    stores it) resumes the exact sequence, another seed plans others."""
    import json

    a, b = make(), make()
    first = _plans(a, 13)
    assert first == _plans(b, 13)
    state = json.loads(json.dumps(a.state_dict()))
    rest = _plans(a, 20)
    c = make()
    c.load_state_dict(state)
    assert _plans(c, 20) == rest
    assert _plans(make(seed=8), 13) != first


@pytest.mark.parametrize("mode", ["balanced", "greedy", "none"])
def test_deterministic_and_resumable(mode):
    m = _lognormal_lengths(500, seed=4)
    kw = dict(seq_len=128, batch_size=4, grad_accum=2, mode=mode, seed=7, curriculum_steps=5, retrieval_mix=0.2,
              window_rows=32)
    assert_deterministic_and_resumable(lambda **o: Packer(m, **{**kw, **o}))


def test_short_first_curriculum():
    m = _lognormal_lengths(2000, seed=5)
    p = Packer(m, 256, 8, 1, mode="balanced", seed=0, curriculum_steps=10, window_rows=16)
    early = [m[mb.doc].mean() for _ in range(10) for mb in p.next_step()]
    late = [m[mb.doc].mean() for _ in range(30) for mb in p.next_step()]
    assert max(early) < np.median(m) < np.mean(late)
    assert early == sorted(early) or np.mean(early[:5]) <= np.mean(early[5:])


def test_passkey_rows():
    from costlaw.runs.data.tokenizers import ByteTokenizer

    tok = ByteTokenizer()
    corpus = Corpus.synthetic(n_docs=50, mean_len=200, vocab=257, seed=0)
    p = Packer(corpus.train.positions, 128, 8, 1, mode="balanced", seed=0, retrieval_mix=0.5, window_rows=8)
    mb = p.next_step()[0]
    assert 0 < mb.passkey.sum() < 8
    hb = materialize(corpus.train, mb, eot=256, tokenizer=tok)
    for r in np.flatnonzero(mb.passkey):
        text = tok.decode(np.concatenate([hb.idx[r], hb.targets[r, -1:]]))
        key = int(mb.keys[r])
        assert text.endswith(f" What is the pass key? {key}")
        assert f" The pass key is {key}. Remember it. " in text
        assert (hb.doc_ids[r] == 0).all() and (hb.targets[r] != PAD_TARGET).all()
        assert list(hb.targets[r, :-1]) == list(hb.idx[r, 1:])
    assert mb.tokens == hb.tokens
    intro, q, a = passkey_tokens(tok, 12345)
    seq = passkey_sequence(np.arange(100) % 200, intro, q, a, 0.5, 128)
    assert len(seq) == 128 and passkey_min_len(tok) == len(intro) + len(q) + len(a)
    with pytest.raises(ValueError):
        passkey_sequence(np.arange(10), intro, q, a, 0.5, 20)


# ---------------------------------------------------------------- uniform pieces
def _uniform_split(n_docs=30, seed=3):
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 200, size=n_docs)
    toks = rng.integers(0, 250, size=int(lens.sum())).astype(np.uint16)
    docs = np.stack([np.zeros(n_docs, np.int64), np.cumsum(lens) - lens, lens], 1)
    return Split("train", [toks], docs, eot=256)


def _stream_positions(p: UniformPieces, mb) -> list[int]:
    """The global stream position of every input position of a micro-batch, row by row."""
    out = []
    for d, s, n in zip(mb.doc.tolist(), mb.start.tolist(), mb.length.tolist()):
        out += range(int(p.doc_start[d]) + s, int(p.doc_start[d]) + s + n)
    return out


def test_uniform_rows_are_whole_windows_of_the_circular_stream():
    split = _uniform_split()
    p = UniformPieces(split.positions, 48, 4, 2, seed=1)
    for _ in range(40):
        for mb in p.next_step():
            assert mb.tokens == 4 * 48 and mb.pad == 0  # every position predicts a target
            for r in range(4):
                sel = mb.row == r
                cols, lens = mb.col[sel], mb.length[sel]
                assert cols[0] == 0 and np.all(cols[1:] == cols[:-1] + lens[:-1]) and lens.sum() == 48
                pos = _stream_positions(p, MicroBatch(0, 1, 48, mb.row[sel], cols, mb.doc[sel], mb.start[sel], lens,
                                                      mb.passkey, mb.keys, mb.depths))
                assert pos == [(pos[0] + k) % p.P for k in range(48)]  # one window, wrapping at the stream's end


def test_uniform_epoch_covers_the_stream_once():
    """Within an epoch no position repeats and all but fewer than seq_len are seen; the uncovered stretch moves
    between epochs (a new phase each)."""
    split = _uniform_split()
    T, B, A = 40, 3, 2
    p = UniformPieces(split.positions, T, B, A, seed=5)
    K = p.P // T
    rows_per_step = B * A
    steps = -(-3 * K // rows_per_step)
    seen = [Counter() for _ in range(4)]
    for s in range(steps):
        for a, mb in enumerate(p.next_step()):
            for r in range(B):
                row = (s * A + a) * B + r
                sel = mb.row == r
                sub = MicroBatch(0, 1, T, mb.row[sel], mb.col[sel], mb.doc[sel], mb.start[sel], mb.length[sel],
                                 mb.passkey, mb.keys, mb.depths)
                seen[row // K].update(_stream_positions(p, sub))
    for e in range(3):
        assert max(seen[e].values()) == 1
        assert p.P - T < len(seen[e]) <= p.P
    missing = [set(range(p.P)) - set(seen[e]) for e in range(3)]
    assert len({frozenset(m) for m in missing}) == 3


def test_uniform_deterministic_per_seed_and_resumes_exactly():
    split = _uniform_split()
    kw = dict(seq_len=32, batch_size=4, grad_accum=2, seed=7, retrieval_mix=0.25)
    a, b = UniformPieces(split.positions, **kw), UniformPieces(split.positions, **kw)
    first = _plans(a, 15)
    assert first == _plans(b, 15)
    state = a.state_dict()
    rest = _plans(a, 25)
    assert (15 * 8) // a.K < (40 * 8) // a.K  # the resumed stretch crosses an epoch
    c = UniformPieces(split.positions, **kw)
    c.load_state_dict(state)
    assert _plans(c, 25) == rest
    assert _plans(UniformPieces(split.positions, **{**kw, "seed": 8}), 15) != first
    with pytest.raises(ValueError):
        c.load_state_dict(Packer(split.positions, 32, 4, 2).state_dict())


def test_uniform_rows_keep_documents_apart():
    """Documents meeting inside a window are separate segments: targets never cross a document and the document
    mask's ids change exactly where a document does."""
    split = _uniform_split(n_docs=60, seed=9)
    p = UniformPieces(split.positions, 64, 4, 1, seed=2)
    crossings = 0
    for _ in range(30):
        mb = p.next_step()[0]
        hb = materialize(split, mb, eot=256)
        for r, c, d, s, n in zip(mb.row, mb.col, mb.doc, mb.start, mb.length):
            stream = np.concatenate([[256], split.doc_tokens(d), [256]])
            assert list(hb.idx[r, c:c + n]) == list(stream[s:s + n])
            assert list(hb.targets[r, c:c + n]) == list(stream[s + 1:s + n + 1])
            assert list(hb.positions[r, c:c + n]) == list(range(n))
        for r in range(4):
            starts = set(mb.col[mb.row == r].tolist())
            changes = {0} | {t for t in range(1, 64) if hb.doc_ids[r, t] != hb.doc_ids[r, t - 1]}
            assert changes == starts
            crossings += len(starts) - 1
        assert hb.tokens == int((hb.targets != PAD_TARGET).sum()) == 4 * 64
    assert crossings > 20  # the test saw many document boundaries inside windows


def test_stream_pieces_and_a_split_smaller_than_a_row():
    start, end = np.array([0, 5, 6]), np.array([5, 6, 20])
    doc, s, n, col = stream_pieces(start, end, 3, 9, col=2)
    assert doc.tolist() == [0, 1, 2] and s.tolist() == [3, 0, 0] and n.tolist() == [2, 1, 3]
    assert col.tolist() == [2, 4, 5]
    with pytest.raises(ConfigError, match="^data.packing: "):
        UniformPieces(np.array([5, 6]), 64, 2)
