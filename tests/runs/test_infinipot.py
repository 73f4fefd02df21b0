"""InfiniPot on tiny models: the catalyst it reads is the instruction `CATALYST`; `compress` sets how many tokens a
compaction keeps and `novelty` how they are chosen (NuC first, then CaP); streaming 17x the pot keeps it within its
budget at every step with CR-RoPE positions; and the streaming path is the full model's exactly when nothing is
evicted (and, for one layer, after 32 compactions too)."""

import math

import pytest
import torch

from costlaw.costmodel import KVPolicy
from costlaw.runs.data.tokenizers import ByteTokenizer
from costlaw.runs.kv import policy_model
from costlaw.runs.kv.infinipot import CATALYST, catalyst_ids
from tests.runs.test_kv_policies import BASE, V, _attention, backbone, pm_for, tokens

pytestmark = pytest.mark.usefixtures("one_thread")

M = 64  # the pot
N = 1088  # 17 pots streamed
CHUNKS = [100, 37, 1, 250, 64, 3, 129, 200]  # prefill calls of uneven sizes (784 tokens), then decode steps


def compactions_for(n: int, M: int, C: int) -> int:
    """Compactions while streaming n tokens: the first fills the pot, each compaction frees M − C slots."""
    return max(0, math.ceil((n - M) / (M - C)))


def stream(pm, idx, context, check=None):
    """Read idx [B, n] through the policy as a stream: CHUNKS by prefill, the rest one decode step at a time.
    Returns the logits of every token [B, n, V]; `check(cache)` runs after every call."""
    cache = pm.new_cache(idx.shape[0], context)
    out, i = [], 0
    with torch.no_grad():
        for n in CHUNKS:
            out.append(pm.prefill(idx[:, i:i + n], cache))
            i += n
            if check:
                check(cache)
        for t in range(i, idx.shape[1]):
            out.append(pm.decode(idx[:, t], cache))
            if check:
                check(cache)
    return torch.cat(out, 1), cache


def held_seqs(layer, b, h):
    """The sequence indices a head holds, in sequence order."""
    return sorted(layer.seq[b, h][layer.valid[b, h]].tolist())


def test_catalyst_is_the_instruction_in_bytes_and_is_what_compaction_reads():
    ids = list(CATALYST.encode("utf-8"))
    assert catalyst_ids(ByteTokenizer(), 257) == catalyst_ids(None, 257) == ids  # the harness passes no tokenizer
    assert ByteTokenizer().decode(ids) == CATALYST
    cfg = BASE.replace(vocab_size=257)
    model = backbone(cfg, dtype=torch.float32)
    pm = policy_model(model, cfg.replace(kv_policy=KVPolicy("infinipot", budget=16)), None, ByteTokenizer())
    reads, prefill = [], model.prefill

    def spy(idx, cache, **kw):
        if pm.policy.compacting is not None:
            reads.append((idx.tolist(), cache.seen, cache.position))
        return prefill(idx, cache, **kw)

    model.prefill = spy
    cache = pm.new_cache(2, 40)
    with torch.no_grad():
        pm.prefill(torch.randint(0, 257, (2, 40), generator=torch.Generator().manual_seed(0)), cache)
    # 40 tokens through a pot of 16 compacted to 8: at 16, 24, 32 tokens; the catalyst follows the full pot
    assert reads == [([ids, ids], seen, 16) for seen in (16, 24, 32)]
    assert cache.seen == 40  # the catalyst leaves no trace on the sequence


@pytest.mark.parametrize("compress", [0.25, 0.5, 0.75])
def test_compress_sets_what_a_compaction_keeps(compress):
    model = backbone(dtype=torch.float32)
    pm, _ = pm_for(model, "infinipot", budget=M, compress=compress)
    C = round(compress * M)
    idx = tokens(2, 320, seed=21)
    cache = pm.new_cache(2, 320)
    with torch.no_grad():
        pm.prefill(idx[:, :M], cache)
        assert pm.policy.compactions == 0 and all(layer.valid.all() for layer in cache.layers)
        pm.decode(idx[:, M], cache)  # the pot is full: compact to C, then read the token
    assert pm.policy.compactions == 1 and cache.position == C + 1
    for layer in cache.layers:
        assert (layer.valid.sum(-1) == C + 1).all()
        assert (layer.seq == M).any(-1).all()  # the token read after the compaction
    pm, _ = pm_for(model, "infinipot", budget=M, compress=compress)
    cache = pm.new_cache(2, 320)
    with torch.no_grad():
        pm.prefill(idx, cache)
    # 256 tokens past the first pot: every compaction frees M − C slots (48, 32, 16: 6, 8, 16 compactions)
    assert pm.policy.compactions == compactions_for(320, M, C) == {0.25: 6, 0.5: 8, 0.75: 16}[compress]


@pytest.mark.parametrize("budget,compress", [(8, 1.0), (1, 0.5)])
def test_a_pot_that_would_keep_everything_still_streams(budget, compress):
    """compress = 1 (a valid option) or a one-token pot: a compaction must still free a slot (it used to loop)."""
    model = backbone(dtype=torch.float64)
    pm, _ = pm_for(model, "infinipot", budget=budget, compress=compress)
    compact = pm.policy.compact

    def bounded(model, cache):  # a compaction that frees nothing would repeat forever: fail instead of hanging
        assert pm.policy.compactions < 40, "compactions do not make room in the pot"
        compact(model, cache)

    pm.policy.compact = bounded
    idx = tokens(1, 40, seed=22)
    cache = pm.new_cache(1, 40)
    with torch.no_grad():
        logits = pm.prefill(idx, cache)
        assert pm.policy.compactions == compactions_for(40, budget, budget - 1) == 40 - budget
        assert all(int(layer.valid.sum(-1).max()) == budget for layer in cache.layers)
        if budget == 1:  # the pot is emptied before each token: each token sees only itself
            want = torch.cat([model(idx[:, t:t + 1]) for t in range(40)], 1)
            assert (logits - want).abs().max().item() < 1e-10


def test_novelty_mixes_nuc_and_cap_as_documented():
    """One layer, a full pot of 16 compacted to 8: round(novelty·8) tokens by NuC (the tokens' cross-entropy when
    read), the rest by CaP (the catalyst's attention to the pot, per KV head), computed here by hand."""
    model = backbone(BASE.replace(n_layers=1))
    n_kv, group, pot, C = BASE.n_kv_heads, BASE.n_heads // BASE.n_kv_heads, 16, 8
    idx = tokens(1, pot + 1, seed=23)
    cat = torch.tensor([catalyst_ids(None, V)])
    with torch.no_grad():
        logp = torch.log_softmax(model(idx[:, :pot]), -1)[0]
        nuc = torch.cat([torch.zeros(1), -logp[:-1].gather(-1, idx[0, 1:pot, None]).squeeze(-1)]).double()
        a = _attention(model, torch.cat([idx[:, :pot], cat], 1))[0, :, pot:, :pot].sum(1)  # [n_h, pot]
        cap = a.view(n_kv, group, pot).sum(1)
    kept = {}
    for novelty in (0.0, 0.25, 0.5, 1.0):
        pm, _ = pm_for(model, "infinipot", budget=pot, compress=0.5, novelty=novelty)
        cache = pm.new_cache(1, pot + 1)
        with torch.no_grad():
            pm.prefill(idx[:, :pot], cache)
            pm.decode(idx[:, pot], cache)
        layer = cache[0]
        n_nuc = round(novelty * C)
        first = set(nuc.topk(n_nuc).indices.tolist())
        for h in range(n_kv):
            rest = cap[h].masked_fill(torch.tensor([t in first for t in range(pot)]), float("-inf"))
            want = first | set(rest.topk(C - n_nuc).indices.tolist())
            got = held_seqs(layer, 0, h)
            assert got == sorted(want) + [pot], (novelty, h)
            kept[novelty, h] = got
            held = layer.valid[0, h] & (layer.seq[0, h] < pot)  # the CaP scores kept with the tokens
            assert torch.allclose(pm.policy.scores[0][0, h][held], cap[h][layer.seq[0, h][held].long()], atol=1e-5)
    assert all(kept[1.0, h] == kept[1.0, 0] for h in range(n_kv))  # NuC is one score per token, for every head
    assert any(kept[0.0, h] != kept[1.0, h] for h in range(n_kv))
    assert kept[0.0, 0] != kept[0.0, 1]  # CaP is per head


def test_streaming_17_pots_stays_within_the_budget_at_every_step():
    model = backbone(dtype=torch.float32)
    pm, cfg = pm_for(model, "infinipot", budget=M, compress=0.5, novelty=0.5)
    policy, m = pm.policy, len(catalyst_ids(None, V))
    largest = {"pot": 0, "slots": 0}
    hook = policy.hook

    def watched(layer, q, k, v, lc):  # inside every layer of every call, before the policy selects
        pot = lc.valid if policy.compacting is None else lc.valid & (lc.seq < policy.compacting)
        largest["pot"] = max(largest["pot"], int(pot.sum(-1).max()))
        largest["slots"] = max(largest["slots"], lc.slots)
        hook(layer, q, k, v, lc)

    policy.hook = watched
    steps = []

    def check(cache):
        steps.append(cache.seen)
        n = [int(layer.valid.sum(-1).max()) for layer in cache.layers]
        assert all(layer.capacity == M and layer.slots == M for layer in cache.layers)
        assert max(n) <= M and cache.position == max(n)
        for layer in cache.layers:  # CR-RoPE: in sequence order the held tokens sit at 0..n-1, every row and head
            for b in range(2):
                for h in range(cfg.n_kv_heads):
                    valid = layer.valid[b, h]
                    order = layer.seq[b, h].masked_fill(~valid, 1 << 30).argsort()[:int(valid.sum())]
                    assert layer.pos[b, h][order].tolist() == list(range(len(order)))
                    assert layer.seq[b, h][order][-1] == cache.seen - 1  # the newest token is always held

    idx = tokens(2, N + 24, seed=24)
    logits, cache = stream(pm, idx[:, :N], N, check)
    assert len(steps) == len(CHUNKS) + N - sum(CHUNKS) and steps[-1] == N
    assert torch.isfinite(logits).all()
    assert policy.compactions == compactions_for(N, M, M // 2) == 32
    assert largest == {"pot": M, "slots": M + m}  # a full pot, plus the catalyst while it compacts
    slot = cache.nbytes() // (cfg.n_layers * M)
    assert policy.peak_kv_bytes == cache.nbytes() + m * slot  # the catalyst in one layer at a time, never more
    with torch.no_grad():  # the harness's continuation: one call that overflows the pot, cut back to it
        pm.extend(idx[:, N:], cache)
    check(cache)
    assert largest["pot"] == M + 24 and cache.seen == N + 24


def test_streaming_without_eviction_is_the_full_model_exactly():
    """budget >= context: the pot never compacts, and streaming 1,088 tokens in chunks and single steps gives the
    full forward's logits at every position (positions and RoPE as in training), and every token's NuC is its
    cross-entropy under the full model (a call's first token scored by the previous call's last logits)."""
    model = backbone()
    pm, _ = pm_for(model, "infinipot", budget=N, compress=0.5, novelty=0.5)
    idx = tokens(2, N, seed=25)
    logits, cache = stream(pm, idx, N)
    assert pm.policy.compactions == 0 and cache.position == cache.seen == N
    assert all(torch.equal(layer.pos, layer.seq) for layer in cache.layers)
    with torch.no_grad():
        full = model(idx)
    assert (logits - full).abs().max().item() < 1e-10
    logp = torch.log_softmax(full, -1)
    want = torch.cat([torch.zeros(2, 1), -logp[:, :-1].gather(-1, idx[:, 1:, None]).squeeze(-1)], 1)
    for layer, nuc in zip(cache.layers, pm.policy.fields["novelty"]):
        by_seq = nuc.gather(-1, layer.seq.long().argsort(-1))  # [B, n_kv, N] in sequence order
        assert torch.allclose(by_seq, want[:, None].expand_as(by_seq), atol=1e-5)


def test_positions_after_32_compactions_are_a_fresh_prefill_of_the_kept_tokens():
    """One layer holds each token's own K/V, so after any number of compactions (keys re-rotated each time) the
    cache must equal a fresh prefill of the kept tokens at positions 0..n-1. novelty = 1 keeps one set for every
    head (NuC is per token), so the last token's logits are the full model's on the kept tokens."""
    model = backbone(BASE.replace(n_layers=1))
    pm, _ = pm_for(model, "infinipot", budget=M, compress=0.5, novelty=1.0)
    idx = tokens(1, N, seed=26)
    logits, cache = stream(pm, idx, N)
    assert pm.policy.compactions == 32
    layer = cache[0]
    kept = held_seqs(layer, 0, 0)
    assert all(held_seqs(layer, 0, h) == kept for h in range(BASE.n_kv_heads))
    assert len(kept) == M and kept[-1] == N - 1 and kept[0] < N - M  # tokens from before the last pot survive
    with torch.no_grad():
        want = model(idx[:, kept])[:, -1]
    assert (logits[:, -1] - want).abs().max().item() < 1e-9
