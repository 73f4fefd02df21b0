"""KV-Distill (Chari et al., 2025): a trained scorer picks the kept tokens of a context, LoRA adapters act on
the kept tokens only, trained against the frozen full-cache teacher.

Module (`KVDistillAdapter`, the policy's parameters): a linear scorer d -> 1 (with bias) on the normed input
of block ℓ = `scorer_layer` (`blocks[ℓ].attn_norm`; ℓ = 0 reads the token embeddings), and LoRA pairs
(rank `rank`, scale `alpha`/rank) on the q, k, v and o projections of every layer. LoRA B matrices start at
zero, so an untrained adapter changes nothing. No official code exists (vnchari/kv-distill is a README);
λ, the rank and the scorer's layer are ours to choose and are options.

Inference (`KVDistill.prefill` into a fresh cache, prompt longer than the capacity c):
1. pre-pass: the frozen backbone's first ℓ blocks over the prompt (no cache; the scorer's input), scorer;
2. kept set: the round(`recent`·c) most recent tokens plus the highest-scored others, c in all — the same
   tokens for every layer and KV head (a RoPE backbone's residual stream carries no position, so recency is
   not something a linear scorer can learn; the recent share supplies it, as SnapKV's window and H2O's recent
   share do);
3. the prompt is read once with the adapters active on the kept positions only; each layer then keeps the
   kept tokens' K/V. The evicted tokens were attended while the prompt was read, so what they carried can be
   distilled into the kept ones — that is what the adapters are trained for.
Later tokens (the continuation, decoded tokens) use the plain backbone; on overflow the kept context token
with the lowest score leaves first, then the oldest later token. When the prompt fits (keep = 1) nothing is
compressed and the adapters stay off, so the cache is the full cache exactly.

Training (`distill_loss`): a window = a prefix read into the cache (and cut) + the tokens read after it in one
call, the harness's protocol (runs/kv/harness.py). Teacher: the frozen backbone over the window (the full
cache). Student: the compressed path above as one differentiable forward — later queries see only the kept
prefix keys (and the later tokens before them), adapters on kept prefix positions; a test checks it equals the
decode path. Loss λ·KL(p‖q) + (1−λ)·KL(q‖p) per prediction after the prefix (p teacher, q student, λ = `lam`).

The scorer's differentiable path. Top-k has no gradient, and the decode path cannot add a per-slot bias to
attention logits (it attends over the cache's slots through a visibility mask), so a Nugget-style
log σ(score) added to the kept keys' logits would train a model that inference does not run. We use a
straight-through logit bias: the continuation queries' logits on kept key j get
b_j = log σ(s_j) − stopgrad(log σ(s_j)), which is zero in the forward (student == inference) and gives
∂L/∂s_j = (1 − σ(s_j)) · Σ_q ∂L/∂logit_qj in the backward: the first-order effect of attending more to token
j, softmax renormalisation included. Evicted tokens get no such gradient, so training draws the kept set by
Gumbel-top-k on the scores (a Plackett–Luce sample): every token is kept now and then, and its score learns
whether it was worth keeping.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from costlaw.costmodel import ModelConfig
from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.kvpolicy import scorer_blocks
from costlaw.runs.kv.base import Policy
from costlaw.runs.models.rope import rope_angles

LATER = 2.0  # score of a token that arrives after the compressed prompt (above every prompt token's)


class LoRA(nn.Module):
    def __init__(self, fan_in: int, fan_out: int, rank: int):
        super().__init__()
        self.a = nn.Linear(fan_in, rank, bias=False)
        self.b = nn.Linear(rank, fan_out, bias=False)
        nn.init.zeros_(self.b.weight)

    def forward(self, x):
        return self.b(self.a(x))


class KVDistillAdapter(nn.Module):
    def __init__(self, cfg: ModelConfig, rank: int, alpha: float):
        super().__init__()
        d = cfg.d_model
        self.n_pre = scorer_blocks(cfg)
        self.scale = alpha / rank
        self.scorer = nn.Linear(d, 1)
        self.q = nn.ModuleList(LoRA(d, cfg.q_dim, rank) for _ in range(cfg.n_layers))
        self.k = nn.ModuleList(LoRA(d, cfg.kv_dim, rank) for _ in range(cfg.n_layers))
        self.v = nn.ModuleList(LoRA(d, cfg.kv_dim, rank) for _ in range(cfg.n_layers))
        self.o = nn.ModuleList(LoRA(cfg.q_dim, d, rank) for _ in range(cfg.n_layers))

    def score_hidden(self, model, h: torch.Tensor) -> torch.Tensor:
        """Scores [B, P] from the hidden states entering block n_pre."""
        x = model.blocks[self.n_pre].attn_norm(h)
        return self.scorer(x.to(self.scorer.weight.dtype)).squeeze(-1).float()

    def score(self, model, idx: torch.Tensor, pos0: int = 0) -> torch.Tensor:
        return self.score_hidden(model, prepass(model, idx, self.n_pre, pos0))

    @contextmanager
    def active(self, model, mask: torch.Tensor):
        """Adapters on while the block runs over tokens [B, T] where `mask` [B, T] is 1 (and off where 0)."""
        def on_qkv(layer, module, inputs, out):
            x = inputs[0].to(self.scorer.weight.dtype)
            delta = torch.cat([self.q[layer](x), self.k[layer](x), self.v[layer](x)], -1)
            return out + (self.scale * delta * mask[..., None].to(delta.dtype)).to(out.dtype)

        def on_o(layer, module, inputs, out):
            delta = self.o[layer](inputs[0].to(self.scorer.weight.dtype))
            return out + (self.scale * delta * mask[..., None].to(delta.dtype)).to(out.dtype)

        handles = []
        for layer, blk in enumerate(model.blocks):
            handles.append(blk.attn.wqkv.register_forward_hook(lambda m, i, o, at=layer: on_qkv(at, m, i, o)))
            handles.append(blk.attn.wo.register_forward_hook(lambda m, i, o, at=layer: on_o(at, m, i, o)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _rope(model, T: int, pos0: int, device, dtype):
    cos, sin = rope_angles(torch.arange(pos0, pos0 + T, device=device)[None], model.cfg.head_dim,
                           model.cfg.rope_theta, torch.float64 if dtype == torch.float64 else torch.float32)
    return cos[:, :, None], sin[:, :, None]  # [1, T, 1, d_h/2], as the model broadcasts them over heads


def prepass(model, idx: torch.Tensor, n_blocks: int, pos0: int = 0) -> torch.Tensor:
    """The hidden states entering block `n_blocks` for a prompt read into a fresh cache (the model's own blocks,
    masks and RoPE positions pos0..; no cache, no adapters)."""
    x = model.embed(idx)
    if n_blocks:
        cos, sin = _rope(model, idx.shape[1], pos0, idx.device, x.dtype)
        masks = model.attention_masks(idx.shape[1], device=idx.device)
        for i in range(n_blocks):
            x = model.blocks[i](x, cos, sin, masks[model.layer_pattern[i]])
    return x


def kept_mask(scores: torch.Tensor, c: int, recent: float, generator: torch.Generator | None = None):
    """[B, P] bool: the round(recent·c) most recent tokens plus the top-scored others, c in all. With a
    generator, the others are a Gumbel-top-k sample."""
    B, P = scores.shape
    c = min(c, P)
    r = min(c, round(recent * c))
    s = scores.detach().float()
    if generator is not None:
        u = torch.rand(s.shape, generator=generator).to(s.device).clamp(1e-9, 1 - 1e-9)
        s = s - torch.log(-torch.log(u))
    if r:
        s[:, P - r:] = float("inf")
    keep = torch.zeros(B, P, dtype=torch.bool, device=scores.device)
    return keep.scatter_(1, s.topk(c, dim=-1).indices, True)


def student_logits(model, adapter: KVDistillAdapter, idx: torch.Tensor, prefix: int, keep: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [B, N − prefix − 1, V] predicting idx[:, prefix + 1:] when the first `prefix` tokens were read into
    the cache and cut to `keep` [B, prefix] (the decode path's prefill) and the rest is read in one call against
    that cache (its extend): prefix rows attend to the whole prefix (adapters on kept positions), later rows to
    the kept prefix keys (logit bias `bias` [B, prefix] on them) and to the later tokens before them."""
    B, N = idx.shape
    dev = idx.device
    pos = torch.arange(N, device=dev)
    x = model.embed(idx)
    cos, sin = _rope(model, N, 0, dev, x.dtype)
    later_rows = (pos >= prefix)[None, None, :, None]
    bias_cols = 0.0
    if bias is not None:
        bias_cols = F.pad(bias.to(x.dtype), (0, N - prefix))[:, None, None, :] * later_rows
    masks = []
    for spec in model.patterns:
        allowed = spec.visible(pos[:, None], pos[None, :]).expand(B, N, N).clone()
        allowed[:, prefix:, :prefix] &= keep[:, None, :]
        masks.append(torch.zeros(B, 1, N, N, device=dev, dtype=x.dtype).masked_fill(~allowed[:, None], float("-inf"))
                     + bias_cols)
    lora_mask = F.pad(keep.to(x.dtype), (0, N - prefix))
    with adapter.active(model, lora_mask):
        for blk, p in zip(model.blocks, model.layer_pattern):
            x = blk(x, cos, sin, masks[p])
    return F.linear(model.norm(x[:, prefix:N - 1]), model.output_weight)


def mixed_kl(teacher: torch.Tensor, student: torch.Tensor, lam: float) -> torch.Tensor:
    """Mean over tokens of λ·KL(p‖q) + (1−λ)·KL(q‖p), p = softmax(teacher), q = softmax(student)."""
    lp, lq = F.log_softmax(teacher.float(), -1), F.log_softmax(student.float(), -1)
    fwd = (lp.exp() * (lp - lq)).sum(-1)
    rev = (lq.exp() * (lq - lp)).sum(-1)
    return (lam * fwd + (1 - lam) * rev).mean()


def distill_loss(model, adapter: KVDistillAdapter, idx: torch.Tensor, prefix: int, kept: int, recent: float,
                 lam: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One training loss: the teacher's full cache vs the student's prefix cut to `kept` tokens, on the
    predictions of idx[:, prefix + 1:]."""
    N = idx.shape[1]
    with torch.no_grad():
        teacher = model(idx)[:, prefix:N - 1]
        h = prepass(model, idx[:, :prefix], adapter.n_pre)
    s = adapter.score_hidden(model, h)
    keep = kept_mask(s, kept, recent, generator)
    ls = F.logsigmoid(s)
    student = student_logits(model, adapter, idx, prefix, keep, ls - ls.detach())
    return mixed_kl(teacher, student, lam)


class KVDistill(Policy):
    method = "kv_distill"

    def __init__(self, cfg, module=None, tokenizer=None):
        super().__init__(cfg, module, tokenizer)
        if not isinstance(module, KVDistillAdapter):
            raise CostlawError("kv_policy: kv_distill needs its trained scorer and adapters; train a policy run "
                               "(train.trainable = \"policy\") and pass it (--policy-run kv_distill=RUN_DIR)")

    def reset(self, cache):
        super().reset(cache)
        self.prompt_scores = None

    def prefill(self, model, idx, cache, last_only=False):
        c, P = self.capacity(cache), idx.shape[1]
        if cache.seen > 0 or P <= c:  # nothing to compress (or not a fresh prompt): the plain backbone
            return self.call(model, idx, cache, last_only)
        s = self.module.score(model, idx, cache.position)
        keep = kept_mask(s, c, self.options["recent"])
        p = torch.sigmoid(s).double()
        self.prompt_scores = torch.where(keep, 1 + p, p - 1)  # the kept tokens first, each by its score
        try:
            with self.module.active(model, keep):
                return self.call(model, idx, cache, last_only)
        finally:
            self.prompt_scores = None

    def new_scores(self, layer, q, k, v, lc):
        if self.prompt_scores is not None:
            return self.prompt_scores[:, None].expand(-1, lc.k.shape[1], -1)
        seq = torch.arange(self.seq0, self.seq0 + q.shape[2], device=q.device, dtype=torch.float64)
        return (LATER + seq * 1e-9)[None, None].expand(q.shape[0], lc.k.shape[1], -1)
