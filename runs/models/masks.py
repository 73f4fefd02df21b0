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
from torch.nn.attention.flex_attention import BlockMask


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
               block_size: int = 128, index: tuple | None = None) -> BlockMask:
    """A BlockMask over T×T (batch-broadcast without documents, one row per sequence with them), shared by
    all heads. Its blocks come from the rule evaluated in query-row chunks (`block_index`), never from a
    compiled builder. With documents the blocks change every batch: the trainer computes `index`
    (`document_block_index`) outside the compiled model and passes it in, so the graph only wraps it."""
    device = torch.device(device)
    if docs is None:
        return fixed_block_mask(spec, T, device, block_size)
    if index is None:
        index = document_block_index(spec, docs, T, device, block_size)
    return BlockMask.from_kv_blocks(*index, BLOCK_SIZE=block_size, mask_mod=mask_mod(spec, docs), seq_lengths=(T, T))


def block_index(visible, B: int, T: int, device, block_size: int = 128, chunk_elements: int = 1 << 26) -> tuple:
    """(kv_num, kv_idx, full_num, full_idx) of a BlockMask over B rows of T×T, from `visible(q, keys)` -> [B|1,
    len(q), len(keys)] bool evaluated on chunks of query rows and reduced to blocks (a block is full when every
    pair is visible, partial when some are), in O(B × T × chunk) memory. A compiled create_block_mask spent over
    60 s compiling at T = 16K on an H100 with a cold cache, and eager create_block_mask materialises T×T at
    once (benchmarks/block_mask_setup_gpu.py)."""
    device = torch.device(device)
    nb = -(-T // block_size)
    keys = torch.arange(nb * block_size, device=device)
    key_ok = keys < T  # padding past T is never visible; its block is then partial, never full
    rows_per_chunk = max(1, chunk_elements // (B * nb * block_size * block_size)) * block_size
    partial, full = [], []
    for q0 in range(0, nb * block_size, rows_per_chunk):
        q = torch.arange(q0, min(q0 + rows_per_chunk, nb * block_size), device=device)
        vis = visible(q, keys) & key_ok[None, None, :] & (q < T)[None, :, None]
        vis = vis.reshape(vis.shape[0], -1, block_size, nb, block_size)
        seen = vis.any(dim=4).any(dim=2)
        whole = vis.all(dim=4).all(dim=2)
        partial.append(seen & ~whole)
        full.append(whole)
    partial_blocks, full_blocks = torch.cat(partial, dim=1), torch.cat(full, dim=1)

    def indices(m: torch.Tensor):
        # visible blocks first, each row in ascending kv order (what create_block_mask produces)
        order = torch.argsort((~m).to(torch.int8), dim=-1, stable=True)
        return m.sum(dim=-1, dtype=torch.int32)[:, None], order.to(torch.int32)[:, None]

    return (*indices(partial_blocks), *indices(full_blocks))


def fixed_block_mask(spec, T: int, device, block_size: int = 128, chunk_elements: int = 1 << 26) -> BlockMask:
    """The document-free BlockMask of `spec` over T×T (built once per shape, outside the model's graph)."""
    index = block_index(lambda q, k: spec.visible(q[:, None], k[None, :])[None], 1, T, device, block_size,
                        chunk_elements)
    return BlockMask.from_kv_blocks(*index, BLOCK_SIZE=block_size, mask_mod=mask_mod(spec), seq_lengths=(T, T))


def document_block_index(spec, docs: tuple[torch.Tensor, torch.Tensor], T: int, device, block_size: int = 128,
                         chunk_elements: int = 1 << 26) -> tuple:
    """`block_index` of `spec` per document (see the module docstring) for packed rows `docs` = (segment,
    position), each [B, T]."""
    segment, position = docs
    pad = -(-T // block_size) * block_size - T
    seg_k = torch.nn.functional.pad(segment, (0, pad), value=-1)  # padded keys match no document
    pos_k = torch.nn.functional.pad(position, (0, pad))

    def visible(q, k):
        qq = q.clamp(max=T - 1)  # padded query rows are masked by block_index
        same = segment[:, qq, None] == seg_k[:, None, k]
        return same & spec.visible(position[:, qq, None], pos_k[:, None, k])

    return block_index(visible, segment.shape[0], T, device, block_size, chunk_elements)
