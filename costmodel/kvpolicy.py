"""KV-cache policies applied at inference: which method, and how many tokens the cache keeps.

A policy caps every layer's cache at `kept_tokens(T)`: a keep fraction of the context
(rounded to the nearest whole token, halves up, at least 1) or a fixed token budget (never more than
the context). A layer whose own pattern already holds fewer keys keeps its own count.

Method options live in one table, `METHODS`, with their defaults and ranges. Options that add parameters
(Locret's retaining heads, KV-Distill's scorer and LoRA) are priced by `policy_params` /
`policy_flops_per_token`; runs/kv builds exactly those modules, and tests compare the two (parameters by
`sum(p.numel())`, FLOPs by torch's FlopCounterMode on the modules). runs/kv/*.py documents each option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.core.validate import bounded, check, conform


@dataclass(frozen=True)
class Option:
    """A method option: its default (whose type, int or float, is the option's) and its range."""

    default: int | float
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def check(self, field: str, value):
        return check(field, value, type(self.default), lo=self.lo, hi=self.hi, lo_open=self.lo_open)


def _fraction(default: float, lo_open: bool = False) -> Option:
    return Option(default, 0, 1, lo_open)


# method -> {option: Option}. Options are what changes the cache or the policy's own parameters.
METHODS: dict[str, dict[str, Option]] = {
    "streaming": {"sink": Option(4, lo=0)},  # StreamingLLM: attention sinks + most recent tokens
    "snapkv": {"window": Option(32, lo=1), "kernel": Option(5, lo=1)},  # observation window queries, pooled scores
    "h2o": {"recent": _fraction(0.5)},  # share of kept slots given to the most recent tokens
    "random": {"seed": Option(0, lo=0), "recent": _fraction(0.0)},  # uniform eviction: the floor
    "locret": {"hidden": Option(256, lo=1), "chunk": Option(256, lo=1), "stabilizers": Option(64, lo=0),
               "local": Option(32, lo=0)},  # retaining heads
    # scorer on the input of block `scorer_layer` + LoRA on kept tokens; `recent` share of kept slots goes to the
    # most recent tokens; `lam` weighs KL(teacher||student) against KL(student||teacher) in training
    "kv_distill": {"rank": Option(8, lo=1), "alpha": Option(16.0, lo=0, lo_open=True), "scorer_layer": Option(1),
                   "recent": _fraction(0.5), "lam": _fraction(0.5)},
    # a pot of `budget` tokens compressed to compress*budget
    "infinipot": {"compress": _fraction(0.5, lo_open=True), "novelty": _fraction(0.5)},
}
TRAINED_METHODS = ("locret", "kv_distill")  # methods with parameters of their own (trained with the backbone frozen)


@dataclass(frozen=True)
class KVPolicy:
    method: str = bounded(choices=METHODS)
    keep: float | None = bounded(None, lo=0, hi=1, lo_open=True)  # a fraction of the context
    budget: int | None = bounded(None, lo=1)  # tokens
    options: tuple[tuple[str, float | int], ...] = field(default=())

    def __post_init__(self):
        conform(self, "kv_policy")
        if (self.keep is None) == (self.budget is None):
            raise ConfigError("kv_policy", "give exactly one of keep (a fraction) or budget (tokens)")
        opts = dict(self.options)
        allowed = METHODS[self.method]
        for k in opts:
            if k not in allowed:
                raise ConfigError(f"kv_policy.{k}", f"not an option of {self.method}; "
                                                    f"options: {', '.join(allowed) or 'none'}")
        merged = {k: o.check(f"kv_policy.{k}", opts.get(k, o.default)) for k, o in allowed.items()}
        object.__setattr__(self, "options", tuple(sorted(merged.items())))

    def option(self, name: str):
        return dict(self.options)[name]

    def kept_tokens(self, T: int) -> int:
        """Tokens a cache holds at context T under this policy."""
        if self.keep is not None:
            return max(1, min(T, math.floor(self.keep * T + 0.5)))
        return min(T, self.budget)

    def to_dict(self) -> dict:
        d: dict = {"method": self.method}
        if self.keep is not None:
            d["keep"] = self.keep
        else:
            d["budget"] = self.budget
        d.update(dict(self.options))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> KVPolicy:
        if not isinstance(d, dict):
            raise ConfigError("kv_policy", f"must be a table like {{method = \"snapkv\", keep = 0.1}}, got {d!r}")
        d = dict(d)
        method = d.pop("method", None)
        if method is None:
            raise ConfigError("kv_policy.method", "missing; name a method, e.g. method = \"snapkv\"")
        keep, budget = d.pop("keep", None), d.pop("budget", None)
        return cls(method=method, keep=keep, budget=budget, options=tuple(sorted(d.items())))


def scorer_blocks(cfg) -> int:
    """KV-Distill: the blocks run before its scorer (the scorer reads the input of block `scorer_layer`;
    0 = the token embeddings, negative counts from the last block)."""
    n, L = cfg.kv_policy.option("scorer_layer"), cfg.n_layers
    if not -L <= n < L:
        raise ConfigError("kv_policy.scorer_layer", f"{n} is not a block of this {L}-layer model; use 0..{L - 1} "
                                                    f"or -{L}..-1")
    return n % L


def policy_params(cfg) -> int:
    """Parameters the policy adds to the model (0 for training-free policies)."""
    p = cfg.kv_policy
    if p is None:
        return 0
    d, L = cfg.d_model, cfg.n_layers
    q, kv = cfg.q_dim, cfg.kv_dim
    if p.method == "locret":
        # per layer: fc1 (q + 2 kv features -> hidden), fc2 (hidden -> one score per KV head), no biases
        h = p.option("hidden")
        return L * ((q + 2 * kv) * h + h * cfg.n_kv_heads)
    if p.method == "kv_distill":
        # a linear scorer (d -> 1, with bias) on one layer's hidden state, LoRA A/B on q, k, v, o of every layer
        r = p.option("rank")
        lora = r * (d + q) + 2 * r * (d + kv) + r * (q + d)
        return (d + 1) + L * lora
    return 0


def policy_flops_per_token(cfg) -> int:
    """Forward FLOPs the policy adds per prompt token (2 per multiply-accumulate, like the rest of costmodel:
    bias adds, activations and norms are not counted).

    - locret: the retaining heads, on every token (prompt and decoded: eviction continues while decoding);
    - kv_distill: the scorer and the LoRA adapters on every prompt token, plus the pre-pass that computes the
      scorer's input: the matmuls of the `scorer_blocks` blocks before it (their attention, 4·d_h·n_h per key,
      depends on the context and is not included). All of it runs once, on the prompt: see
      `policy_decode_flops_per_token`;
    - training-free methods: 0. Their scores are attention weights over the cached slots (H2O's new queries,
      SnapKV's observation window, InfiniPot's catalyst block), i.e. attention FLOPs, which depend on the
      context and are not priced here.
    """
    p = cfg.kv_policy
    if p is None:
        return 0
    if p.method == "kv_distill":
        d, q, kv = cfg.d_model, cfg.q_dim, cfg.kv_dim
        block = d * q + 2 * d * kv + q * d + 3 * d * cfg.ffn_dim
        return 2 * (policy_params(cfg) - 1) + 2 * scorer_blocks(cfg) * block
    return 2 * policy_params(cfg)


def policy_decode_flops_per_token(cfg) -> int:
    """Forward FLOPs the policy adds per decoded token: Locret's heads score every new token; KV-Distill's
    scorer, adapters and pre-pass act on the prompt only."""
    p = cfg.kv_policy
    if p is None or p.method == "kv_distill":
        return 0
    return policy_flops_per_token(cfg)
