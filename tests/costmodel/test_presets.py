"""Every named preset: valid, priced, and where a published count exists, exact."""

import pytest

from costlaw.costmodel import PRESETS, costs, params_non_embedding, params_total, preset

PUBLISHED_TOTALS = {  # parameter counts of the released checkpoints
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.1-8b": 8_030_261_248,
    "llama-2-7b": 6_738_415_616,
    "mistral-7b": 7_241_732_096,
    "mistral-7b-v0.3": 7_248_023_552,
}
# the GQA paper's size labels equal the non-embedding count up to 680M (research notes, Table 9)
LADDER_LABELS = {"gqa-3m": 3.115e6, "gqa-19m": 19.0e6, "gqa-85m": 85.0e6, "gqa-150m": 150.6e6, "gqa-200m": 200.8e6,
                 "gqa-470m": 472.9e6, "gqa-680m": 679.6e6, "gqa-1.2b": 1.019e9}


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset(name):
    cfg, source = PRESETS[name]
    assert source
    row = costs(cfg, 8192)
    assert row["params_total"] == params_total(cfg) > row["params_non_embedding"] > 0
    assert row["c_infer_flops_per_token"] > 2 * row["params_non_embedding"]
    assert row["kv_cache_bytes"] > 0
    if name in PUBLISHED_TOTALS:
        assert params_total(cfg) == PUBLISHED_TOTALS[name]
    if name in LADDER_LABELS:
        assert cfg.head_dim == 64 and cfg.vocab_size == 50304 and cfg.tied_embeddings
        assert cfg.ffn_dim % 32 == 0 and abs(cfg.ffn_dim - 8 * cfg.d_model / 3) <= 16
        assert params_non_embedding(cfg) == pytest.approx(LADDER_LABELS[name], rel=2e-3)


def test_overrides():
    c = preset("llama-3.2-1b", n_heads=8, n_kv_heads=1)
    assert (c.n_heads, c.n_kv_heads, c.head_dim, c.d_model) == (8, 1, 64, 2048)
    assert params_total(c) == 1_105_790_976  # research notes §3
