"""The KV cache allocates what costmodel prices, and its policy interface (select, reposition, hooks,
attention weights, overflow while a hook runs) does what a policy needs."""

import pytest
import torch

from costlaw.costmodel import (
    FULL,
    KVPolicy,
    ModelConfig,
    SinkWindow,
    hybrid_layout,
    kv_cache_bytes,
    kv_tokens_per_layer,
)
from costlaw.runs.models import CacheFullError, build_model
from costlaw.runs.models.attention import attend_slots

DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16"}
BASE = ModelConfig(d_model=48, n_layers=6, n_heads=6, n_kv_heads=2, head_dim=8, ffn_dim=64, vocab_size=50)
CONFIGS = {
    "gqa": BASE,
    "hybrid-sink": BASE.with_layout(hybrid_layout(6, "sink_window(4,32)", full_layers=2)),
    "hybrid-sink0": BASE.with_layout(hybrid_layout(6, "sink_window(0,100)", full_layer_ids=[5])),
    "hybrid-strided": BASE.with_layout(hybrid_layout(6, "block_strided(16,2,4)", full_layers=2)),
    "policy-keep": BASE.replace(kv_policy=KVPolicy("snapkv", keep=0.1)),
    "policy-budget-hybrid": BASE.replace(kv_policy=KVPolicy("h2o", budget=40),
                                         layout=hybrid_layout(6, "sink_window(4,32)", full_layers=2)),
}


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES.values()))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_cache_bytes_equal_costmodel(name, dtype):
    cfg = CONFIGS[name]
    model = build_model(cfg, device="meta")
    for context in (1, 30, 37, 500, 4096):
        for batch in (1, 3):
            cache = model.new_cache(batch, context, device="cpu", dtype=dtype)
            assert cache.nbytes() == kv_cache_bytes(cfg, context, DTYPES[dtype], batch)
            assert [layer.capacity for layer in cache.layers] == kv_tokens_per_layer(cfg, context)


def one_layer(spec=FULL, policy=None, n_kv=2):
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=4, n_kv_heads=n_kv, head_dim=8, ffn_dim=48, vocab_size=53,
                      rope_theta=1e4, layout=(spec,), kv_policy=policy)
    torch.manual_seed(0)
    return build_model(cfg, dtype=torch.float64)


def test_select_keeps_chosen_slots_per_head_and_compacts():
    model = one_layer()
    cache = model.new_cache(2, 16)
    with torch.no_grad():
        model.prefill(torch.randint(0, 53, (2, 10)), cache)
    layer = cache[0]
    k, seq = layer.k.clone(), layer.seq.clone()
    idx = torch.tensor([[[9, 0, 4], [1, 2, 3]], [[5, 6, 7], [8, 0, 2]]])
    layer.select(idx)
    assert layer.size == 3 and layer.slots == layer.capacity == 16
    assert torch.equal(layer.k[:, :, :3], k.gather(2, idx[..., None].expand(-1, -1, -1, 8)))
    assert torch.equal(layer.seq[:, :, :3], seq.gather(2, idx)) and (layer.seq[:, :, 3:] == -1).all()
    with pytest.raises(CacheFullError):
        layer.select(torch.zeros(2, 2, 17, dtype=torch.long))


def test_streaming_reposition_equals_a_forward_on_the_kept_tokens():
    """StreamingLLM with positions in the cache, on one layer (so kept K/V do not depend on evicted tokens):
    keep 2 sinks + the last 4, re-assign positions 0..5, then the next token at position 6 must give the
    logits of a plain forward over the 6 kept tokens and itself."""
    model, idx = one_layer(), torch.randint(0, 53, (2, 15), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cache = model.new_cache(2, 16)
        model.prefill(idx[:, :14], cache)
        layer = cache[0]
        kept = torch.tensor([0, 1, 10, 11, 12, 13]).expand(2, 2, 6)  # slots hold tokens in order here
        layer.select(kept)
        layer.reposition(torch.arange(16).expand(2, 2, 16))
        cache.position = 6
        got = model.decode(idx[:, 14], cache)
        want = model(torch.cat([idx[:, [0, 1, 10, 11, 12, 13]], idx[:, 14:]], 1))[:, -1:]
    assert (got - want).abs().max().item() < 1e-10
    assert layer.pos[0, 0, :7].tolist() == list(range(7))


def test_policy_capped_cache_overflows_only_into_a_hook():
    """A full layer capped at 5 slots by a policy: without a hook the prompt does not fit; with a hook that
    keeps the 5 most recent tokens, every new token sees 6 keys (the 5 kept and itself) before eviction, i.e.
    on one layer the logits of a sliding-window(6) model."""
    policy = KVPolicy("streaming", budget=5)
    model, idx = one_layer(policy=policy), torch.randint(0, 53, (1, 20), generator=torch.Generator().manual_seed(4))
    calls = []

    def keep_recent(layer_idx, q, k, v, layer):
        calls.append((layer_idx, q.shape, k.shape, v.shape, layer.slots))
        if layer.size > layer.capacity:
            layer.select(layer.seq.topk(layer.capacity, dim=-1).indices)  # the most recent tokens

    with torch.no_grad():
        with pytest.raises(CacheFullError, match="hook"):
            model.prefill(idx[:, :8], model.new_cache(1, 20))
        cache = model.new_cache(1, 20)
        assert cache.nbytes() == kv_cache_bytes(model.cfg, 20, "fp32") * 2  # fp64 cache
        model.prefill(idx[:, :8], cache, hook=keep_recent)
        got = torch.cat([model.decode(idx[:, t], cache, hook=keep_recent) for t in range(8, 20)], 1)
        window = one_layer(SinkWindow(0, 6))
        window.load_state_dict(model.state_dict())
        want = window(idx)[:, 8:]
    assert (got - want).abs().max().item() < 1e-10
    assert calls[0] == (0, (1, 4, 8, 8), (1, 2, 8, 8), (1, 2, 8, 8), 8)  # the prompt overflowed into the hook
    assert calls[1][4] == 6 and cache[0].slots == 5 and cache.nbytes() == kv_cache_bytes(model.cfg, 20, "fp32") * 2

    def lazy(layer_idx, q, k, v, layer):
        pass

    with torch.no_grad(), pytest.raises(CacheFullError, match="after the policy hook"):
        model.decode(idx[:, 0], cache, hook=lazy)


def test_attention_weights_are_the_models():
    model = one_layer(n_kv=1)
    seen = {}

    def record(layer_idx, q, k, v, layer):
        q_seq = torch.tensor([9])  # the decoded token follows a 9-token prompt
        probs = layer.attention(q, q_seq)
        seen["probs"], seen["y"] = probs, attend_slots(q, layer.k, layer.v, layer.visible(q_seq))
        seen["v"] = layer.v

    with torch.no_grad():
        cache = model.new_cache(1, 12)
        model.prefill(torch.randint(0, 53, (1, 9)), cache)
        model.decode(torch.tensor([3]), cache, hook=record)
    probs = seen["probs"]
    assert probs.shape == (1, 4, 1, 12)
    assert torch.allclose(probs.sum(-1), torch.ones(1, 4, 1, dtype=torch.float64))
    hidden = ~cache[0].visible(torch.tensor([9])).expand_as(probs)  # 2 empty slots; one KV head serves 4 query heads
    assert hidden.any() and (probs[hidden] == 0).all()
    assert (probs @ seen["v"] - seen["y"]).abs().max().item() < 1e-12
