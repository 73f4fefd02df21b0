"""Hugging Face configs in: every shipped config priced through `costlaw cost --hf-config` against its published
parameter count, transformers' own modules built from the same file, and its sliding windows; the architectures
costlaw maps but does not ship, on small configs, the same way; refusals in one line."""

import json

import pytest

from costlaw.cli import main as cli
from costlaw.costmodel import costs, params_compute, params_total
from costlaw.costmodel.attention import FULL, SinkWindow
from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.hf import from_hf_dict, hf_costs, read_hf_config, shipped

SHIPPED = {s.name: s for s in shipped()}
T = 131072


def cost_json(capsys, *args):
    rc = cli(["cost", *args, "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def hf_module_count(d: dict) -> tuple[int, object]:
    """transformers' parameter count of the model `d` describes (built on the meta device: no memory), and its
    config object."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    config = transformers.AutoConfig.for_model(**d)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()), config


def hf_windows(config) -> list:
    """Each layer's sliding window as transformers' config object states it (None: full attention)."""
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if not types:
        return [window] * config.num_hidden_layers
    return [window if t == "sliding_attention" else None for t in types]


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_config_prices_its_published_count_and_windows(name, capsys):
    s = SHIPPED[name]
    row = cost_json(capsys, "--hf-config", str(s.path), "--context", str(T))
    assert row["params_total"] == s.params
    count, config = hf_module_count(json.loads(s.path.read_text()))
    assert count == s.params  # transformers' modules hold exactly what costlaw counts
    windows = hf_windows(config)
    expect = [T if w is None else min(T, w) for w in windows]
    assert row["kv_tokens_per_layer"] == expect
    per_token = 2 * config.num_key_value_heads * s.model.config.head_dim * 2  # K and V, bf16
    assert row["kv_bytes_per_layer"] == [t * per_token for t in expect]
    assert row["kv_cache_bytes"] == sum(row["kv_bytes_per_layer"])
    if any(w is not None for w in windows):
        assert row["family"] == "hybrid" and min(row["kv_tokens_per_layer"]) < T
    if s.active is not None:
        assert round(row["params_active"] / 1e9, 2) == s.active
    else:
        assert "params_active" not in row
    assert cost_json(capsys, "--preset", name, "--context", str(T)) == {**row, "hf": {**row["hf"],
                                                                                      "source": s.model.source}}


def test_sliding_window_is_sink_window_without_sinks():
    """transformers' sliding mask (a key is seen when kv > q - W) is costmodel's sink_window(0,W), query included."""
    masking = pytest.importorskip("transformers.masking_utils")
    for w in (1, 3, 8):
        overlay, spec = masking.sliding_window_overlay(w), SinkWindow(0, w)
        for q in range(20):
            for k in range(20):
                seen = masking.causal_mask_function(0, 0, q, k) and overlay(0, 0, q, k)
                assert seen == bool(spec.visible(q, k)), (w, q, k)


SMALL = dict(hidden_size=64, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
             vocab_size=300)
UNSHIPPED = {
    "llama biases": dict(model_type="llama", attention_bias=True, mlp_bias=True, head_dim=24),
    "qwen2 sliding tail": dict(model_type="qwen2", use_sliding_window=True, sliding_window=16, max_window_layers=4),
    "qwen3 layer_types": dict(model_type="qwen3", head_dim=16, use_sliding_window=True, sliding_window=8,
                              layer_types=["full_attention", "sliding_attention"] * 3),
    "mixtral": dict(model_type="mixtral", num_local_experts=4, num_experts_per_tok=2, sliding_window=32),
    "qwen3_moe": dict(model_type="qwen3_moe", num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                      head_dim=16),
    "gemma": dict(model_type="gemma", head_dim=32),
    "gemma2 untied": dict(model_type="gemma2", head_dim=32, sliding_window=12, tie_word_embeddings=False),
    "gemma3 pattern 3": dict(model_type="gemma3_text", head_dim=32, sliding_window=10, sliding_window_pattern=3),
    "gpt_oss defaults": dict(model_type="gpt_oss", num_local_experts=4, num_experts_per_tok=2, head_dim=16),
}


@pytest.mark.parametrize("case", list(UNSHIPPED))
def test_mapped_architectures_match_transformers(case):
    d = {**SMALL, **UNSHIPPED[case]}
    count, config = hf_module_count(d)
    m = from_hf_dict(d)
    assert m.params_total == count
    windows = hf_windows(config)
    assert [None if s == FULL else s.window for s in m.config.layout] == windows
    assert all(s == FULL or s.sink == 0 for s in m.config.layout)


def test_multimodal_prices_the_language_model():
    text = {**SMALL, **UNSHIPPED["gemma3 pattern 3"]}
    del text["model_type"]  # Gemma 3's text_config may leave it out
    m = from_hf_dict({"model_type": "gemma3", "text_config": text, "vision_config": {"hidden_size": 32}})
    assert m.params_total == from_hf_dict({**text, "model_type": "gemma3_text"}).params_total
    assert any("vision tower" in n for n in m.notes)


def test_moe_prices_routed_experts_and_holds_all():
    m = SHIPPED["gpt-oss-20b"].model
    cfg, arch = m.config, m.arch
    assert cfg.ffn_dim == 4 * 2880  # the 4 routed experts as one SwiGLU
    row, plain = hf_costs(m, 8192, generate=16), costs(cfg, 8192, generate=16)
    router = 2 * 24 * 2880 * 32  # FLOPs per token of the router's matmul
    assert row["c_infer_flops_per_token"] - plain["c_infer_flops_per_token"] == router
    assert row["prefill_flops"] - plain["prefill_flops"] == 8192 * router
    assert row["decode_flops"] - plain["decode_flops"] == 16 * router
    assert row["params_active"] == params_compute(cfg) + sum(arch.extra(cfg).values())
    assert row["params_total"] - row["params_active"] == arch.unrouted(cfg) + cfg.vocab_size * cfg.d_model
    assert row["m_infer_values"] - plain["m_infer_values"] == row["params_total"] - params_total(cfg)
    roof = hf_costs(m, 8192, gpu="B200")
    assert roof["fits_in_memory"] and roof["decode_tokens_per_s"] > 0
    # a decode step reads the routed experts only: faster than a dense model holding every expert
    dense = hf_costs(m.with_config(cfg.replace(ffn_dim=32 * 2880)), 8192, gpu="B200")
    assert roof["decode_tokens_per_s"] > dense["decode_tokens_per_s"]


def test_overrides_keep_the_architecture(capsys):
    """A preset of an HF model with fewer KV heads counts the biases of the new shape, as transformers does."""
    s = SHIPPED["qwen2.5-7b"]
    row = cost_json(capsys, "--preset", "qwen2.5-7b", "--kv-heads", "1")
    count, _ = hf_module_count({**json.loads(s.path.read_text()), "num_key_value_heads": 1})
    assert row["params_total"] == count < s.params
    rc = cli(["cost", "--preset", "gpt-oss-20b", "--ffn-dim", "11521"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--ffn-dim" in err and "top_k" in err


def test_table_output_states_the_approximations(capsys):
    assert cli(["cost", "--hf-config", str(SHIPPED["gpt-oss-120b"].path), "--gpu", "GB200"]) == 0
    out = capsys.readouterr().out
    assert "active 5,132,849,472" in out and "unrouted experts" in out and "note: attention sinks" in out
    assert "prefill s (GB200)" in out


REFUSED = {
    "deepseek MLA": ({"model_type": "deepseek_v3", "kv_lora_rank": 512, **SMALL}, "kv_lora_rank"),
    "unmapped": ({"model_type": "mamba", **SMALL}, "model_type"),
    "linear attention": ({"model_type": "qwen3", **SMALL,
                          "layer_types": ["linear_attention", "full_attention"] * 3}, "layer_types"),
    "dense and MoE layers": ({"model_type": "qwen3_moe", **SMALL, "num_experts": 4, "num_experts_per_tok": 2,
                              "moe_intermediate_size": 8, "mlp_only_layers": [0]}, "mlp_only_layers"),
    "bidirectional": ({"model_type": "gemma3_text", **SMALL, "use_bidirectional_attention": True},
                      "use_bidirectional_attention"),
    "no hidden_size": ({"model_type": "llama", "num_hidden_layers": 2}, "hidden_size"),
    "odd head_dim": ({"model_type": "llama", **SMALL, "head_dim": 15}, "head_dim"),
    "kv heads": ({"model_type": "llama", **SMALL, "num_key_value_heads": 3}, "num_key_value_heads"),
    "no model_type": ({**SMALL}, "model_type"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_in_one_line(case, tmp_path, capsys):
    d, field = REFUSED[case]
    with pytest.raises(ConfigError) as e:
        from_hf_dict(d)
    assert e.value.field == field and "\n" not in str(e.value)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(d))
    assert cli(["cost", "--hf-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--hf-config.{field}:" in err


def test_a_config_json_given_as_toml_is_named(tmp_path, capsys):
    path = tmp_path / "qwen_config.json"
    path.write_text(SHIPPED["qwen2.5-7b"].path.read_text())
    assert cli(["cost", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--config:" in err and "--hf-config" in err and "not valid TOML" not in err
    assert cli(["cost", "--hf-config", str(tmp_path / "missing.json")]) == 2
    assert "--hf-config: no such file" in capsys.readouterr().err
    assert cli(["cost", "--hf-config", str(path), "--preset", "gqa-3m"]) == 2
    assert "give one of" in capsys.readouterr().err


def test_read_hf_config_keeps_its_source():
    s = SHIPPED["mistral-7b"]
    m = read_hf_config(s.path)
    assert m.source == str(s.path) and m.config == s.model.config
    assert set(m.config.layout) == {SinkWindow(0, 4096)}
