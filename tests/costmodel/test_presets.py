"""Every named preset: valid, priced, and where a published count exists, exact."""

import pytest

from costlaw.costmodel import PRESETS, costs, params_non_embedding, params_total, preset
from costlaw.costmodel.hf import shipped
from costlaw.costmodel.presets import HF_MODELS

PUBLISHED_TOTALS = {s.name: s.params for s in shipped()}  # costmodel/data/hf/published.toml
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
        hf = HF_MODELS[name]
        assert hf.config == cfg and hf.params_total == PUBLISHED_TOTALS[name]
        # the cost model's own count is the whole count exactly where the architecture adds nothing to its block
        extra = sum(hf.arch.extra(cfg).values()) + hf.arch.unrouted(cfg)
        assert params_total(cfg) == PUBLISHED_TOTALS[name] - extra
        assert (extra == 0) == (hf.arch.model_type in ("llama", "mistral"))
    if name in LADDER_LABELS:
        assert cfg.head_dim == 64 and cfg.vocab_size == 50304 and cfg.tied_embeddings
        assert cfg.ffn_dim % 32 == 0 and abs(cfg.ffn_dim - 8 * cfg.d_model / 3) <= 16
        assert params_non_embedding(cfg) == pytest.approx(LADDER_LABELS[name], rel=2e-3)


def test_the_public_presets_come_from_the_shipped_table():
    assert list(HF_MODELS) == list(PUBLISHED_TOTALS) == [n for n in PRESETS if not n.startswith("gqa-")]
    for name in ("llama-2-7b", "llama-3.1-70b", "mistral-7b", "qwen2.5-7b", "qwen3-8b", "gemma-2-9b", "gemma-3-1b",
                 "gpt-oss-20b", "gpt-oss-120b"):
        assert name in PRESETS


def test_overrides():
    c = preset("llama-3.2-1b", n_heads=8, n_kv_heads=1)
    assert (c.n_heads, c.n_kv_heads, c.head_dim, c.d_model) == (8, 1, 64, 2048)
    assert params_total(c) == 1_105_790_976  # research notes §3


def test_gpu_table_rows_and_device_names():
    from costlaw.costmodel.hardware import GPUS, gpu

    for name in ("B200", "GB200", "MI300X", "L40S", "H20"):
        g = GPUS[name]
        assert g.peak_bf16_flops > 0 and g.hbm_bytes_per_s > 0 and g.memory_bytes > 0 and "dense" in g.source
    # device names that contain another row's name find their own row
    assert gpu("NVIDIA GB200").name == "GB200" and gpu("NVIDIA B200").name == "B200"
    assert gpu("NVIDIA H200").name == "H200" and gpu("NVIDIA H20").name == "H20"
    assert gpu("AMD Instinct MI300X").name == "MI300X" and gpu("NVIDIA L40S").name == "L40S"
    assert gpu("mi300x").name == "MI300X"
