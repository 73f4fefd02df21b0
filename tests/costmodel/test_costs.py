"""Every cost formula against hand computations."""

import pytest

from costlaw.costmodel import (
    KVPolicy,
    ModelConfig,
    c_infer,
    c_train,
    costs,
    decode_flops,
    hybrid_layout,
    kv_cache_bytes,
    m_infer,
    params_non_embedding,
    params_total,
    prefill_flops,
    preset,
)
from costlaw.costmodel.attention import BlockStrided, SinkWindow

TINY = ModelConfig(d_model=8, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=4, ffn_dim=12, vocab_size=10)


def test_params_by_hand():
    # per layer: q 8*16 + k 8*8 + v 8*8 + o 16*8 = 384; ffn 3*8*12 = 288; norms 16 -> 688; 2 layers + final norm 8
    assert params_non_embedding(TINY) == 2 * 688 + 8
    assert params_total(TINY) == 2 * 688 + 8 + 80
    assert params_total(TINY.replace(tied_embeddings=False)) == 2 * 688 + 8 + 160


def test_c_infer_and_m_infer_by_hand():
    T = 100
    N = params_total(TINY)
    assert c_infer(TINY, T) == 2 * N + 4 * T * 2 * 4 * 4
    assert m_infer(TINY, T) == N + 2 * T * 2 * 4 * 2
    untied = TINY.replace(tied_embeddings=False)
    assert c_infer(untied, T) == 2 * (params_total(untied) - 80) + 4 * T * 2 * 4 * 4  # the lookup costs nothing


def test_paper_headline_numbers():
    base = costs(preset("llama-3.2-1b"), 131072)
    small = costs(preset("llama-3.2-1b", n_heads=8, n_kv_heads=1), 131072)
    assert base["params_total"] == 1_235_814_400
    assert base["c_infer_flops_per_token"] == 2 * 1_235_814_400 + 4 * 131072 * 16 * 64 * 32
    assert 1 - small["c_infer_flops_per_token"] / base["c_infer_flops_per_token"] == pytest.approx(0.669, abs=5e-4)
    assert 1 - small["m_infer_values"] / base["m_infer_values"] == pytest.approx(0.594, abs=5e-4)


def test_llama31_8b_kv_is_16_gib():
    assert kv_cache_bytes(preset("llama-3.1-8b"), 131072, "bf16") == 16 * 2**30
    assert kv_cache_bytes(preset("llama-3.1-8b"), 131072, "fp8") == 8 * 2**30
    assert kv_cache_bytes(preset("llama-3.1-8b"), 131072, "fp32", batch=2) == 64 * 2**30


def test_longgen_hybrid_kv_saving():
    dense = preset("llama-2-7b")
    hybrid = dense.with_layout(hybrid_layout(32, "sink_window(4,4092)", full_layers=11))
    saving = 1 - kv_cache_bytes(hybrid, 131072) / kv_cache_bytes(dense, 131072)
    assert saving == pytest.approx(21 / 32 * (1 - 4096 / 131072), abs=1e-12)
    assert round(100 * saving, 2) == 63.57


def test_keep_fraction_is_a_tenth():
    dense = preset("llama-3.1-8b")
    cut = dense.replace(kv_policy=KVPolicy("snapkv", keep=0.1))
    assert kv_cache_bytes(cut, 131072) * 131072 == kv_cache_bytes(dense, 131072) * 13107
    assert kv_cache_bytes(dense.replace(kv_policy=KVPolicy("streaming", budget=4096)), 131072) == \
        kv_cache_bytes(dense, 4096)


def test_sink_window_and_block_strided_spans():
    sw = SinkWindow(4, 60)
    assert sw.keys(10) == 10 and sw.keys(1000) == 64
    assert sw.total_keys(3) == 6 and sw.total_keys(100) == 64 * 65 // 2 + 36 * 64
    bs = BlockStrided(block=4, local_blocks=2, stride=3)
    # query at position 21 is in block 5; local blocks 4,5 (4 + 2 tokens); strided blocks j<4 with (j+1)%3==0: j=2
    assert bs.keys(22) == 4 + 2 + 4
    brute = sum(1 for k in range(22) if bs.visible(21, k))
    assert brute == bs.keys(22)


def test_train_flops_match_reference_formula():
    # gpu_reference.py counts 6N + 6·L·T·n_h·d_h; costlaw counts causal keys exactly: (T+1)/2 per position
    cfg = preset("gqa-85m")
    T = 1024
    N = params_total(cfg)
    assert c_train(cfg, T) == pytest.approx(6 * N + 6 * cfg.n_layers * (T + 1) * cfg.n_heads * cfg.head_dim)


def test_prefill_and_decode_totals_by_summation():
    cfg = TINY.replace(layout=hybrid_layout(2, "sink_window(1,3)", full_layers=1))
    T, G = 7, 5
    assert prefill_flops(cfg, T) == sum(c_infer(cfg, t) for t in range(1, T + 1))
    assert decode_flops(cfg, T, G) == sum(c_infer(cfg, t) for t in range(T + 1, T + G + 1))
    cut = cfg.replace(kv_policy=KVPolicy("h2o", budget=4))
    assert decode_flops(cut, T, G) == sum(c_infer(cut, t) for t in range(T + 1, T + G + 1))


def test_policy_params_are_priced():
    cfg = TINY.replace(kv_policy=KVPolicy("locret", budget=8, options=(("hidden", 5),)))
    extra = 2 * ((16 + 2 * 8) * 5 + 5 * 2)
    assert costs(cfg, 10)["params_policy"] == extra
    assert c_infer(cfg, 10) == c_infer(TINY, 8) + 2 * extra  # 8 kept tokens, plus the heads' FLOPs
