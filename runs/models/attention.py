"""Grouped-query attention with RoPE, and the kernels it dispatches to.

Whole sequences (training, a prompt into a fresh cache) go through `attend`, whose mask picks the kernel:
None -> SDPA is_causal (a full layer without documents: FlashAttention on GPU); a BlockMask -> FlexAttention
(compiled on CUDA); a boolean tensor -> SDPA with that mask (the CPU path); SinkWindowChunks -> a long
sink_window layer as balanced chunks (runs/models/sink_chunks.py); VarlenDocs -> a full layer over packed
documents through FlashAttention's varlen kernel (runs/models/varlen.py). Tokens that follow cached ones go
through `attend_slots`: SDPA over the cache's slots with the cache's visibility mask, GQA done by folding each
KV head's group of query heads into the query axis, so K and V are never repeated. A CUDA-graphed decode step
(runs/models/decode_graph.py) uses `attend_filled`, whose slot count lives on the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from costlaw.runs.models.kv_cache import LayerCache
from costlaw.runs.models.rope import apply_rope, wide_dtype
from costlaw.runs.models.sink_chunks import SinkWindowChunks, attend_chunks
from costlaw.runs.models.varlen import VarlenDocs, attend_varlen

_compiled_flex_attention = None
# Decode attends to a slot count that grows by one each step. cuDNN's SDPA plans per shape: on an H100 a
# 32K all-full model's decode took 73 ms a step with it first, 18 ms with these (benchmarks/runs.md).
_ANY_LENGTH = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

# hook(layer_idx, q, k, v, layer_cache): see Transformer.prefill
Hook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, LayerCache], None]


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask) -> torch.Tensor:
    """FlexAttention; on CUDA outside torch.compile it runs a compiled kernel (eager flex materialises T×T)."""
    global _compiled_flex_attention
    fn = flex_attention
    if q.is_cuda and not torch.compiler.is_compiling():
        if _compiled_flex_attention is None:
            _compiled_flex_attention = torch.compile(flex_attention)
        fn = _compiled_flex_attention
    return fn(q, k, v, block_mask=block_mask, enable_gqa=q.shape[1] != k.shape[1])


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
    """q [B, n_h, T, d_h], k and v [B, n_kv, T, d_h] -> [B, n_h, T, d_h]; query head h reads KV head h // group."""
    if isinstance(mask, SinkWindowChunks):
        return attend_chunks(q, k, v, mask, attend)
    if isinstance(mask, VarlenDocs):
        return attend_varlen(q, k, v, mask)
    if isinstance(mask, BlockMask):
        return flex(q, k, v, mask)
    gqa = q.shape[1] != k.shape[1]
    if gqa and not torch.compiler.is_compiling():
        # eager SDPA with enable_gqa took the math kernel on an H200 (T x T scores: 64 GiB for 4 rows of 16K at 16
        # heads, an OOM in evaluation); with K and V repeated it takes FlashAttention, as compiled training does
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
        gqa = False
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def attend_slots(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor | None) -> torch.Tensor:
    """q [B, n_h, n, d_h] over slots k, v [B, n_kv, S, d_h]; visible [B, n_kv, n, S] says which slots each
    query sees (every query must see at least one), None that every query sees every slot."""
    B, n_heads, n, d = q.shape
    n_kv = k.shape[1]
    group = n_heads // n_kv
    q = q.reshape(B, n_kv, group * n, d)
    mask = None
    if visible is not None:
        mask = visible[:, :, None].expand(B, n_kv, group, n, -1).reshape(B, n_kv, group * n, -1)
    with sdpa_kernel(_ANY_LENGTH):
        y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask)
    return y.reshape(B, n_heads, n, d)  # the CUDA kernels may return a non-contiguous layout


def _bmm_wide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b (batched) with an fp32 result for half inputs: scores rounded to bf16 lose ~0.4% of their size."""
    if a.is_cuda and a.dtype in (torch.bfloat16, torch.float16):
        return torch.bmm(a, b, out_dtype=torch.float32)
    return torch.bmm(a.to(wide_dtype(a.dtype)), b.to(wide_dtype(b.dtype)))


def split_parts(slots: int, longest: int = 1024) -> int:
    """How many equal parts `attend_filled` cuts `slots` into: the fewest with at most `longest` slots each."""
    return next(p for p in range(-(-slots // longest), slots + 1) if slots % p == 0)


def attend_filled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, length: torch.Tensor,
                  parts: int = 1) -> torch.Tensor:
    """One query per row, q [B, n_h, 1, d_h], over the first `length` slots (int64 [1], on the device) of k, v
    [B, n_kv, S, d_h]. The length is a tensor so that one captured decode graph serves every step. The scores
    and the softmax are fp32, over all S slots at once; the product with V runs in `parts` pieces along the
    slots (S divisible by parts), since a handful of query rows per KV head against 32K slots would otherwise
    leave most of the GPU idle."""
    B, n_heads, _, d = q.shape
    n_kv, S = k.shape[1], k.shape[2]
    g, BK = n_heads // n_kv, B * n_kv
    scores = _bmm_wide(q.reshape(BK, g, d).to(k.dtype), k.reshape(BK, S, d).transpose(1, 2)) * d ** -0.5
    hidden = torch.arange(S, device=k.device) >= length
    probs = scores.masked_fill(hidden, float("-inf")).softmax(-1).to(v.dtype)
    part = S // parts
    probs = probs.view(BK, g, parts, part).transpose(1, 2).reshape(BK * parts, g, part)
    y = _bmm_wide(probs, v.reshape(BK * parts, part, d)).view(BK, parts, g, d).sum(1)
    return y.view(B, n_heads, 1, d).to(q.dtype)


@dataclass
class CacheStep:
    """What one layer needs to run new tokens against its cache."""

    cache: LayerCache
    layer: int
    seq0: int  # sequence index of the first new token
    pos0: int  # RoPE position of the first new token
    hook: Hook | None = None

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
        """Attention of the new tokens, their K/V stored, then the hook, then the capacity check."""
        cache, n = self.cache, q.shape[2]
        overflow = self.hook is not None
        q_seq = torch.arange(self.seq0, self.seq0 + n, device=q.device)
        if n == 1:  # decode: store, then attend to every slot the new token sees (itself included)
            cache.append(k, v, self.seq0, self.pos0, overflow)
            y = attend_slots(q, *cache.decode_slots(q_seq))
        elif self.seq0 == 0:  # a prompt into a fresh cache attends to itself exactly as in training
            y = attend(q, k, v, mask)
            cache.append(k, v, self.seq0, self.pos0, overflow)
        else:  # a chunk after cached tokens: attend to the slots and to the chunk, then store
            B, n_kv = k.shape[:2]
            chunk = cache.spec.visible(q_seq[:, None], q_seq[None, :]).expand(B, n_kv, n, n)
            y = attend_slots(q, torch.cat([cache.k.to(k.dtype), k], 2), torch.cat([cache.v.to(v.dtype), v], 2),
                             torch.cat([cache.visible(q_seq), chunk], 3))
            cache.append(k, v, self.seq0, self.pos0, overflow)
        if self.hook is not None:
            self.hook(self.layer, q, k, v, cache)
        cache.check(self.layer)
        return y


class Attention(nn.Module):
    """GQA with head_dim decoupled from d_model: one fused projection d -> (n_h + 2·n_kv)·d_h, RoPE on q and
    k, attention, output projection n_h·d_h -> d. No biases."""

    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wqkv = nn.Linear(cfg.d_model, cfg.q_dim + 2 * cfg.kv_dim, bias=False)
        self.wo = nn.Linear(cfg.q_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask,
                step: CacheStep | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        h, kv, d = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.wqkv(x).split([h * d, kv * d, kv * d], dim=-1)
        q = apply_rope(q.view(B, T, h, d), cos, sin).transpose(1, 2)
        k = apply_rope(k.view(B, T, kv, d), cos, sin).transpose(1, 2)
        v = v.view(B, T, kv, d).transpose(1, 2)
        y = attend(q, k, v, mask) if step is None else step.attend(q, k, v, mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, h * d))
