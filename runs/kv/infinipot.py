"""InfiniPot (Kim et al., EMNLP 2024): training-free continual context distillation in a fixed pot.

The pot is the cache: M = the policy's kept tokens (`budget`, or `keep` of the context the cache is made for)
slots per layer. Input streams into the pot in chunks that fill it exactly; when it is full and more input
arrives, the pot is distilled to C = max(1, round(`compress`·M)) tokens, and streaming continues. So the cache
never holds more than M tokens (plus the catalyst block while it compacts) however long the input grows.

Compaction scores every pot token twice:
- NuC, novelty under compression: the token's cross-entropy −log P(x_t | what the pot held when x_t was read),
  taken from the logits the model computed while streaming (no extra pass). One score per token, shared by
  every layer and head; the first token of the input has none (0).
- CaP, catalyst-prompt attention: a fixed block of catalyst tokens is read after the pot (attending to it);
  each layer's attention from the catalyst queries to each pot token, summed over the catalyst and over the
  KV head's query group, is that token's "future importance" for the head.
Selection per layer and KV head: the round(`novelty`·C) tokens of highest NuC first, then the rest of C by
CaP among the others. The catalyst's own K/V are dropped with the evicted tokens and its tokens leave no mark
on the sequence (`cache.seen` is restored). Then CR-RoPE: kept tokens get consecutive positions 0..C−1 and the
next token position C (positions re-assigned after each compaction).

Deviation, flagged: the paper's catalyst is an instruction ("summarize ...") for instruction-tuned 7-8B models.
The small non-instruct LMs trained here (code corpora) cannot follow instructions, so the catalyst is a fixed,
generic recap-style text block in the corpus's own register (`CATALYST`), encoded with the run's tokenizer
(without one: its UTF-8 bytes mod the vocabulary). It still asks the model, in its own language, what to carry
forward; the research notes allow a fixed generic prompt for this case.

Between compactions, a chunk scored with `extend` (the harness's continuation, one call so its tokens see the
whole compressed context) can overflow the pot; that overflow is cut by the last compaction's CaP scores,
tokens that arrived since being kept first (newest first).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from costlaw.runs.kv.base import Policy, attention_mass

CATALYST = "\n# Recap of the key names and values above:\n"
ARRIVED = 1e6  # score of a token that arrived since the last compaction (above any CaP score)


def catalyst_ids(tokenizer, vocab_size: int) -> list[int]:
    if tokenizer is not None:
        return list(tokenizer.encode(CATALYST))
    return [b % vocab_size for b in CATALYST.encode("utf-8")]


class InfiniPot(Policy):
    method = "infinipot"
    repositions = True
    slot_fields = ("score", "novelty")

    def __init__(self, cfg, module=None, tokenizer=None):
        super().__init__(cfg, module, tokenizer)
        self.catalyst = catalyst_ids(tokenizer, cfg.vocab_size)

    def reset(self, cache):
        super().reset(cache)
        self.M = self.capacity(cache)
        self.C = max(1, round(self.options["compress"] * self.M))
        self.last_logp = None  # log-probabilities after the last real token (for the next token's NuC)
        self.compacting = None  # sequence index of the catalyst's first token while compacting
        self.compactions = 0

    # ------------------------------------------------------------------ streaming
    def prefill(self, model, idx, cache, last_only=False):
        outs, i, P = [], 0, idx.shape[1]
        while i < P:
            room = self.M - self.held(cache)
            if room <= 0:
                self.compact(model, cache)
                continue
            outs.append(self.stream(model, idx[:, i:i + room], cache))
            i += room
        out = torch.cat(outs, 1)
        return out[:, -1:] if last_only else out

    def decode(self, model, tok, cache):
        if self.held(cache) >= self.M:
            self.compact(model, cache)
        return self.stream(model, tok.reshape(-1, 1), cache)

    def extend(self, model, idx, cache):
        return self.stream(model, idx, cache)

    def stream(self, model, idx, cache):
        """Read real tokens (no compaction) and record their novelty from the logits."""
        logits = self.call(model, idx, cache)
        logp = F.log_softmax(logits.float(), -1)
        nll = torch.zeros(idx.shape, device=idx.device, dtype=torch.float64)
        if idx.shape[1] > 1:
            nll[:, 1:] = -logp[:, :-1].gather(-1, idx[:, 1:, None]).squeeze(-1).double()
        if self.last_logp is not None:
            nll[:, 0] = -self.last_logp.gather(-1, idx[:, :1]).squeeze(-1).double()
        self.last_logp = logp[:, -1]
        seq0 = cache.seen - idx.shape[1]
        for layer, lc in enumerate(cache.layers):
            off = lc.seq.long() - seq0
            fresh = (off >= 0) & (off < idx.shape[1])
            vals = nll[:, None].expand(-1, lc.seq.shape[1], -1).gather(-1, off.clamp(0, idx.shape[1] - 1))
            self.fields["novelty"][layer] = torch.where(fresh, vals, self.fields["novelty"][layer])
        return logits

    # ------------------------------------------------------------------ compaction
    def compact(self, model, cache):
        """Distil the pot to C tokens: read the catalyst (its hook selects each layer), then drop its trace."""
        seen, B = cache.seen, cache.batch
        ids = torch.tensor(self.catalyst, device=cache.layers[0].k.device).expand(B, -1)
        self.compacting = seen
        try:
            self.call(model, ids, cache, last_only=True)
        finally:
            self.compacting = None
        cache.seen = seen
        self.compactions += 1

    def new_scores(self, layer, q, k, v, lc):
        seq = torch.arange(self.seq0, self.seq0 + q.shape[2], device=q.device, dtype=torch.float64)
        return (ARRIVED + seq)[None, None].expand(q.shape[0], lc.k.shape[1], -1)

    def hook(self, layer, q, k, v, lc):
        if self.compacting is None:
            return super().hook(layer, q, k, v, lc)
        self.peak_kv_bytes = max(self.peak_kv_bytes, self.cache.nbytes())
        self._align(layer, lc)
        m = q.shape[2]
        catalyst = lc.seq >= self.compacting
        pot = lc.valid & ~catalyst
        cap = attention_mass(lc, q, torch.arange(self.compacting, self.compacting + m, device=q.device)).double()
        nuc = self.fields["novelty"][layer]
        c = min(self.C, int(pot.sum(-1).min()))
        n_nuc = min(c, round(self.options["novelty"] * c))
        first = nuc.masked_fill(~pot, float("-inf")).topk(n_nuc, dim=-1).indices
        rest_ok = pot.clone().scatter_(-1, first, False)
        rest = cap.masked_fill(~rest_ok, float("-inf")).topk(c - n_nuc, dim=-1).indices
        self.scores[layer] = cap  # the fallback between compactions ranks compacted tokens by CaP
        self.select(layer, lc, torch.cat([first, rest], -1))
