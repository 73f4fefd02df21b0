"""A Llama-style decoder built from a `costmodel.ModelConfig` alone (the GQA paper's architecture):
token embedding -> L × [pre-RMSNorm GQA attention + pre-RMSNorm SwiGLU FFN, both residual] -> RMSNorm -> LM
head (tied to the embedding or not). No biases; RoPE with cfg.rope_theta on head_dim; each layer's attention
pattern from cfg.layout. `sum(p.numel() for p in model.parameters()) == costmodel.params_total(cfg)`.

Attention backend (`attn_backend`): "auto" picks "flex" on CUDA and "sdpa" elsewhere. "flex": full layers
without documents use SDPA is_causal (FlashAttention); sparse layers, and every layer when `doc_ids` are
given, use FlexAttention with a BlockMask from `spec.visible`. "sdpa": the same rules as dense boolean masks
(CPU, tests). Masks are built once per forward and shared by the layers of one pattern; without documents
they are fixed and cached per (backend, T, device).

Positions: RoPE positions restart at 0 in every document of a packed row (ProLong-style packing; a packed
document computes exactly what it would alone), unless `positions` is given ([T] or [B, T]), which sets RoPE
positions only; masks always follow the documents. (Attention scores under RoPE depend on position
differences only, and documents never see each other, so global positions would give the same result up to
rounding; restarting keeps the angles small.)

Init: N(0, 0.02) for every matrix, with the residual-out projections (attention `wo`, FFN `w_down`) scaled by
1/sqrt(2L) as in GPT-2; RMSNorm weights 1. Deterministic under torch.manual_seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from costlaw.costmodel import Full, ModelConfig, SinkWindow, kv_tokens_per_layer
from costlaw.runs.models import decode_graph, varlen
from costlaw.runs.models.attention import Attention, CacheStep, Hook
from costlaw.runs.models.fused import pointwise
from costlaw.runs.models.kv_cache import KVCache, LayerCache
from costlaw.runs.models.masks import block_mask, dense_mask, document_block_index, document_layout
from costlaw.runs.models.rope import rope_angles, wide_dtype
from costlaw.runs.models.sink_chunks import chunk_sizes, sink_window_chunks

IGNORE_INDEX = -100
BACKENDS = ("auto", "flex", "sdpa")
_EVAL_CHUNK_LOGITS = 1 << 26  # logits per chunk when the loss is computed without autograd


@pointwise
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.to(wide_dtype(x.dtype))  # fp32 (fp64 for a fp64 model), as in the reference
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


@pointwise
def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class SwiGLU(nn.Module):
    """w_down(silu(gate) * up), gate and up from one fused d -> 2·d_ff projection: 3·d·d_ff parameters."""

    def __init__(self, d_model: int, ffn_dim: int):
        super().__init__()
        self.w_gate_up = nn.Linear(d_model, 2 * ffn_dim, bias=False)
        self.w_down = nn.Linear(ffn_dim, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(silu_mul(self.w_gate_up(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model)
        self.ffn = SwiGLU(cfg.d_model, cfg.ffn_dim)

    def forward(self, x, cos, sin, mask, step: CacheStep | None = None):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, step)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    # Long sink_window layers train as balanced chunks (runs/models/sink_chunks.py): on an H100 at 32K that took
    # the hybrid's step from 105 to 82 ms (benchmarks/runs.md). Prefill keeps one BlockMask: without a
    # backward the chunk copies cost more than they save. A class attribute, so a benchmark can switch it off.
    sink_chunks = True
    # Decode steps on CUDA replay one captured graph per cache where they can (runs/models/decode_graph.py);
    # also a class attribute, so a benchmark can time the eager path beside it.
    graph_decode = True

    def __init__(self, cfg: ModelConfig, attn_backend: str = "auto"):
        super().__init__()
        if attn_backend not in BACKENDS:
            raise ValueError(f"attn_backend: {attn_backend!r} is not one of {', '.join(BACKENDS)}")
        self.cfg = cfg
        self.attn_backend = attn_backend
        self.flex_block_size = 128  # FlexAttention's tile; tests use smaller blocks on short rows
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model)
        self.lm_head = None if cfg.tied_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.patterns = list(dict.fromkeys(cfg.layout))  # distinct patterns, in layer order
        self.layer_pattern = [self.patterns.index(spec) for spec in cfg.layout]
        self._fixed_masks: dict[tuple, list] = {}
        # cos and sin of positions 0..n-1 ([2, n, d_h/2]), grown on demand outside torch.compile (see _rope)
        self.register_buffer("rope_table", torch.empty(2, 0, cfg.head_dim // 2), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std, residual_std = 0.02, 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, 0.0, residual_std if name.endswith(("wo.weight", "w_down.weight")) else std)

    @property
    def output_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    # ------------------------------------------------------------------ masks
    def backend(self, device: torch.device) -> str:
        if self.attn_backend == "auto":
            return "flex" if device.type == "cuda" else "sdpa"
        return self.attn_backend

    def attention_masks(self, T: int, doc_ids: torch.Tensor | None = None, device=None) -> list:
        """One mask per distinct pattern (`self.patterns`) for rows of T tokens: None (full causal without
        documents), a BlockMask (flex) or a boolean [B|1, 1, T, T] tensor (sdpa). Calling it once before
        torch.compile fills the fixed-mask cache and the RoPE table, so the compiled graph starts with both."""
        # "cuda" and "cuda:0" must meet the same cache entry: take the device a tensor would get
        device = torch.empty(0, device=device).device if device is not None else self.embed.weight.device
        self._fill_rope(T, wide_dtype(self.embed.weight.dtype))
        docs = None if doc_ids is None else document_layout(doc_ids.to(device))
        return self._masks(T, device, docs)

    def document_block_index(self, doc_ids: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> list | None:
        """Per pattern, the index of packed rows doc_ids [B, T] on the flex path (None off it): document offsets
        for full layers where FlashAttention's varlen kernel can run (CUDA, under half-precision autocast or
        with half weights; runs/models/varlen.py), a FlexAttention block index otherwise. The trainer computes
        it outside the compiled model and passes it to forward: traced into the graph, building a document
        BlockMask at T = 16K made no training step in 4 minutes on an H100. `cu_seqlens`, when given, are the
        offsets `varlen.cu_seqlens(doc_ids)` computed ahead (the loader does, on the host: on the device they
        make the host wait for the GPU)."""
        device = doc_ids.device
        if self.backend(device) != "flex":
            return None
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else self.embed.weight.dtype
        T, docs = doc_ids.shape[1], None
        index = []
        for spec in self.patterns:
            if isinstance(spec, Full) and varlen.available(device, dtype):
                cu = cu_seqlens if cu_seqlens is not None else varlen.cu_seqlens(doc_ids)
                torch._dynamo.mark_dynamic(cu, 0)  # its length (documents + 1) changes every batch: no recompiles
                index.append((cu,))
            else:  # the layout only where a block index needs it: an all-full model on the varlen path skips it
                docs = docs if docs is not None else document_layout(doc_ids)
                index.append(document_block_index(spec, docs, T, device, self.flex_block_size))
        return index

    def _masks(self, T: int, device: torch.device, docs, block_index: list | None = None,
               chunks: bool | None = None) -> list:
        flex = self.backend(device) == "flex"
        chunks = self.sink_chunks if chunks is None else chunks

        def build(spec, index=None):
            if docs is None and isinstance(spec, Full):
                return None
            if index is not None and len(index) == 1:  # document offsets (document_block_index)
                return varlen.VarlenDocs(index[0], T)
            bs = self.flex_block_size
            chunked = chunks and isinstance(spec, SinkWindow) and T > chunk_sizes(spec, bs)[0]
            if flex and docs is None and chunked:
                return sink_window_chunks(spec, T, self.cfg.n_heads, device, bs)
            if flex:
                return block_mask(spec, T, device, docs, self.flex_block_size, index)
            return dense_mask(spec, T, device, docs)

        if docs is not None:  # per batch: one mask per pattern, shared by its layers
            index = block_index or [None] * len(self.patterns)
            return [build(spec, i) for spec, i in zip(self.patterns, index)]
        key = (flex, T, device.type, device.index, self.flex_block_size, chunks)
        masks = self._fixed_masks.get(key)
        if masks is None:
            if len(self._fixed_masks) >= 8:  # many prompt lengths (evaluation): drop the oldest
                self._fixed_masks.pop(next(iter(self._fixed_masks)))
            masks = self._fixed_masks[key] = [build(spec) for spec in self.patterns]
        return masks

    # ------------------------------------------------------------------ training forward
    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, doc_ids: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, reduction: str = "mean", block_index: list | None = None,
                recompute: bool = False):
        """idx [B, T] token ids. targets None -> logits [B, T, V]; else the loss (see `lm_loss`). With doc_ids on
        the flex path, `block_index` (from `document_block_index(doc_ids)`) skips building the blocks here.
        `recompute`: each block's activations are recomputed in the backward instead of kept (less memory for
        long rows, one more forward's work; train.recompute_from)."""
        B, T = idx.shape
        docs = None if doc_ids is None else document_layout(doc_ids)
        bound = T  # positions below this bound index the RoPE table; explicit ones may not
        if positions is None:
            positions = torch.arange(T, device=idx.device)[None] if docs is None else docs[1]
        else:
            positions, bound = (positions[None] if positions.dim() == 1 else positions), None
        masks = self._masks(T, idx.device, docs, block_index)
        x = self.embed(idx)
        cos, sin = self._rope(positions, x.dtype, bound)
        for block, p in zip(self.blocks, self.layer_pattern):
            if recompute and torch.is_grad_enabled():
                x = checkpoint(block, x, cos, sin, masks[p], use_reentrant=False)
            else:
                x = block(x, cos, sin, masks[p])
        h = self.norm(x)
        if targets is None:
            return F.linear(h, self.output_weight)
        return lm_loss(h, self.output_weight, targets, reduction)

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype, bound: int | None):
        """cos, sin [B|1, T, 1, d_h/2] (broadcast over heads) for `positions`, all < `bound` when it is given.
        They come from a table computed once: angles computed inline let inductor fuse sin/cos into every
        RoPE kernel and recompute them per head and row, which took a quarter of a 124M model's training
        step on an H100 (benchmarks/runs.md)."""
        wide = wide_dtype(dtype)
        if bound is not None and not (torch.compiler.is_compiling() and self.rope_table.shape[1] < bound):
            self._fill_rope(bound, wide)
            table = self.rope_table.to(wide)
            return table[0][positions][:, :, None], table[1][positions][:, :, None]
        cos, sin = rope_angles(positions, self.cfg.head_dim, self.cfg.rope_theta, wide)
        return cos[:, :, None], sin[:, :, None]

    def _fill_rope(self, n: int, dtype: torch.dtype) -> None:
        """Make the RoPE table cover positions 0..n-1 (grown to a power of two, so decoding rarely regrows it)."""
        if self.rope_table.shape[1] >= n and self.rope_table.dtype == dtype:
            return
        if torch.compiler.is_compiling():  # a compiled graph reads the table; it never grows it
            return
        size = 1 << max(10, (n - 1).bit_length())
        pos = torch.arange(size, device=self.embed.weight.device)
        self.rope_table = torch.stack(rope_angles(pos, self.cfg.head_dim, self.cfg.rope_theta, dtype))

    # ------------------------------------------------------------------ inference with a KV cache
    def new_cache(self, batch: int, context: int, device=None, dtype: torch.dtype | None = None) -> KVCache:
        """A cache for `batch` rows of up to `context` tokens: per layer `costmodel.kv_tokens_per_layer` slots
        (the layout's need, capped by cfg.kv_policy). dtype defaults to the model's."""
        device = device if device is not None else self.embed.weight.device
        dtype = dtype or self.embed.weight.dtype
        cfg = self.cfg
        return KVCache([LayerCache(spec, slots, batch, cfg.n_kv_heads, cfg.head_dim, cfg.rope_theta, device, dtype)
                        for spec, slots in zip(cfg.layout, kv_tokens_per_layer(cfg, context))])

    def prefill(self, idx: torch.Tensor, cache: KVCache, hook: Hook | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Run tokens idx [B, n] after those already in `cache` and store their K/V; returns logits [B, n, V]
        ([B, 1, V] with last_only). Into a fresh cache the prompt attends to itself as in training (one
        document, positions from cache.position); after cached tokens (chunked prefill) it attends to the
        cache's slots and to itself, each layer through its own pattern.

        hook(layer_idx, q, k, v, layer_cache) runs once per layer per call, after that layer's attention and
        after the new K/V are stored, before the layer's output feeds the next layer: q [B, n_h, n, d_h] and k
        [B, n_kv, n, d_h] after RoPE, v [B, n_kv, n, d_h]. It may `select`/`reposition` the layer's cache (and
        set cache.position) and must leave it within capacity; its return value is ignored."""
        if idx.shape[0] != cache.batch:
            raise ValueError(f"batch: idx has {idx.shape[0]} rows but the cache was made for {cache.batch}")
        n = idx.shape[1]
        seq0, pos0 = cache.seen, cache.position
        masks = self._masks(n, idx.device, None, chunks=False) if seq0 == 0 and n > 1 else [None] * len(self.patterns)
        x = self.embed(idx)
        cos, sin = self._rope(torch.arange(pos0, pos0 + n, device=idx.device)[None], x.dtype, pos0 + n)
        for i, (block, p) in enumerate(zip(self.blocks, self.layer_pattern)):
            x = block(x, cos, sin, masks[p], CacheStep(cache.layers[i], i, seq0, pos0, hook))
        cache.seen += n
        cache.position += n
        h = self.norm(x[:, -1:] if last_only else x)
        return F.linear(h, self.output_weight)

    def decode(self, tok: torch.Tensor, cache: KVCache, hook: Hook | None = None) -> torch.Tensor:
        """One step: tok [B, 1] (or [B]) -> logits [B, 1, V]; the new token sees exactly the cache's visible
        slots (itself included). Same hook contract as prefill. On CUDA, without a hook, the step replays a
        captured graph where `decode_graph.eligible` allows it."""
        tok = tok.reshape(-1, 1)
        if hook is None and self.graph_decode and tok.is_cuda and decode_graph.eligible(cache, tok):
            return decode_graph.decoder(self, cache).step(cache, tok)
        return self.prefill(tok, cache, hook)


def lm_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"):
    """Cross-entropy in fp32 of logits h @ weight.T (h [B, T, d]) against targets [B, T]; IGNORE_INDEX skipped.

    reduction "mean" -> mean over counted targets; "sum" -> (sum, number of counted targets), for Ave-Token
    normalisation across gradient accumulation; "none" -> [B, T] per-token loss, 0 where ignored.
    With autograd on, the logits are one matmul followed by the upcast and the loss, a chain torch.compile
    fuses (so fp32 logits need not be stored); without autograd (evaluation) rows go in chunks of ~64M
    logits, so [B, T, V] never exists at once."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction: {reduction!r} is not one of mean, sum, none")
    B, T, d = h.shape
    h, targets = h.reshape(B * T, d), targets.reshape(B * T)
    wide = wide_dtype(h.dtype)
    rows = B * T if torch.is_grad_enabled() else max(1, _EVAL_CHUNK_LOGITS // weight.shape[0])
    losses = torch.cat([F.cross_entropy(F.linear(h[i:i + rows], weight).to(wide), targets[i:i + rows],
                                        ignore_index=IGNORE_INDEX, reduction="none")
                        for i in range(0, B * T, rows)])
    if reduction == "none":
        return losses.view(B, T)
    total, count = losses.sum(), (targets != IGNORE_INDEX).sum()
    return (total, count) if reduction == "sum" else total / count


def build_model(cfg: ModelConfig, device=None, dtype: torch.dtype = torch.float32,
                attn_backend: str = "auto") -> Transformer:
    """The model for `cfg`, initialised on `device` ("meta" allocates nothing) and cast to `dtype`."""
    with torch.device(device if device is not None else "cpu"):
        model = Transformer(cfg, attn_backend)
    return model.to(dtype=dtype)
