"""Locret (Huang et al., 2024): trained retaining heads and chunked prefill with eviction.

Retaining heads (`RetainingHeads`, the policy's parameters): per layer a bias-free MLP
fc2(silu(fc1(cat[Q, K, V]))) on the layer's pre-RoPE projections of each token ((n_h + 2·n_kv)·d_h features
-> `hidden` -> one score per KV head), as in the official code (locret/models/llama/modeling_llama.py; SiLU
is the backbone's activation). A score is computed once, when its token arrives, and never changes.

Labels (`causal_importance`): for every context token and KV head, the largest pre-softmax attention logit it
receives from any later token (the continuation after the context), max over the KV head's query group —
the official data_gen.py's `plain_attn` labels. Training (`locret_loss`): SmoothL1(pred, label) averaged over
layers + 0.0025 · Σ_layers MSE(pred[t], pred[t+1]) (the smoothness term), backbone frozen. `topk_overlap`
is the official "acc": the share of the top 10% tokens by label that are also top 10% by prediction.

Inference (chunked prefill, locret/inference/infer.py): with capacity c per layer, the prompt except its last
n_loc = min(`local`, c/2) tokens is read in chunks of `chunk` tokens; after each chunk every layer keeps the
b = c − n_loc slots of highest score per KV head, the chunk's last n_s = min(`stabilizers`, b/2) tokens (the
stabilizers) protected (infer.py protects none in the final chunk). The last n_loc tokens are then read and never
evicted: while extending or decoding, the n_loc most recent tokens are protected and the lowest-scored older token
leaves on each overflow. Positions are the ones tokens arrived with, as SnapKV's and H2O's are here, so that the
score-based policies differ only in which tokens they keep (the official modeling code re-applies RoPE to its
compacted cache at positions 0..n−1 in cache order: `full=True` in modeling_llama.py and modeling_phi3.py). The
caps n_loc <= c/2 and n_s <= b/2 keep small budgets from being all tail and stabilizers (the paper's budgets are
thousands of tokens).

Features come from forward hooks on each block's fused q/k/v projection (`capture_qkv`), so training and
inference see the same pre-RoPE values.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from costlaw.costmodel import ModelConfig
from costlaw.costmodel.core.errors import CostlawError
from costlaw.runs.kv.base import Policy
from costlaw.runs.models.rope import apply_rope, rope_angles

SMOOTHNESS = 0.0025  # weight of the consecutive-score MSE (official train.py)
TOPK_SHARE = 0.1  # "acc": overlap of the top 10% (official train.py sparsity)


class RetainingHeads(nn.Module):
    """One retaining head per layer: (q_dim + 2·kv_dim) -> hidden -> n_kv_heads, no biases."""

    def __init__(self, cfg: ModelConfig, hidden: int):
        super().__init__()
        features = cfg.q_dim + 2 * cfg.kv_dim
        self.fc1 = nn.ModuleList(nn.Linear(features, hidden, bias=False) for _ in range(cfg.n_layers))
        self.fc2 = nn.ModuleList(nn.Linear(hidden, cfg.n_kv_heads, bias=False) for _ in range(cfg.n_layers))

    def forward(self, layer: int, qkv: torch.Tensor) -> torch.Tensor:
        """qkv [B, n, q_dim + 2·kv_dim] (a block's wqkv output) -> scores [B, n, n_kv]."""
        return self.fc2[layer](F.silu(self.fc1[layer](qkv)))


@contextmanager
def capture_qkv(model):
    """Collect each block's fused q/k/v projection output ([B, n, q_dim + 2·kv_dim], pre-RoPE) as it runs."""
    feats: list = [None] * len(model.blocks)
    handles = [blk.attn.wqkv.register_forward_hook(lambda m, i, o, at=layer: feats.__setitem__(at, o))
               for layer, blk in enumerate(model.blocks)]
    try:
        yield feats
    finally:
        for h in handles:
            h.remove()


def causal_importance(cfg: ModelConfig, layer: int, qkv: torch.Tensor, context: int) -> torch.Tensor:
    """Labels [B, n_kv, context] from layer `layer`'s q/k/v [B, N, ...] of a sequence (RoPE positions 0..N-1)
    whose first `context` tokens are the context: the largest pre-softmax logit each context token receives
    from the N − context later tokens, over the KV head's query group. Keys a later query cannot see under the
    layer's pattern do not count; a token no later query sees gets the layer's smallest label."""
    B, N, _ = qkv.shape
    h, kv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    q, k, _ = qkv.float().split([h * d, kv * d, kv * d], dim=-1)
    pos = torch.arange(N, device=qkv.device)
    cos, sin = rope_angles(pos, d, cfg.rope_theta, torch.float32)
    q = apply_rope(q.view(B, N, h, d), cos[:, None], sin[:, None])[:, context:]  # [B, G, h, d]
    k = apply_rope(k.view(B, N, kv, d), cos[:, None], sin[:, None])[:, :context]  # [B, Tc, kv, d]
    q = q.reshape(B, N - context, kv, h // kv, d)
    logits = torch.einsum("bgkhd,btkd->bkhgt", q, k) / math.sqrt(d)  # [B, kv, group, G, Tc]
    seen = cfg.layout[layer].visible(pos[context:, None], pos[None, :context])  # [G, Tc]
    lab = logits.masked_fill(~seen, float("-inf")).amax(dim=(2, 3))
    floor = lab[torch.isfinite(lab)].min() if torch.isfinite(lab).any() else lab.new_zeros(())
    return torch.where(torch.isfinite(lab), lab, floor)


def locret_loss(heads: RetainingHeads, feats: list, labels: list, context: int) -> torch.Tensor:
    """SmoothL1 to the labels (mean over layers) + SMOOTHNESS · Σ_layers MSE of consecutive scores."""
    fit, smooth = 0.0, 0.0
    for layer, (qkv, lab) in enumerate(zip(feats, labels)):
        pred = heads(layer, qkv[:, :context].detach().float()).transpose(1, 2)  # [B, n_kv, Tc]
        fit = fit + F.smooth_l1_loss(pred, lab)
        smooth = smooth + F.mse_loss(pred[..., 1:], pred[..., :-1])
    return fit / len(feats) + SMOOTHNESS * smooth


def topk_overlap(pred: torch.Tensor, label: torch.Tensor, share: float = TOPK_SHARE) -> float:
    """Mean share of the top `share` tokens by label (per row and head, last dim) that are top by pred too."""
    k = max(1, int(share * label.shape[-1]))
    top_p = torch.zeros_like(label, dtype=torch.bool).scatter_(-1, pred.topk(k, dim=-1).indices, True)
    top_l = torch.zeros_like(label, dtype=torch.bool).scatter_(-1, label.topk(k, dim=-1).indices, True)
    return float((top_p & top_l).sum()) / float(top_l.sum())


class Locret(Policy):
    method = "locret"

    def __init__(self, cfg, module=None, tokenizer=None):
        super().__init__(cfg, module, tokenizer)
        if not isinstance(module, RetainingHeads):
            raise CostlawError("kv_policy: locret needs its trained retaining heads; train a policy run "
                               "(train.trainable = \"policy\") and pass it (--policy-run locret=RUN_DIR)")

    def reset(self, cache):
        super().reset(cache)
        c = self.capacity(cache)
        self.n_loc = min(self.options["local"], c // 2)
        self.protect = self.n_loc

    def call(self, model, idx, cache, last_only=False):
        with capture_qkv(model) as self.feats:
            return super().call(model, idx, cache, last_only)

    def new_scores(self, layer, q, k, v, lc):
        qkv = self.feats[layer]
        return self.module(layer, qkv.to(self.module.fc1[layer].weight.dtype)).transpose(1, 2).float()

    def prefill(self, model, idx, cache, last_only=False):
        P, c = idx.shape[1], self.capacity(cache)
        if self.held(cache) + P <= c:  # it all fits: one call, nothing evicted
            return self.call(model, idx, cache, last_only)
        b = c - self.n_loc
        tail = min(self.n_loc, P)
        outs = []
        self.target, self.protect = b, min(self.options["stabilizers"], b // 2)
        for i in range(0, P - tail, self.options["chunk"]):
            outs.append(self.call(model, idx[:, i:min(i + self.options["chunk"], P - tail)], cache, last_only))
        self.target, self.protect = None, self.n_loc
        if tail:
            outs.append(self.call(model, idx[:, P - tail:], cache, last_only))
        return outs[-1] if last_only else torch.cat(outs, 1)
