"""InfiniPot (Kim et al., EMNLP 2024): training-free continual context distillation in a fixed pot.

The pot is the cache: M = the policy's kept tokens (`budget`, or `keep` of the context the cache is made for)
slots per layer. Input streams into the pot in chunks that fill it exactly; when it is full and more input
arrives, the pot is distilled to C = min(M − 1, max(1, round(`compress`·M))) tokens, and streaming continues. So
the cache never holds more than M tokens (plus the catalyst block while it compacts) however long the input grows.
C stays below M because a compaction that frees no slot could never make room for the next token (`compress` = 1,
or a pot of one token, would loop forever); a one-token pot is emptied, so each token sees only itself.

Compaction scores every pot token twice:
- NuC, novelty under compression: the token's cross-entropy −log P(x_t | what the pot held when x_t was read),
  taken from the logits the model computed while streaming (no extra pass). One score per token, shared by
  every layer and head; the first token of the input has none (0).
- CaP, catalyst-prompt attention: the catalyst prompt (`CATALYST`, an instruction to summarize and remember) is
  read after the pot (attending to it); each layer's attention from the catalyst queries to each pot token, summed
  over the catalyst and over the KV head's query group, is that token's "future importance" for the head.
Selection per layer and KV head: the round(`novelty`·C) tokens of highest NuC first, then the rest of C by
CaP among the others. The catalyst's own K/V are dropped with the evicted tokens and its tokens leave no mark
on the sequence (`cache.seen` is restored). Then CR-RoPE: kept tokens get consecutive positions 0..C−1 and the
next token position C (positions re-assigned after each compaction).

The catalyst follows the paper: a generic instruction appended before each compaction, asking the model to
summarize the context and keep what matters, so that the pot tokens it attends to are those a later request would
need. Deviations, flagged: the wording is ours (our research notes on the paper, hybrid-compressed.md section 4,
give only its gist, "summarize…", not its text), and the paper ran it on instruction-tuned 7-8B models, while the
small LMs trained here are not instruction-tuned; for them it is plain English text of the kind the passkey probe
uses. It is encoded with the run's tokenizer; without one (the harness passes none unless the retrieval probe
runs) as its UTF-8 bytes mod the vocabulary, which for the byte tokenizer (257 ids) are exactly its tokens.

Cost: each compaction runs the m catalyst tokens through the whole model (every layer's projections and MLP, not
only attention), i.e. m extra forward tokens per M − C streamed tokens.

Between compactions, a chunk scored with `extend` (the harness's continuation, one call so its tokens see the
whole compressed context) can overflow the pot; that overflow is cut by the last compaction's CaP scores,
tokens that arrived since being kept first (newest first).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from costlaw.runs.kv.base import Policy, attention_mass

# The catalyst prompt (CaP) of InfiniPot (arXiv 2410.01518): our wording of the paper's generic "summarize…"
# instruction (its exact text is not in our notes). The leading blank line sets it apart from streamed text that
# may stop mid-line. Its length m is paid at every compaction (m forward tokens, m extra slots in one layer), so it
# is kept short.
CATALYST = "\n\nSummarize the text above and remember its key facts.\n"
ARRIVED = 1e6  # score of a token that arrived since the last compaction (above any CaP score)


def catalyst_ids(tokenizer, vocab_size: int) -> list[int]:
    """`CATALYST` as token ids: the run's tokenizer's, else its UTF-8 bytes (the byte tokenizer's ids), mod the
    vocabulary so that a model with fewer ids (tests' tiny models) still reads a fixed block."""
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
        self.C = min(self.M - 1, max(1, round(self.options["compress"] * self.M)))
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
