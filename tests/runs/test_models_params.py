"""Built parameter counts equal costmodel's, for every preset (full size on the meta device, scaled down for
real), every family; the init is deterministic and as documented."""

import math

import pytest
import torch

from costlaw.costmodel import PRESETS, KVPolicy, hybrid_layout, params_total, preset
from costlaw.runs.models import Transformer, build_model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def scaled(cfg):
    """Same heads, tying, depth and layout; tiny widths."""
    return cfg.replace(d_model=24, head_dim=4, ffn_dim=40, vocab_size=50, layout=cfg.layout)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_full_size_on_meta(name):
    cfg = preset(name)
    model = build_model(cfg, device="meta")
    assert n_params(model) == params_total(cfg)
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_scaled_down_allocated(name):
    cfg = scaled(preset(name))
    model = build_model(cfg)
    assert n_params(model) == params_total(cfg)
    assert (model.lm_head is None) == cfg.tied_embeddings
    logits = model(torch.randint(0, cfg.vocab_size, (1, 9)))
    assert logits.shape == (1, 9, cfg.vocab_size) and torch.isfinite(logits).all()


@pytest.mark.parametrize("family", ["hybrid-sink", "hybrid-strided", "compressed-locret", "compressed-distill"])
def test_families_count_the_same(family):
    base = scaled(preset("gqa-19m")).replace(n_heads=8, n_kv_heads=2)
    cfg = {
        "hybrid-sink": base.with_layout(hybrid_layout(base.n_layers, "sink_window(4,64)", full_layers=2)),
        "hybrid-strided": base.with_layout(hybrid_layout(base.n_layers, "block_strided(16,2,4)", full_layer_ids=[0])),
        # the policy's own parameters (retaining heads, scorer, LoRA) belong to runs/kv, not to the backbone
        "compressed-locret": base.replace(kv_policy=KVPolicy("locret", keep=0.25)),
        "compressed-distill": base.replace(kv_policy=KVPolicy("kv_distill", budget=64)),
    }[family]
    assert n_params(build_model(cfg)) == params_total(cfg)


def test_parameter_names_and_shapes():
    cfg = scaled(preset("llama-3.1-8b"))  # untied, GQA 32/8
    shapes = {name: tuple(p.shape) for name, p in build_model(cfg).named_parameters()}
    d, hd, f = cfg.d_model, cfg.head_dim, cfg.ffn_dim
    assert shapes["embed.weight"] == (cfg.vocab_size, d)
    assert shapes["lm_head.weight"] == (cfg.vocab_size, d)
    assert shapes["blocks.0.attn.wqkv.weight"] == ((cfg.n_heads + 2 * cfg.n_kv_heads) * hd, d)
    assert shapes["blocks.0.attn.wo.weight"] == (cfg.n_heads * hd, d)[::-1]
    assert shapes["blocks.0.ffn.w_gate_up.weight"] == (2 * f, d)
    assert shapes["blocks.0.ffn.w_down.weight"] == (d, f)
    assert shapes["blocks.0.attn_norm.weight"] == shapes["norm.weight"] == (d,)
    assert not any("bias" in name for name in shapes)


def test_init_is_deterministic_and_scaled():
    cfg = preset("gqa-3m").replace(vocab_size=512)
    torch.manual_seed(0)
    a = build_model(cfg)
    torch.manual_seed(0)
    b = build_model(cfg)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert isinstance(a, Transformer) and a.cfg is cfg
    assert abs(a.embed.weight.std().item() - 0.02) < 1e-3
    assert abs(a.blocks[0].attn.wqkv.weight.std().item() - 0.02) < 1e-3
    residual = 0.02 / math.sqrt(2 * cfg.n_layers)
    assert abs(a.blocks[0].ffn.w_down.weight.std().item() - residual) < 1e-3
    assert torch.equal(a.norm.weight, torch.ones(cfg.d_model))


def test_dtype_and_tied_weight():
    model = build_model(scaled(preset("gqa-3m")), dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.output_weight is model.embed.weight
