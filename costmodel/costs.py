"""Analytic costs of a ModelConfig: parameters, FLOPs and memory for training and inference.

Conventions (the GQA paper's Table 2, generalised):
- FLOPs count 2 per multiply-accumulate. A forward pass costs 2 FLOPs per parameter used in a matmul,
  `2·N_compute`, where N_compute is every parameter except an untied input embedding (a lookup). With
  tied embeddings N_compute = N_total, so this is the paper's 2N (its LM head is the 2dV inside it).
- Attention adds 4·d_h·n_h FLOPs per key seen per layer (QK^T and AV). A layer's keys come from its
  pattern (costmodel.attention) and are capped by the KV policy's kept tokens.
- Memory counts values (M_infer = N + KV values), and bytes for a dtype.
- Training costs 3× the forward (forward + backward), averaged over the positions of a T-token sequence.
"""

from __future__ import annotations

from collections import Counter

from costlaw.costmodel.config import ModelConfig
from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.kvpolicy import policy_decode_flops_per_token, policy_flops_per_token, policy_params

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ConfigError("dtype", f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}") from None


# ---------------------------------------------------------------- parameters
def params_attention_layer(cfg: ModelConfig) -> int:
    d = cfg.d_model
    return d * cfg.q_dim + 2 * d * cfg.kv_dim + cfg.q_dim * d


def params_ffn_layer(cfg: ModelConfig) -> int:
    return 3 * cfg.d_model * cfg.ffn_dim  # SwiGLU: gate, up, down


def params_embedding(cfg: ModelConfig) -> int:
    """Input embedding, plus the output projection when it is not tied."""
    return cfg.vocab_size * cfg.d_model * (1 if cfg.tied_embeddings else 2)


def params_non_embedding(cfg: ModelConfig) -> int:
    """The paper's N: blocks (attention, FFN, two RMSNorms each) plus the final RMSNorm."""
    per_layer = params_attention_layer(cfg) + params_ffn_layer(cfg) + 2 * cfg.d_model
    return cfg.n_layers * per_layer + cfg.d_model


def params_total(cfg: ModelConfig) -> int:
    return params_non_embedding(cfg) + params_embedding(cfg)


def params_compute(cfg: ModelConfig) -> int:
    """Parameters used in a matmul per token (the untied input embedding is a lookup)."""
    return params_total(cfg) - (0 if cfg.tied_embeddings else cfg.vocab_size * cfg.d_model)


# ---------------------------------------------------------------- per-layer keys
def _check_context(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ConfigError("context", f"must be a whole number of tokens >= 1, got {T!r}")


def _kept(cfg: ModelConfig, T: int) -> int:
    return cfg.kv_policy.kept_tokens(T) if cfg.kv_policy is not None else T


def kv_tokens_per_layer(cfg: ModelConfig, T: int) -> list[int]:
    """Slots each layer's KV cache needs to decode up to context T, after the policy's cap."""
    _check_context(T)
    kept = _kept(cfg, T)
    return [min(spec.cache_tokens(T), kept) for spec in cfg.layout]


def attention_keys(cfg: ModelConfig, T: int) -> int:
    """Keys the query at context T attends to, summed over layers."""
    _check_context(T)
    kept = _kept(cfg, T)
    return sum(min(spec.keys(T), kept) for spec in cfg.layout)


def _total_keys(cfg: ModelConfig, T: int) -> int:
    """Sum over layers of the keys seen by all T positions, once per distinct pattern: a pattern without a closed
    form counts them in O(T)."""
    return sum(n * spec.total_keys(T) for spec, n in Counter(cfg.layout).items())


# ---------------------------------------------------------------- inference
def c_infer(cfg: ModelConfig, T: int) -> int:
    """FLOPs to process one token with T tokens in context: 2N + 4·d_h·n_h·Σ_l keys_l(T) (+ policy)."""
    return (2 * params_compute(cfg) + 4 * cfg.head_dim * cfg.n_heads * attention_keys(cfg, T)
            + policy_decode_flops_per_token(cfg))


def kv_values(cfg: ModelConfig, T: int) -> int:
    """K and V values cached for one sequence at context T."""
    return 2 * cfg.kv_dim * sum(kv_tokens_per_layer(cfg, T))


def m_infer(cfg: ModelConfig, T: int) -> int:
    """Values held at inference: N + 2·d_h·n_kv·Σ_l kv_tokens_l(T) (+ policy parameters)."""
    return params_total(cfg) + policy_params(cfg) + kv_values(cfg, T)


def kv_cache_bytes(cfg: ModelConfig, T: int, dtype: str = "bf16", batch: int = 1) -> int:
    return batch * kv_values(cfg, T) * dtype_bytes(dtype)


def prefill_flops(cfg: ModelConfig, T: int) -> int:
    """FLOPs of one forward pass over a T-token prompt. The policy does not cut prefill attention here:
    it prices the full pass that SnapKV/H2O-style policies run before evicting."""
    _check_context(T)
    keys = _total_keys(cfg, T)
    return T * (2 * params_compute(cfg) + policy_flops_per_token(cfg)) + 4 * cfg.head_dim * cfg.n_heads * keys


def decode_flops(cfg: ModelConfig, T: int, G: int) -> int:
    """FLOPs to generate G tokens after a T-token prompt (the i-th new token sees T+i tokens)."""
    _check_context(T)
    if G < 0:
        raise ConfigError("generate", f"must be >= 0, got {G}")
    if cfg.kv_policy is None:
        keys = _total_keys(cfg, T + G) - _total_keys(cfg, T)
        return G * 2 * params_compute(cfg) + 4 * cfg.head_dim * cfg.n_heads * keys
    return sum(c_infer(cfg, t) for t in range(T + 1, T + G + 1))


# ---------------------------------------------------------------- training
def c_train(cfg: ModelConfig, T: int) -> float:
    """Training FLOPs per token on T-token sequences: 3 × (2N + 4·d_h·n_h · mean keys per position).
    For all-full layers this is 6N + 6·L·d_h·n_h·(T+1); sparse layers count only the keys they see."""
    _check_context(T)
    keys = _total_keys(cfg, T)
    return 6 * params_compute(cfg) + 12 * cfg.head_dim * cfg.n_heads * keys / T


def m_train_bytes(cfg: ModelConfig, T: int, batch: int = 1, activation_bytes: int = 2) -> int:
    """Estimate of training memory: fp32 weights, grads and AdamW moments (16 B/param), plus activations
    kept for backward with a fused attention kernel (no T×T scores) and fp32 logits. An estimate: real
    peaks depend on the compiler's fusion and the allocator."""
    d, L = cfg.d_model, cfg.n_layers
    # per token per layer: 2 norms in/out, q, k, v, attention out, o-proj in, SwiGLU gate/up/act
    per_token_layer = 4 * d + cfg.q_dim * 2 + 2 * cfg.kv_dim + 3 * cfg.ffn_dim
    acts = batch * T * (L * per_token_layer + 2 * d) * activation_bytes
    logits = batch * T * cfg.vocab_size * 4
    return 16 * params_total(cfg) + acts + logits


# ---------------------------------------------------------------- one row
def costs(cfg: ModelConfig, T: int, dtype: str = "bf16", generate: int = 0, gpu: str | None = None) -> dict:
    """Every analytic cost at context T, under the key names the CLI, runs and the store share."""
    kv = kv_tokens_per_layer(cfg, T)
    row = {
        "config_id": cfg.config_id,
        "family": cfg.family,
        "context": T,
        "dtype": dtype,
        "params_total": params_total(cfg),
        "params_non_embedding": params_non_embedding(cfg),
        "params_embedding": params_embedding(cfg),
        "params_policy": policy_params(cfg),
        "kv_tokens": sum(kv),
        "kv_tokens_per_layer": kv,
        "c_infer_flops_per_token": c_infer(cfg, T),
        "m_infer_values": m_infer(cfg, T),
        "m_infer_bytes": m_infer(cfg, T) * dtype_bytes(dtype),
        "kv_cache_bytes": kv_cache_bytes(cfg, T, dtype),
        "c_train_flops_per_token": c_train(cfg, T),
        "m_train_bytes_estimate": m_train_bytes(cfg, T),
        "prefill_flops": prefill_flops(cfg, T),
    }
    if generate:
        row["generate"] = generate
        row["decode_flops"] = decode_flops(cfg, T, generate)
    if gpu is not None:
        from costlaw.costmodel.hardware import roofline

        row.update(roofline(cfg, T, gpu, dtype=dtype, generate=generate))
    return row
