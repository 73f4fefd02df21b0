"""The KV-policy interface: the decode path a compressed model runs, and the eviction machinery policies share.

Decode path. `PolicyModel(model, policy)` has the model's own decode API — `new_cache(batch, context)`,
`prefill(idx, cache, last_only)`, `decode(tok, cache)` — so anything written against a model's cache (e.g.
runs.evaluate's passkey probe) runs a compressed model unchanged. `extend(idx, cache)` scores one chunk
against the compressed cache (the harness's continuation: every continuation token sees the compressed
context and the continuation before it). The cache is sized by costmodel for the policy's config
(`kv_tokens_per_layer`), so `cache.nbytes() == costmodel.kv_cache_bytes(cfg, context)` after every call.

Policy. A `Policy` holds one sequence's state (`reset(cache)`, done by `PolicyModel.new_cache`) and runs
model calls with its `hook` (the model calls it once per layer, after the layer's attention, with the new
tokens' K/V already stored; the layer may hold more than its capacity while the hook runs). Eviction is shared:
every layer keeps per-slot fields (`score`, and what a policy adds in `slot_fields`) that follow their slot
through `select`; when a layer holds more than its target, the policy keeps the `target` slots of highest
`priority` per sequence and KV head, protected tokens first (the newest protected tokens win a tie).
Subclasses say how new tokens are scored (`new_scores`), how scores change as tokens arrive (`observe`),
which tokens are protected (`protected`), and how a prompt is fed (`prefill`: at once, in chunks, in a pot).

Positions. Policies with `repositions` (StreamingLLM, InfiniPot) re-assign RoPE positions inside the cache
after every call that evicted: each layer's kept tokens get consecutive positions ending just before
`cache.position`, which becomes the most tokens any layer holds (`LayerCache.reposition` rotates the stored
keys by the difference). Other policies keep the positions tokens arrived with.

Exactness. A policy whose cache holds the whole input (keep = 1, or a budget >= context) never evicts and
feeds the prompt in one call, so its cache and logits are the full cache's, bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from costlaw.costmodel import ModelConfig, kv_tokens_per_layer
from costlaw.runs.models.kv_cache import KVCache, LayerCache

PROTECT = 1e12  # priority of a protected slot, plus its sequence index (float64 holds both exactly)
_ATTN_BLOCK = 256  # queries per block when summing attention weights (bounds the [n, slots] buffer)


def make_cache(model, cfg: ModelConfig, batch: int, context: int, device=None, dtype=None) -> KVCache:
    """A cache for `model` shaped by `cfg` (the model's config with a KV policy): per layer
    `costmodel.kv_tokens_per_layer(cfg, context)` slots, exactly what `Transformer.new_cache` builds for a
    model built from `cfg`."""
    if cfg.replace(kv_policy=None) != model.cfg.replace(kv_policy=None):
        raise ValueError("kv policy: its config describes a different backbone than the model's")
    device = device if device is not None else model.embed.weight.device
    dtype = dtype or model.embed.weight.dtype
    return KVCache([LayerCache(spec, slots, batch, cfg.n_kv_heads, cfg.head_dim, cfg.rope_theta, device, dtype)
                    for spec, slots in zip(cfg.layout, kv_tokens_per_layer(cfg, context))])


def attention_mass(lc: LayerCache, q: torch.Tensor, q_seq: torch.Tensor) -> torch.Tensor:
    """[B, n_kv, slots] float32: the model's attention weights of queries q [B, n_h, n, d_h] (after RoPE) at
    sequence indices q_seq [n] over the layer's slots, summed over the queries and over each KV head's group
    of query heads."""
    B, n_h, n, _ = q.shape
    n_kv = lc.k.shape[1]
    out = torch.zeros(B, n_kv, lc.slots, device=lc.k.device, dtype=torch.float32)
    for i in range(0, n, _ATTN_BLOCK):
        w = lc.attention(q[:, :, i:i + _ATTN_BLOCK].float(), q_seq[i:i + _ATTN_BLOCK])
        out += w.sum(2).view(B, n_kv, n_h // n_kv, -1).sum(2)
    return out


def recent_mask(lc: LayerCache, r: int) -> torch.Tensor:
    """[B, n_kv, slots]: the r most recent tokens (largest sequence index) each head holds."""
    if r <= 0:
        return torch.zeros_like(lc.valid)
    kth = lc.seq.topk(min(r, lc.slots), dim=-1).values[..., -1:]
    return lc.valid & (lc.seq >= kth)


def seq_order(lc: LayerCache) -> torch.Tensor:
    """[B, n_kv, slots] slot indices in sequence order (empty slots last)."""
    key = torch.where(lc.valid, lc.seq, torch.iinfo(torch.int32).max)
    return key.argsort(dim=-1)


class Policy:
    method = ""
    repositions = False
    slot_fields: tuple[str, ...] = ("score",)

    def __init__(self, cfg: ModelConfig, module: torch.nn.Module | None = None, tokenizer=None):
        if cfg.kv_policy is None or cfg.kv_policy.method != self.method:
            raise ValueError(f"kv policy: {type(self).__name__} needs a config with kv_policy method {self.method!r}")
        self.cfg, self.kv, self.module = cfg, cfg.kv_policy, module
        self.options = dict(cfg.kv_policy.options)
        self.cache: KVCache | None = None

    # ------------------------------------------------------------------ one sequence's state
    def reset(self, cache: KVCache) -> None:
        self.cache = cache
        self.fields = {name: [None] * len(cache) for name in self.slot_fields}
        self.target: int | None = None  # keep at most this many slots per layer (None: the capacity)
        self.protect = 0  # the `protect` most recent tokens are never evicted
        self.evicted = False
        self.peak_kv_bytes = cache.nbytes()  # the most K/V bytes held at once, overflow included
        self.seq0 = 0  # sequence index of the current call's first token

    @property
    def scores(self) -> list:
        return self.fields["score"]

    def capacity(self, cache: KVCache) -> int:
        """The policy's slot cap (full layers; a sparse layer may hold fewer by its pattern)."""
        return max(layer.capacity for layer in cache.layers)

    @staticmethod
    def held(cache: KVCache) -> int:
        return max(layer.size for layer in cache.layers)

    # ------------------------------------------------------------------ the decode path
    def call(self, model, idx: torch.Tensor, cache: KVCache, last_only: bool = False) -> torch.Tensor:
        """One model call with this policy's hook, then positions re-assigned if the policy does that."""
        if cache is not self.cache:
            raise ValueError("kv policy: this cache was not made by PolicyModel.new_cache for this policy")
        self.seq0 = cache.seen
        logits = model.prefill(idx, cache, hook=self.hook, last_only=last_only)
        self.finish(cache)
        return logits

    def prefill(self, model, idx, cache, last_only=False):
        return self.call(model, idx, cache, last_only)

    def decode(self, model, tok, cache):
        return self.call(model, tok.reshape(-1, 1), cache)

    def extend(self, model, idx, cache):
        return self.call(model, idx, cache)

    # ------------------------------------------------------------------ what the model calls
    def hook(self, layer: int, q, k, v, lc: LayerCache) -> None:
        self.peak_kv_bytes = max(self.peak_kv_bytes, self.cache.nbytes())
        self._align(layer, lc)
        new = self.new_scores(layer, q, k, v, lc)
        self._assign(layer, lc, "score", new if new is not None else q.new_zeros(q.shape[0], lc.k.shape[1],
                                                                                   q.shape[2]))
        self.observe(layer, q, k, v, lc)
        target = lc.capacity if self.target is None else min(self.target, lc.capacity)
        if lc.slots > lc.capacity or lc.size > target:
            self.evict(layer, lc, target)

    # ------------------------------------------------------------------ what subclasses change
    def new_scores(self, layer, q, k, v, lc) -> torch.Tensor | None:
        """[B, n_kv, n] scores of the call's n new tokens (None: zeros)."""
        return None

    def observe(self, layer, q, k, v, lc) -> None:
        """Update slot fields from the new queries (H2O accumulates attention, SnapKV keeps its window)."""

    def protected(self, layer, lc, target) -> torch.Tensor:
        return recent_mask(lc, min(self.protect, target))

    def priority(self, layer, lc, target) -> torch.Tensor:
        return self.scores[layer]

    # ------------------------------------------------------------------ shared machinery
    def evict(self, layer: int, lc: LayerCache, target: int) -> None:
        prio = self.priority(layer, lc, target).double()
        prio = torch.where(self.protected(layer, lc, target), PROTECT + lc.seq.double(), prio)
        prio = prio.masked_fill(~lc.valid, float("-inf"))
        self.select(layer, lc, prio.topk(min(target, lc.slots), dim=-1).indices)

    def select(self, layer: int, lc: LayerCache, keep: torch.Tensor) -> None:
        """Keep slots `keep` [B, n_kv, k], stored in sequence order; slot fields follow their slots."""
        key = torch.where(lc.seq.gather(-1, keep) >= 0, lc.seq.gather(-1, keep), torch.iinfo(torch.int32).max)
        keep = keep.gather(-1, key.argsort(dim=-1))
        lc.select(keep)
        for name in self.slot_fields:
            f = self.fields[name][layer]
            kept = f.gather(-1, keep)
            self.fields[name][layer] = torch.cat([kept, kept.new_zeros(*kept.shape[:2], lc.slots - kept.shape[-1])],
                                                 -1)
        self.evicted = True

    def _align(self, layer: int, lc: LayerCache) -> None:
        """Slot fields as wide as the layer's storage (it grows while a hook handles an overflow)."""
        B, H, S = lc.seq.shape
        for name in self.slot_fields:
            f = self.fields[name][layer]
            if f is None:
                f = torch.zeros(B, H, S, device=lc.seq.device, dtype=torch.float64)
            elif f.shape[-1] < S:
                f = torch.cat([f, f.new_zeros(B, H, S - f.shape[-1])], -1)
            self.fields[name][layer] = f

    def _assign(self, layer: int, lc: LayerCache, name: str, new: torch.Tensor) -> None:
        """Write values of the current call's new tokens ([B, n_kv, n] or [B, n]) into their slots."""
        n = new.shape[-1]
        if new.dim() == 2:
            new = new[:, None].expand(-1, lc.seq.shape[1], -1)
        off = lc.seq.long() - self.seq0
        fresh = (off >= 0) & (off < n)
        vals = new.to(torch.float64).gather(-1, off.clamp(0, n - 1))
        self.fields[name][layer] = torch.where(fresh, vals, self.fields[name][layer])

    def finish(self, cache: KVCache) -> None:
        """After a call: re-assign positions in the cache if this policy does and something was evicted."""
        if self.repositions and self.evicted:
            P = max(int(layer.valid.sum(-1).max()) for layer in cache.layers)
            for lc in cache.layers:
                newest_first = torch.where(lc.valid, lc.seq, -1).argsort(dim=-1, descending=True)
                rank = torch.empty_like(newest_first)
                rank.scatter_(-1, newest_first, torch.arange(lc.slots, device=rank.device).expand_as(rank))
                lc.reposition(torch.where(lc.valid, P - 1 - rank, lc.pos.long()))
            cache.position = P
        self.evicted = False


def pool_in_sequence_order(lc: LayerCache, scores: torch.Tensor, kernel: int) -> torch.Tensor:
    """Average-pool scores [B, n_kv, slots] over neighbouring tokens (in sequence order, not slot order)."""
    if kernel <= 1:
        return scores
    order = seq_order(lc)
    s = scores.gather(-1, order)
    B, H, S = s.shape
    pooled = F.avg_pool1d(s.reshape(B * H, 1, S), kernel, stride=1, padding=kernel // 2,
                          count_include_pad=False)[..., :S].reshape(B, H, S)
    return torch.empty_like(pooled).scatter_(-1, order, pooled)


class PolicyModel:
    """A dense model under a KV policy, with the model's decode API (new_cache / prefill / decode) plus
    `extend`. One PolicyModel decodes one cache at a time: `new_cache` resets the policy's state."""

    def __init__(self, model, policy: Policy):
        self.model, self.policy = model, policy
        self.cfg = policy.cfg

    def new_cache(self, batch: int, context: int, device=None, dtype=None) -> KVCache:
        cache = make_cache(self.model, self.cfg, batch, context, device, dtype)
        self.policy.reset(cache)
        return cache

    def prefill(self, idx: torch.Tensor, cache: KVCache, last_only: bool = False) -> torch.Tensor:
        return self.policy.prefill(self.model, idx, cache, last_only)

    def decode(self, tok: torch.Tensor, cache: KVCache) -> torch.Tensor:
        return self.policy.decode(self.model, tok, cache)

    def extend(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        return self.policy.extend(self.model, idx, cache)


class FullCacheModel:
    """The reference behind the same API: the full cache (the layout's own slots for the context, no policy).
    A chunk read past the context (`extend`, or decoding past it) attends to every cached token and itself,
    and then the oldest tokens leave; so the reference's logits are the full cache's, computed with the same
    shapes and kernels a policy that keeps everything uses (keep = 1 compares bit for bit)."""

    def __init__(self, model):
        self.model = model
        self.cfg = model.cfg.replace(kv_policy=None)

    def new_cache(self, batch, context, device=None, dtype=None):
        return make_cache(self.model, self.cfg, batch, context, device, dtype)

    @staticmethod
    def _drop_oldest(layer, q, k, v, lc):
        if lc.slots > lc.capacity:
            lc.select(seq_order(lc)[..., lc.slots - lc.capacity:])

    def prefill(self, idx, cache, last_only=False):
        return self.model.prefill(idx, cache, hook=self._drop_oldest, last_only=last_only)

    def decode(self, tok, cache):
        return self.model.decode(tok, cache, hook=self._drop_oldest)

    def extend(self, idx, cache):
        return self.model.prefill(idx, cache, hook=self._drop_oldest)
