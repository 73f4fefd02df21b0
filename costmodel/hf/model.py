"""A Hugging Face model as the cost model sees it: a ModelConfig, plus what its architecture adds to that Llama block.

ModelConfig describes a pre-RMSNorm SwiGLU decoder without biases. Published architectures add parameters it
has no field for: attention biases (Qwen2, gpt-oss), q/k norms (Qwen3, Gemma 3), Gemma's extra norms around the
FFN, gpt-oss's learned sink logits, and for mixtures of experts a router and the experts a token does not use.
`Arch` states which of these an architecture has and counts them from any ModelConfig of it, so a size override
(`costlaw cost --preset qwen2.5-7b --kv-heads 1`) keeps the counts right.

A mixture of experts is priced through its routed experts: ModelConfig's ffn_dim is top_k · the expert width,
one SwiGLU with exactly the matmuls of the k experts a token runs through, so FLOPs and the active parameters
follow the cost model's formulas; the other experts are counted in `unrouted` (memory, not FLOPs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from costlaw.costmodel.config import ModelConfig
from costlaw.costmodel.core.errors import ConfigError


@dataclass(frozen=True)
class Arch:
    """What one architecture adds to ModelConfig's block, as flags and expert counts."""

    model_type: str
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False  # Llama's mlp_bias: gate, up and down projections
    qk_norm: bool = False  # RMSNorm over head_dim on q and on k
    extra_norms: bool = False  # Gemma 2/3: four norms per layer where ModelConfig counts two
    sinks: bool = False  # gpt-oss: one learned sink logit per head per layer
    experts: int = 0  # experts per layer; 0 for a dense FFN
    top_k: int = 0
    router_bias: bool = False
    expert_bias: bool = False  # gpt-oss: each expert's gate/up and down projections have biases

    @property
    def moe(self) -> bool:
        return self.experts > 0

    def expert_width(self, cfg: ModelConfig) -> int:
        """One expert's intermediate size (ModelConfig's ffn_dim holds top_k of them)."""
        if cfg.ffn_dim % self.top_k:
            raise ConfigError("ffn_dim", f"{cfg.ffn_dim} is not {self.top_k} experts' width (the MoE prices top_k · "
                                         "intermediate_size); give a multiple of top_k")
        return cfg.ffn_dim // self.top_k

    def extra(self, cfg: ModelConfig) -> dict[str, int]:
        """Parameters outside ModelConfig that every token uses, by what they are (zero counts left out)."""
        L, d = cfg.n_layers, cfg.d_model
        counts = {
            "attention_biases": L * ((cfg.q_dim + 2 * cfg.kv_dim) * self.qkv_bias + d * self.o_bias),
            "mlp_biases": L * (2 * cfg.ffn_dim + d) * (self.mlp_bias and not self.moe),
            "qk_norms": L * 2 * cfg.head_dim * self.qk_norm,
            "extra_norms": L * 2 * d * self.extra_norms,
            "attention_sinks": L * cfg.n_heads * self.sinks,
        }
        if self.moe:
            f = self.expert_width(cfg)
            counts["router"] = L * self.experts * (d + self.router_bias)
            counts["expert_biases"] = L * self.top_k * (2 * f + d) * self.expert_bias
        return {k: v for k, v in counts.items() if v}

    def router_weights(self, cfg: ModelConfig) -> int:
        """The router's matmul weights (d · experts per layer): 2 FLOPs each per token, like any matmul."""
        return cfg.n_layers * cfg.d_model * self.experts

    def unrouted(self, cfg: ModelConfig) -> int:
        """Parameters of the experts a token does not run through (held in memory, never multiplied)."""
        if not self.moe:
            return 0
        f = self.expert_width(cfg)
        per_expert = 3 * cfg.d_model * f + (2 * f + cfg.d_model) * self.expert_bias
        return cfg.n_layers * (self.experts - self.top_k) * per_expert


@dataclass(frozen=True)
class HFModel:
    """A Hugging Face config priced by costlaw: the ModelConfig, its architecture's extras, and the stated
    approximations (`notes`) of everything the cost model does not price."""

    config: ModelConfig
    arch: Arch
    notes: tuple[str, ...] = ()
    source: str = ""

    def with_config(self, cfg: ModelConfig) -> HFModel:
        """The same architecture at another size or layout (field overrides)."""
        return dataclasses.replace(self, config=cfg)

    @property
    def params_total(self) -> int:
        from costlaw.costmodel.costs import params_total

        return params_total(self.config) + sum(self.arch.extra(self.config).values()) + self.arch.unrouted(self.config)

    @property
    def params_active(self) -> int:
        """Parameters a token's matmuls, biases and norms use (the input embedding is a lookup, as in
        costmodel.params_compute): for a mixture of experts, the model card's "active" count."""
        from costlaw.costmodel.costs import params_compute

        return params_compute(self.config) + sum(self.arch.extra(self.config).values())
