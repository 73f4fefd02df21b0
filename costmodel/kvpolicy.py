"""KV-cache policies applied at inference: which method, and how many tokens the cache keeps.

A policy caps every layer's cache at `kept_tokens(T)`: a keep fraction of the context
(rounded to the nearest whole token, halves up, at least 1) or a fixed token budget (never more than
the context). A layer whose own pattern already holds fewer keys keeps its own count.

Method options live in one table, `METHODS`, with their defaults. Options that add parameters
(Locret's retaining heads, KV-Distill's scorer and LoRA) are priced by `policy_params` /
`policy_flops_per_token`; runs/kv builds exactly those modules, and tests compare the two (parameters by
`sum(p.numel())`, FLOPs by torch's FlopCounterMode on the modules). runs/kv/*.py documents each option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from costlaw.costmodel.core.errors import ConfigError

# method -> {option: default}. Options are what changes the cache or the policy's own parameters.
METHODS: dict[str, dict[str, float | int]] = {
    "streaming": {"sink": 4},  # StreamingLLM: attention sinks + most recent tokens
    "snapkv": {"window": 32, "kernel": 5},  # observation window queries, pooled scores
    "h2o": {"recent": 0.5},  # share of kept slots given to the most recent tokens
    "random": {"seed": 0, "recent": 0.0},  # uniform eviction: the floor
    "locret": {"hidden": 256, "chunk": 256, "stabilizers": 64, "local": 32},  # retaining heads
    # scorer on the input of block `scorer_layer` + LoRA on kept tokens; `recent` share of kept slots goes to the
    # most recent tokens; `lam` weighs KL(teacher||student) against KL(student||teacher) in training
    "kv_distill": {"rank": 8, "alpha": 16.0, "scorer_layer": 1, "recent": 0.5, "lam": 0.5},
    "infinipot": {"compress": 0.5, "novelty": 0.5},  # pot of `budget` tokens compressed to compress*budget
}
TRAINED_METHODS = ("locret", "kv_distill")  # methods with parameters of their own (trained with the backbone frozen)


@dataclass(frozen=True)
class KVPolicy:
    method: str
    keep: float | None = None
    budget: int | None = None
    options: tuple[tuple[str, float | int], ...] = field(default=())

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError("kv_policy.method", f"unknown method {self.method!r}; "
                                                  f"choose one of {', '.join(sorted(METHODS))}")
        if (self.keep is None) == (self.budget is None):
            raise ConfigError("kv_policy", "give exactly one of keep (a fraction) or budget (tokens)")
        if self.keep is not None:
            if isinstance(self.keep, bool) or not isinstance(self.keep, (int, float)) or not 0 < self.keep <= 1:
                raise ConfigError("kv_policy.keep", f"must be a fraction in (0, 1], got {self.keep!r}")
            object.__setattr__(self, "keep", float(self.keep))
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 1):
            raise ConfigError("kv_policy.budget", f"must be a whole number of tokens >= 1, got {self.budget!r}")
        opts = dict(self.options)
        allowed = METHODS[self.method]
        for k in opts:
            if k not in allowed:
                raise ConfigError(f"kv_policy.{k}", f"not an option of {self.method}; "
                                                    f"options: {', '.join(allowed) or 'none'}")
        merged = {k: type(v)(opts.get(k, v)) for k, v in allowed.items()}
        _check_options(self.method, merged)
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


def _check_options(method: str, o: dict) -> None:
    def frac(name, lo_open=False):
        v = o[name]
        ok = (0 < v <= 1) if lo_open else (0 <= v <= 1)
        if not ok:
            raise ConfigError(f"kv_policy.{name}", f"must be a fraction in {'(0' if lo_open else '[0'}, 1], got {v}")

    def pos(name, lo=1):
        if o[name] < lo:
            raise ConfigError(f"kv_policy.{name}", f"must be >= {lo}, got {o[name]}")

    if method == "streaming":
        pos("sink", 0)
    elif method == "snapkv":
        pos("window")
        pos("kernel")
    elif method in ("h2o", "random"):
        frac("recent")
    elif method == "locret":
        for n in ("hidden", "chunk"):
            pos(n)
        for n in ("stabilizers", "local"):
            pos(n, 0)
    elif method == "kv_distill":
        pos("rank")
        frac("recent")
        frac("lam")
        if not o["alpha"] > 0:
            raise ConfigError("kv_policy.alpha", f"must be > 0, got {o['alpha']}")
    elif method == "infinipot":
        frac("compress", lo_open=True)
        frac("novelty")


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
