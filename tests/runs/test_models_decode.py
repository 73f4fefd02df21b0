"""Prefill + one-token decode (and chunked prefill) give the logits of one full forward, for every layout:
the layout-shaped cache (ring buffer, strided blocks) holds exactly what the pattern lets the next token see."""

import pytest
import torch

from costlaw.costmodel import FULL, BlockStrided, ModelConfig, SinkWindow
from costlaw.runs.models import CacheFullError, build_model

V = 61


def tiny(layout, n_heads=4, n_kv_heads=2) -> ModelConfig:
    return ModelConfig(d_model=32, n_layers=len(layout), n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=8,
                       ffn_dim=48, vocab_size=V, tied_embeddings=False, rope_theta=1e4, layout=tuple(layout))


LAYOUTS = {
    "full-mha": (tiny([FULL, FULL], 4, 4)),
    "full-gqa4": (tiny([FULL, FULL], 4, 1)),
    "sink_window": tiny([SinkWindow(2, 6), SinkWindow(2, 6), SinkWindow(2, 6)]),
    "window-no-sink": tiny([SinkWindow(0, 5), SinkWindow(0, 5)], 4, 1),
    "block_strided": tiny([BlockStrided(4, 2, 3), BlockStrided(4, 2, 3)]),
    "hybrid-all-patterns": tiny([SinkWindow(3, 7), FULL, BlockStrided(3, 1, 2)], 4, 4),
}


def model_for(name):
    torch.manual_seed(0)
    return build_model(LAYOUTS[name], dtype=torch.float64)


def tokens(B, T, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_prefill_then_decode_matches_full_forward(name):
    model, (P, K) = model_for(name), (11, 23)  # decoding far past every window: the ring buffers wrap
    idx = tokens(2, P + K)
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2, P + K)
        steps, peak = [model.prefill(idx[:, :P], cache)], [0] * len(cache)
        for t in range(P, P + K):
            steps.append(model.decode(idx[:, t], cache))
            peak = [max(m, layer.size) for m, layer in zip(peak, cache.layers)]
    err = (torch.cat(steps, 1) - full).abs().max().item()
    assert err < 1e-10, err
    assert cache.seen == cache.position == P + K
    for layer, spec in zip(cache.layers, model.cfg.layout):
        assert layer.size == spec.keys(P + K)  # exactly the keys the last token saw
    # costmodel's capacities are tight: every layer fills all its slots at some step, and never needs more
    assert peak == [layer.capacity for layer in cache.layers]


@pytest.mark.parametrize("name", ["sink_window", "block_strided", "hybrid-all-patterns"])
def test_chunked_prefill_matches_full_forward(name):
    """Prompt in chunks after cached tokens: each chunk attends to the slots and to itself through the pattern."""
    model, idx = model_for(name), tokens(3, 40, seed=2)
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(3, 40)
        parts = [model.prefill(idx[:, a:b], cache) for a, b in [(0, 9), (9, 10), (10, 24), (24, 37)]]
        parts += [model.decode(idx[:, t:t + 1], cache) for t in range(37, 40)]
    assert (torch.cat(parts, 1) - full).abs().max().item() < 1e-10


def test_prefill_last_only_and_shapes():
    model, idx = model_for("hybrid-all-patterns"), tokens(2, 12)
    with torch.no_grad():
        last = model.prefill(idx, model.new_cache(2, 13), last_only=True)
        assert last.shape == (2, 1, V)
        assert (last - model(idx)[:, -1:]).abs().max().item() < 1e-10


def test_cache_is_sized_for_its_context():
    """A full layer cannot go past the context it was made for; a ring buffer can go on forever."""
    model, idx = model_for("full-mha"), tokens(1, 9)
    with torch.no_grad():
        cache = model.new_cache(1, 8)
        model.prefill(idx[:, :8], cache)
        with pytest.raises(CacheFullError, match="longer context"):
            model.decode(idx[:, 8], cache)
        with pytest.raises(CacheFullError):
            model.prefill(idx, model.new_cache(1, 5))
        ring = model_for("sink_window")
        cache = ring.new_cache(1, 8)  # sink 2 + window 6 = 8 slots
        ring.prefill(idx[:, :8], cache)
        for _ in range(20):
            ring.decode(idx[:, 0], cache)
        assert cache.nbytes() == ring.new_cache(1, 8).nbytes()


def test_batch_mismatch_is_an_error():
    model = model_for("full-mha")
    with pytest.raises(ValueError, match="batch"):
        model.prefill(tokens(2, 4), model.new_cache(1, 8))


@pytest.mark.parametrize("P", [3, 11])  # a prompt shorter and longer than the sink+window rings
@pytest.mark.parametrize("name", ["full-gqa4", "sink_window", "window-no-sink", "hybrid-all-patterns"])
def test_decode_fast_path_stores_what_the_general_path_stores(name, P):
    """Full and sink+window layers decode with host-computed slots and no mask; the general path (visibility
    pass, first free slot) must store the same tokens in the same slots and give the same logits."""
    model, idx = model_for(name), tokens(2, P + 20, seed=4)
    logits, caches = [], []
    with torch.no_grad():
        for fast in (True, False):
            cache = model.new_cache(2, P + 20)
            model.prefill(idx[:, :P], cache)
            if not fast:
                for layer in cache.layers:
                    layer._ring = None
            logits.append(torch.cat([model.decode(idx[:, t], cache) for t in range(P, P + 20)], 1))
            caches.append(cache)
    assert (logits[0] - logits[1]).abs().max().item() < 1e-12
    on_fast_path = [layer._ring is not None for layer in caches[0].layers]
    assert on_fast_path == [not isinstance(spec, BlockStrided) for spec in model.cfg.layout]
    for fast, general in zip(caches[0].layers, caches[1].layers):
        assert torch.equal(fast.seq, general.seq) and torch.equal(fast.pos, general.pos)
        assert torch.allclose(fast.k, general.k, atol=1e-12) and torch.allclose(fast.v, general.v, atol=1e-12)
        assert fast.size == general.size
