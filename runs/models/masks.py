"""Attention masks, all built from costmodel's `spec.visible(q, k)` (the one statement of each rule).

- `dense_mask`: a boolean [B|1, 1, T, T] mask for SDPA (the CPU path) and for tests;
- `block_mask`: a FlexAttention BlockMask (the GPU path) from the very same rule as a `mask_mod`.

Packed rows. `doc_ids` [B, T] marks documents: a new document starts wherever the id changes. Each document
is masked as if it were alone in its row: a token sees only its own document, and the pattern's rule is
applied to positions counted from the document's first token (so a sink_window layer's sinks are the
document's first tokens, and block_strided blocks are aligned to the document's start). The model's RoPE
positions restart per document too, so a packed document computes exactly what it would unpacked.
"""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

_compiled_create_block_mask = None


def document_layout(doc_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment, position): per token, the index of its document in the row (1, 2, ...) and its position
    within that document (0, 1, ...). Both [B, T] int64."""
    T = doc_ids.shape[1]
    first = torch.ones_like(doc_ids[:, :1], dtype=torch.bool)
    starts = torch.cat([first, doc_ids[:, 1:] != doc_ids[:, :-1]], dim=1)
    segment = starts.long().cumsum(dim=1)
    index = torch.arange(T, device=doc_ids.device).expand_as(doc_ids)
    start_index = torch.where(starts, index, 0).cummax(dim=1).values
    return segment, index - start_index


def mask_mod(spec, docs: tuple[torch.Tensor, torch.Tensor] | None = None):
    """The FlexAttention mask_mod (b, h, q_idx, kv_idx) -> bool of a pattern, optionally per document."""
    if docs is None:
        def pattern(b, h, q, k):
            return spec.visible(q, k)

        return pattern
    segment, position = docs

    def document_pattern(b, h, q, k):
        return (segment[b, q] == segment[b, k]) & spec.visible(position[b, q], position[b, k])

    return document_pattern


def dense_mask(spec, T: int, device=None, docs: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """[1, 1, T, T] (no documents) or [B, 1, T, T] boolean mask, True where the query may see the key."""
    if docs is None:
        i = torch.arange(T, device=device)
        return spec.visible(i[:, None], i[None, :])[None, None]
    segment, position = docs
    same = segment[:, :, None] == segment[:, None, :]
    return (same & spec.visible(position[:, :, None], position[:, None, :]))[:, None]


def block_mask(spec, T: int, device, docs: tuple[torch.Tensor, torch.Tensor] | None = None,
               block_size: int = 128) -> BlockMask:
    """A BlockMask over T×T (batch-broadcast without documents, one row per sequence with them), shared by
    all heads. Without documents (a layer's fixed mask, built once outside the model's graph) the rule is
    evaluated in query-row chunks (`fixed_block_mask`). With documents on CUDA outside torch.compile the
    builder itself is compiled, so the T×T rule is never materialised; inside a compiled model it is traced
    into the graph."""
    global _compiled_create_block_mask
    device = torch.device(device)
    if docs is None:
        return fixed_block_mask(spec, T, device, block_size)
    build = create_block_mask
    if device.type == "cuda" and not torch.compiler.is_compiling():
        if _compiled_create_block_mask is None:
            _compiled_create_block_mask = torch.compile(create_block_mask)
        build = _compiled_create_block_mask
    return build(mask_mod(spec, docs), docs[0].shape[0], None, T, T, device=device, BLOCK_SIZE=block_size)


def fixed_block_mask(spec, T: int, device, block_size: int = 128, chunk_elements: int = 1 << 26) -> BlockMask:
    """The document-free BlockMask of `spec` over T×T, from the rule evaluated on chunks of query rows and
    reduced to blocks (a block is full when every pair is visible, partial when some are). A compiled
    create_block_mask spent over 60 s compiling at T = 16K on an H100 with a cold cache, and eager
    create_block_mask materialises T×T at once; this takes O(T × chunk) memory and no compilation
    (benchmarks/block_mask_setup_gpu.py)."""
    device = torch.device(device)
    nb = -(-T // block_size)
    keys = torch.arange(nb * block_size, device=device)
    key_ok = keys < T  # padding past T is never visible; its block is then partial, never full
    rows_per_chunk = max(1, chunk_elements // (nb * block_size * block_size)) * block_size
    partial, full = [], []
    for q0 in range(0, nb * block_size, rows_per_chunk):
        q = torch.arange(q0, min(q0 + rows_per_chunk, nb * block_size), device=device)
        vis = spec.visible(q[:, None], keys[None, :]) & key_ok[None, :] & (q < T)[:, None]
        vis = vis.view(-1, block_size, nb, block_size)
        seen = vis.any(dim=3).any(dim=1)
        whole = vis.all(dim=3).all(dim=1)
        partial.append(seen & ~whole)
        full.append(whole)
    partial_blocks, full_blocks = torch.cat(partial), torch.cat(full)

    def indices(m: torch.Tensor):
        # visible blocks first, each row in ascending kv order (what create_block_mask produces)
        order = torch.argsort((~m).to(torch.int8), dim=1, stable=True)
        return m.sum(dim=1, dtype=torch.int32)[None, None], order.to(torch.int32)[None, None]

    kv_num, kv_idx = indices(partial_blocks)
    full_num, full_idx = indices(full_blocks)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size,
                                    mask_mod=mask_mod(spec), seq_lengths=(T, T))
