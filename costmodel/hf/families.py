"""The Hugging Face architectures costlaw maps, by config.json's `model_type`: the defaults transformers gives their
fields when a config.json leaves them out, which layers slide, and what each architecture adds (costmodel.hf.model).

Only these are mapped: an architecture not listed may have parts the cost model would silently misprice, so it is
refused in one line instead. The defaults mirror transformers' configuration classes; tests/costmodel/test_hf.py
checks them, and every parameter count, against transformers' own modules.
"""

from __future__ import annotations

from dataclasses import dataclass

GEGLU = "the gated GELU FFN (gelu_pytorch_tanh) is priced as SwiGLU: the same three matmuls"
GEMMA_SCALE = "Gemma's √d embedding scale and (1 + w) norm weights add no parameters"
SOFTCAP = "attention and final logit soft-capping (tanh) add no parameters and are not priced as FLOPs"
LOCAL_ROPE = ("sliding layers use RoPE base rope_local_base_freq, full layers rope_theta; ModelConfig keeps one θ "
              "(the full layers'), which changes no cost")
SINK_LOGITS = ("attention sinks are learned logits (one per head per layer, counted in parameters) that join each "
               "softmax's denominator; they are no tokens, so sliding layers are sink_window(0,W) and no KV slot is "
               "spent on a sink")


@dataclass(frozen=True)
class Family:
    tied: bool  # tie_word_embeddings when absent
    theta: float  # rope_theta when absent
    head_dim: int | None = None  # head_dim when absent; None: hidden_size // num_attention_heads
    # which layers slide: "none" (no sliding window), "all" (Mistral: one window on every layer), "qwen" (layers
    # from max_window_layers on, only with use_sliding_window), "alternate" (even layers), "pattern" (all but every
    # sliding_window_pattern-th layer); an explicit layer_types list overrides the last three, as in transformers
    windows: str = "none"
    window: int | None = None  # sliding_window when absent
    bias: str = "attention_bias"  # "attention_bias": q, k, v and o follow it; "qkv": always on q, k, v (Qwen2); "none"
    attention_bias: bool = False  # attention_bias when absent
    mlp_bias: bool = False  # reads config.mlp_bias
    qk_norm: bool = False
    extra_norms: bool = False
    sinks: bool = False
    experts_key: str | None = None  # the key holding the expert count; None for a dense FFN
    expert_width_key: str = "intermediate_size"
    router_bias: bool = False
    expert_bias: bool = False
    notes: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {
    "llama": Family(tied=False, theta=10_000.0, mlp_bias=True),
    "mistral": Family(tied=False, theta=10_000.0, windows="all", window=4096, bias="none"),
    "mixtral": Family(tied=False, theta=1_000_000.0, windows="all", bias="none", experts_key="num_local_experts"),
    "qwen2": Family(tied=False, theta=10_000.0, windows="qwen", window=4096, bias="qkv"),
    "qwen3": Family(tied=False, theta=10_000.0, head_dim=128, windows="qwen", window=4096, qk_norm=True),
    "qwen3_moe": Family(tied=False, theta=10_000.0, windows="qwen", window=4096, qk_norm=True,
                        experts_key="num_experts", expert_width_key="moe_intermediate_size"),
    "gemma": Family(tied=True, theta=10_000.0, head_dim=256, notes=(GEGLU, GEMMA_SCALE)),
    "gemma2": Family(tied=True, theta=10_000.0, head_dim=256, windows="alternate", window=4096, extra_norms=True,
                     notes=(GEGLU, GEMMA_SCALE, SOFTCAP)),
    "gemma3_text": Family(tied=True, theta=1_000_000.0, head_dim=256, windows="pattern", window=4096,
                          extra_norms=True, qk_norm=True, notes=(GEGLU, GEMMA_SCALE, LOCAL_ROPE)),
    "gpt_oss": Family(tied=False, theta=150_000.0, head_dim=64, windows="alternate", window=128, attention_bias=True,
                      sinks=True, experts_key="num_local_experts", router_bias=True, expert_bias=True,
                      notes=(SINK_LOGITS,)),
}

# the outer model_type of a multimodal config -> the model_type its text_config has when it names none
TEXT_MODEL_TYPES = {"gemma3": "gemma3_text"}
