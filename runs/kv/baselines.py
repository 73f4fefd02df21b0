"""Training-free eviction baselines: StreamingLLM, SnapKV-style, H2O-style and random.

All four compress a prompt after it has been read (the prompt attends to itself in full, then each layer is
cut to its capacity: the kvpress protocol) and keep evicting while decoding, so the cache never holds more
than the policy's kept tokens between calls.

- `streaming` (StreamingLLM, Xiao et al.): the first `sink` tokens (attention sinks) and the most recent ones;
  positions are re-assigned within the cache (the paper's pos_shift), so the kept tokens sit at consecutive
  positions however long the input grows.
- `snapkv` (SnapKV, Li et al.): the attention that the last `window` queries (the observation window) give each
  cached token, summed over the window and over each KV head's query group, average-pooled over `kernel`
  neighbouring tokens, then top-k per KV head; the window itself is always kept. While decoding, the window is
  the last `window` queries seen, so each overflow is decided the same way.
- `h2o` (H2O, Zhang et al.): every token's accumulated attention (summed over all queries so far and over the
  group); the `recent` share of the kept slots goes to the most recent tokens, the rest to the heavy hitters.
- `random`: uniform random eviction (a seeded score per token and KV head), with an optional `recent` share.
"""

from __future__ import annotations

import torch

from costlaw.runs.kv.base import PROTECT, Policy, attention_mass, pool_in_sequence_order, recent_mask


class StreamingLLM(Policy):
    method = "streaming"
    repositions = True

    def priority(self, layer, lc, target):
        seq = lc.seq.double()
        sinks = (lc.seq >= 0) & (lc.seq < self.options["sink"])
        return torch.where(sinks, 2 * PROTECT - seq, seq)  # sinks first (the earliest), then the most recent


class SnapKV(Policy):
    method = "snapkv"

    def reset(self, cache):
        super().reset(cache)
        self.window_q = [None] * len(cache)  # the last `window` queries of each layer, and their sequence indices
        self.window_seq = [None] * len(cache)

    def observe(self, layer, q, k, v, lc):
        w, n = self.options["window"], q.shape[2]
        seq = torch.arange(self.seq0, self.seq0 + n, device=q.device)
        if self.window_q[layer] is not None and n < w:
            q = torch.cat([self.window_q[layer], q], 2)
            seq = torch.cat([self.window_seq[layer], seq])
        self.window_q[layer], self.window_seq[layer] = q[:, :, -w:].detach(), seq[-w:]

    def priority(self, layer, lc, target):
        mass = attention_mass(lc, self.window_q[layer], self.window_seq[layer])
        return pool_in_sequence_order(lc, mass, self.options["kernel"])

    def protected(self, layer, lc, target):
        return recent_mask(lc, min(self.options["window"], target))


class H2O(Policy):
    method = "h2o"

    def observe(self, layer, q, k, v, lc):
        seq = torch.arange(self.seq0, self.seq0 + q.shape[2], device=q.device)
        self.scores[layer] = self.scores[layer] + attention_mass(lc, q, seq).double()

    def protected(self, layer, lc, target):
        return recent_mask(lc, round(self.options["recent"] * target))


class RandomEviction(Policy):
    method = "random"

    def reset(self, cache):
        super().reset(cache)
        self.generator = torch.Generator().manual_seed(int(self.options["seed"]))

    def new_scores(self, layer, q, k, v, lc):
        B, n_kv, n = q.shape[0], lc.k.shape[1], q.shape[2]
        return torch.rand(B, n_kv, n, generator=self.generator, dtype=torch.float64).to(q.device)

    def protected(self, layer, lc, target):
        return recent_mask(lc, round(self.options["recent"] * target))
