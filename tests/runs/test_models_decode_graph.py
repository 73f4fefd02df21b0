"""The CUDA-graph decode step (runs/models/decode_graph.py), run eagerly on CPU: the same logits and the same
cache contents as the eager decode, step after step, through ring wrap-around and a cache reset; and its
attention (`attend_filled`) against a float64 masked-softmax reference."""

import math

import pytest
import torch

from costlaw.costmodel import FULL, BlockStrided, ModelConfig, SinkWindow
from costlaw.runs.models import build_model
from costlaw.runs.models.attention import attend_filled, split_parts
from costlaw.runs.models.decode_graph import GraphDecoder, eligible

V = 61


def tiny(layout, n_heads=4, n_kv_heads=2) -> ModelConfig:
    return ModelConfig(d_model=32, n_layers=len(layout), n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=8,
                       ffn_dim=48, vocab_size=V, tied_embeddings=False, rope_theta=1e4, layout=tuple(layout))


LAYOUTS = {
    "full-gqa": tiny([FULL, FULL], 4, 2),
    "full-mqa": tiny([FULL, FULL], 4, 1),
    "sink_window": tiny([SinkWindow(2, 6), SinkWindow(2, 6)]),
    "hybrid": tiny([SinkWindow(3, 7), FULL, SinkWindow(0, 5)], 4, 4),
}


def reference(q, k, v, length):
    """Plain masked softmax in float64, K/V heads repeated for GQA."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores[..., length:] = float("-inf")
    return scores.softmax(-1) @ v


@pytest.mark.parametrize("n_heads,n_kv,S,length,parts", [(4, 2, 24, 17, 1), (4, 2, 24, 17, 4), (8, 1, 30, 30, 5),
                                                          (2, 2, 16, 1, 8)])
def test_attend_filled_matches_masked_softmax(n_heads, n_kv, S, length, parts):
    g = torch.Generator().manual_seed(S + length)
    q = torch.randn(3, n_heads, 1, 16, generator=g, dtype=torch.float64)
    k, v = (torch.randn(3, n_kv, S, 16, generator=g, dtype=torch.float64) for _ in range(2))
    k[:, :, length:] = 1e3  # what lies past the filled slots must not count
    out = attend_filled(q, k, v, torch.tensor([length]), parts)
    assert out.shape == q.shape
    assert (out - reference(q, k, v, length)).abs().max().item() < 1e-12


def test_attend_filled_bf16_keeps_fp32_scores():
    """bf16 inputs: within bf16 rounding of the float64 result (scores and softmax run in fp32)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 1, 64, generator=g) * 3
    k, v = torch.randn(2, 2, 64, 64, generator=g), torch.randn(2, 2, 64, 64, generator=g)
    out = attend_filled(q.bfloat16(), k.bfloat16(), v.bfloat16(), torch.tensor([50]), 4)
    ref = reference(q.bfloat16(), k.bfloat16(), v.bfloat16(), 50)
    assert out.dtype == torch.bfloat16
    assert (out.double() - ref).abs().max().item() < 2e-2


@pytest.mark.parametrize("slots,parts", [(32768, 32), (32832, 36), (1088, 2), (64, 1), (1031, 1031), (7, 1)])
def test_split_parts(slots, parts):
    assert split_parts(slots) == parts
    assert slots % parts == 0 and slots // parts <= 1024


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_graph_step_matches_eager_decode(name):
    """Two caches fed the same tokens, one by the eager decode and one by the graph step: the same logits and
    the same slots (and K/V to rounding) after every step, past every ring's wrap-around, and again after a reset."""
    torch.manual_seed(0)
    model = build_model(LAYOUTS[name], dtype=torch.float64).eval()
    P, K, B = 9, 20, 2
    idx = torch.randint(0, V, (B, P + K), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager, graphed = model.new_cache(B, P + K), model.new_cache(B, P + K)
        dec = GraphDecoder(model, graphed)
        for _ in range(2):  # the second round reuses the reset cache
            model.prefill(idx[:, :P], eager)
            model.prefill(idx[:, :P], graphed)
            for t in range(P, P + K):
                assert eligible(graphed, idx[:, t:t + 1])
                want = model.decode(idx[:, t:t + 1], eager)
                got = dec.step(graphed, idx[:, t:t + 1])
                assert (got - want).abs().max().item() < 1e-12
                assert (graphed.seen, graphed.position) == (eager.seen, eager.position)
                for a, b in zip(eager.layers, graphed.layers):
                    assert (a.size, a._ring) == (b.size, b._ring)
                    assert torch.equal(a.seq, b.seq) and torch.equal(a.pos, b.pos)
                    # layer 0's K/V match exactly; later layers inherit attention's last-bit rounding
                    assert (a.k - b.k).abs().max().item() < 1e-12 and (a.v - b.v).abs().max().item() < 1e-12
            eager.reset()
            graphed.reset()
            assert graphed.seen == 0 and all(layer.size == 0 and layer.fast for layer in graphed.layers)
            assert all(bool((layer.seq == -1).all()) for layer in graphed.layers)


def test_not_eligible_off_the_fast_path():
    """A block_strided layer, a policy's select, or a batch mismatch send the step to the eager path."""
    torch.manual_seed(0)
    model = build_model(tiny([BlockStrided(4, 2, 3), FULL]), dtype=torch.float64)
    cache = model.new_cache(2, 16)
    assert not eligible(cache, torch.zeros(2, 1, dtype=torch.long))
    model = build_model(LAYOUTS["full-gqa"], dtype=torch.float64)
    cache = model.new_cache(2, 16)
    with torch.no_grad():
        assert eligible(cache, torch.zeros(2, 1, dtype=torch.long))
        assert not eligible(cache, torch.zeros(3, 1, dtype=torch.long))
        model.prefill(torch.zeros(2, 4, dtype=torch.long), cache)
    cache.layers[0].select(torch.arange(3).expand(2, 2, 3))
    assert not eligible(cache, torch.zeros(2, 1, dtype=torch.long))


def test_dropped_cache_is_freed_without_a_garbage_collection():
    """cache.graph keeps the decoder and the decoder keeps the layers, not the cache: no cycle to wait for."""
    import gc
    import weakref

    from costlaw.runs.models import decode_graph

    model = build_model(LAYOUTS["full-gqa"], dtype=torch.float64)
    cache = model.new_cache(1, 8)
    with torch.no_grad():
        model.prefill(torch.zeros(1, 3, dtype=torch.long), cache)
        decode_graph.decoder(model, cache).step(cache, torch.zeros(1, 1, dtype=torch.long))
    assert cache.graph is not None
    gone, layer_gone = weakref.ref(cache), weakref.ref(cache.layers[0])
    gc.disable()
    try:
        del cache
        assert gone() is None and layer_gone() is None
    finally:
        gc.enable()


def test_a_decoder_refuses_another_cache():
    model = build_model(LAYOUTS["full-gqa"], dtype=torch.float64)
    a, b = model.new_cache(1, 8), model.new_cache(1, 8)
    with pytest.raises(ValueError, match="another cache"):
        GraphDecoder(model, a).step(b, torch.zeros(1, 1, dtype=torch.long))


def test_not_eligible_with_autograd_on():
    model = build_model(LAYOUTS["full-gqa"], dtype=torch.float64)
    cache = model.new_cache(2, 16)
    tok = torch.zeros(2, 1, dtype=torch.long)
    assert not eligible(cache, tok)  # grad mode is on outside no_grad
    with torch.no_grad():
        assert eligible(cache, tok)


def test_a_failed_step_leaves_the_counters():
    """A full layer (CacheFullError) or any failure in the step: sizes and ring turns are as before it."""
    from costlaw.runs.models import CacheFullError

    # the ring turns, then the full layer fails
    model = build_model(tiny([SinkWindow(0, 5), FULL]), dtype=torch.float64)
    cache = model.new_cache(1, 6)
    dec = GraphDecoder(model, cache)
    with torch.no_grad():
        model.prefill(torch.zeros(1, 6, dtype=torch.long), cache)
        before = [(layer.size, layer._ring) for layer in cache.layers]
        with pytest.raises(CacheFullError):  # the full layer holds its 6 tokens
            dec.step(cache, torch.zeros(1, 1, dtype=torch.long))
    assert [(layer.size, layer._ring) for layer in cache.layers] == before
    assert cache.seen == 6


def test_compiled_step_matches_eager_decode(monkeypatch):
    """GraphDecoder.compile_body: the torch.compile'd step gives the eager decode's logits (fp32, CPU)."""
    monkeypatch.setattr(GraphDecoder, "compile_body", True)
    torch.manual_seed(0)
    model = build_model(LAYOUTS["hybrid"], dtype=torch.float32).eval()
    idx = torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager, graphed = model.new_cache(2, 16), model.new_cache(2, 16)
        model.prefill(idx[:, :8], eager)
        model.prefill(idx[:, :8], graphed)
        dec = GraphDecoder(model, graphed)
        for t in range(8, 16):  # past the rings' wrap-around
            want = model.decode(idx[:, t:t + 1], eager)
            assert (dec.step(graphed, idx[:, t:t + 1]) - want).abs().max().item() < 1e-5
