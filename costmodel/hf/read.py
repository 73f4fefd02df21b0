"""A Hugging Face config.json -> `HFModel` (a ModelConfig, the architecture's extras, the stated approximations).

Sliding windows: in transformers a layer with sliding_window W lets a query see the W most recent tokens, itself
included (masking_utils: kv_idx > q_idx - W), which is exactly `sink_window(0,W)`; such a layer caches min(T, W)
tokens. Which layers slide follows transformers per architecture (costmodel.hf.families), or the config's own
layer_types list.

Refused in one line: architectures not in costmodel.hf.families, multi-head latent attention (kv_lora_rank),
layer types other than full and sliding softmax attention (linear attention, chunked attention), bidirectional
attention, and mixtures of experts whose layers are not all MoE (one FFN shape prices every layer).
"""

from __future__ import annotations

import json
from pathlib import Path

from costlaw.costmodel.attention import FULL, SinkWindow
from costlaw.costmodel.config import ModelConfig
from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.hf.families import FAMILIES, TEXT_MODEL_TYPES, Family
from costlaw.costmodel.hf.model import Arch, HFModel

LAYER_TYPES = ("full_attention", "sliding_attention")
# ModelConfig field -> the config.json key it comes from, so its errors name what the user can edit
KEYS = {"d_model": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
        "n_kv_heads": "num_key_value_heads", "head_dim": "head_dim", "ffn_dim": "intermediate_size",
        "vocab_size": "vocab_size", "rope_theta": "rope_theta", "layout": "layer_types"}


def read_hf_config(path: str | Path) -> HFModel:
    """The HFModel of a config.json file."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("hf_config", f"no such file {str(path)!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError("hf_config", f"{str(path)!r} is not JSON ({e}); give a Hugging Face config.json") from None
    return from_hf_dict(d, source=str(path))


def from_hf_dict(d: dict, source: str = "") -> HFModel:
    if not isinstance(d, dict):
        raise ConfigError("hf_config", f"must be a JSON object (a config.json), got {type(d).__name__}")
    notes: list[str] = []
    if isinstance(d.get("text_config"), dict):
        outer = d.get("model_type")
        d = {"model_type": TEXT_MODEL_TYPES.get(outer), **d["text_config"]}
        notes.append(f"multimodal {outer}: the language model only; its vision tower and projector are not priced")
    model_type = d.get("model_type")
    if d.get("kv_lora_rank") is not None:
        raise ConfigError("kv_lora_rank", "multi-head latent attention (DeepSeek's MLA) caches one compressed "
                                          "latent per token, not per-head K and V; the cost model cannot price it")
    if not isinstance(model_type, str):
        raise ConfigError("model_type", "missing; a Hugging Face config.json names its architecture's model_type")
    fam = FAMILIES.get(model_type)
    if fam is None:
        raise ConfigError("model_type", f"{model_type!r} is not an architecture costlaw maps ({', '.join(FAMILIES)}); "
                                        "describe it as a costlaw model TOML instead (see costlaw cost --toml)")
    if d.get("use_bidirectional_attention"):
        raise ConfigError("use_bidirectional_attention", "true: not a causal decoder; costlaw prices causal "
                                                         "language models")
    try:
        return _build(d, fam, model_type, notes, source)
    except ConfigError as e:
        if e.field in KEYS:
            raise ConfigError(KEYS[e.field], e.problem) from None
        raise


def _int(d: dict, key: str, default=None) -> int:
    v = d.get(key, default)
    if v is None:
        raise ConfigError(key, "missing; a config.json of this architecture has it")
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(key, f"must be a whole number >= 1, got {v!r}")
    return v


def _flag(d: dict, key: str, default: bool) -> bool:
    v = d.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ConfigError(key, f"must be true or false, got {v!r}")
    return v


def _rope_theta(d: dict, fam: Family) -> float:
    """rope_theta, or transformers 5's rope_parameters (per layer type for Gemma 3: the full layers' θ)."""
    params = d.get("rope_parameters")
    if isinstance(params, dict):
        params = params.get("full_attention", params)
        if isinstance(params, dict) and params.get("rope_theta") is not None:
            return params["rope_theta"]
    return d["rope_theta"] if d.get("rope_theta") is not None else fam.theta


def _rope_note(d: dict) -> str | None:
    scaling = d.get("rope_scaling")
    params = d.get("rope_parameters")
    if isinstance(params, dict):
        params = params.get("full_attention", params)
        if isinstance(params, dict) and params.get("rope_type", "default") != "default":
            scaling = params
    if isinstance(scaling, dict):
        kind = scaling.get("rope_type", scaling.get("type", "scaled"))
        return f"rope_scaling ({kind}) moves positions and costs nothing; ModelConfig keeps rope_theta alone"
    return None


def _layer_types(d: dict, fam: Family, L: int) -> list[str]:
    """Each layer's type, as transformers derives it for this architecture."""
    given = d.get("layer_types")
    if given is not None and fam.windows not in ("none", "all"):
        if not isinstance(given, list) or len(given) != L:
            raise ConfigError("layer_types", f"must list one type per layer ({L}), got {given!r}")
        for t in given:
            if t not in LAYER_TYPES:
                raise ConfigError("layer_types", f"{t!r} layers are not full or sliding softmax attention over a KV "
                                                 "cache (e.g. linear or chunked attention); the cost model prices "
                                                 f"{' and '.join(LAYER_TYPES)} layers only")
        return list(given)
    if fam.windows == "all":
        return ["sliding_attention"] * L
    if fam.windows == "qwen":
        first = _int(d, "max_window_layers", 28)
        return ["sliding_attention" if i >= first else "full_attention" for i in range(L)]
    if fam.windows == "alternate":
        return ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(L)]
    if fam.windows == "pattern":
        every = _int(d, "sliding_window_pattern", 6)
        return ["sliding_attention" if (i + 1) % every else "full_attention" for i in range(L)]
    return ["full_attention"] * L


def _window(d: dict, fam: Family) -> int | None:
    """The sliding layers' window, or None where they attend fully (transformers' sliding_window = None)."""
    if fam.windows == "none":
        return None
    if fam.windows == "qwen" and not _flag(d, "use_sliding_window", False):
        return None  # Qwen2/3 drop the window unless use_sliding_window is set
    w = d.get("sliding_window", fam.window)
    return None if w is None else _int(d, "sliding_window", w)


def _build(d: dict, fam: Family, model_type: str, notes: list[str], source: str) -> HFModel:
    L = _int(d, "num_hidden_layers")
    hidden, heads = _int(d, "hidden_size"), _int(d, "num_attention_heads")
    kv_heads = _int(d, "num_key_value_heads", heads)
    if d.get("head_dim") is not None:
        head_dim = _int(d, "head_dim")
    elif fam.head_dim is not None:
        head_dim = fam.head_dim
    elif hidden % heads:
        raise ConfigError("head_dim", f"missing, and hidden_size {hidden} is not a multiple of num_attention_heads "
                                      f"{heads}; give head_dim")
    else:
        head_dim = hidden // heads
    experts = top_k = 0
    width = _int(d, fam.expert_width_key if fam.experts_key else "intermediate_size")
    if fam.experts_key:
        experts = _int(d, fam.experts_key)
        top_k = _int(d, "num_experts_per_tok", d.get("experts_per_token"))
        if top_k > experts:
            raise ConfigError("num_experts_per_tok", f"{top_k} exceeds the {experts} experts")
        if d.get("mlp_only_layers") or d.get("decoder_sparse_step", 1) != 1:
            raise ConfigError("mlp_only_layers", "some layers are dense and some MoE; costlaw prices one FFN shape "
                                                 "for every layer")
        notes.append(f"mixture of experts: FLOPs price the {top_k} routed experts of {experts} as one SwiGLU of "
                     f"width {top_k}·{width}; params_total adds the {experts - top_k} unrouted experts per layer, "
                     "params_active leaves them out; the router's matmul counts in both")
    window = _window(d, fam)
    sliding = SinkWindow(0, window) if window is not None else FULL
    layout = tuple(sliding if t == "sliding_attention" else FULL for t in _layer_types(d, fam, L))
    theta = _rope_theta(d, fam)
    if isinstance(theta, bool) or not isinstance(theta, (int, float)):
        raise ConfigError("rope_theta", f"must be a number, got {theta!r}")
    cfg = ModelConfig(d_model=hidden, n_layers=L, n_heads=heads, n_kv_heads=kv_heads, head_dim=head_dim,
                      ffn_dim=width * (top_k or 1), vocab_size=_int(d, "vocab_size"),
                      tied_embeddings=_flag(d, "tie_word_embeddings", fam.tied), rope_theta=float(theta),
                      layout=layout)
    attention_bias = fam.bias == "attention_bias" and _flag(d, "attention_bias", fam.attention_bias)
    arch = Arch(model_type, qkv_bias=fam.bias == "qkv" or attention_bias, o_bias=attention_bias,
                mlp_bias=fam.mlp_bias and _flag(d, "mlp_bias", False), qk_norm=fam.qk_norm,
                extra_norms=fam.extra_norms, sinks=fam.sinks, experts=experts, top_k=top_k,
                router_bias=fam.router_bias, expert_bias=fam.expert_bias)
    notes.extend(fam.notes)
    if arch.qkv_bias:
        notes.append("attention biases are counted in parameters; their adds are not priced as FLOPs")
    rope = _rope_note(d)
    if rope:
        notes.append(rope)
    quant = d.get("quantization_config")
    if isinstance(quant, dict):
        notes.append(f"the checkpoint is quantized ({quant.get('quant_method', 'unnamed method')}); bytes are priced "
                     "at --dtype, not at its storage format")
    return HFModel(cfg, arch, tuple(notes), source)
