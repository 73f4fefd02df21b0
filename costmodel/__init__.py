"""What a config costs. Pure Python: never imports torch (nor anything else from costlaw)."""

from costlaw.costmodel.attention import FULL, BlockStrided, Full, SinkWindow, parse_spec
from costlaw.costmodel.config import ModelConfig, centred_full_layers, hybrid_layout
from costlaw.costmodel.core.errors import ConfigError, CostlawError
from costlaw.costmodel.costs import (
    c_infer,
    c_train,
    costs,
    decode_flops,
    kv_cache_bytes,
    kv_tokens_per_layer,
    m_infer,
    m_train_bytes,
    params_compute,
    params_embedding,
    params_non_embedding,
    params_total,
    prefill_flops,
)
from costlaw.costmodel.hardware import GPUS, gpu, roofline
from costlaw.costmodel.kvpolicy import METHODS, KVPolicy, policy_flops_per_token, policy_params
from costlaw.costmodel.presets import PRESETS, paper_ffn, preset, preset_names

__all__ = [
    "FULL", "BlockStrided", "Full", "SinkWindow", "parse_spec", "ModelConfig", "centred_full_layers",
    "hybrid_layout", "c_infer", "c_train", "costs", "decode_flops", "kv_cache_bytes", "kv_tokens_per_layer",
    "m_infer", "m_train_bytes", "params_compute", "params_embedding", "params_non_embedding", "params_total",
    "prefill_flops", "ConfigError", "CostlawError", "GPUS", "gpu", "roofline", "METHODS", "KVPolicy",
    "policy_flops_per_token", "policy_params", "PRESETS", "paper_ffn", "preset", "preset_names",
]
