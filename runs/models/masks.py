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
    all heads. On CUDA outside torch.compile the builder itself is compiled, so the T×T rule is evaluated in a
    fused kernel and never materialised; inside a compiled model it is traced into the graph."""
    global _compiled_create_block_mask
    device = torch.device(device)
    build = create_block_mask
    if device.type == "cuda" and not torch.compiler.is_compiling():
        if _compiled_create_block_mask is None:
            _compiled_create_block_mask = torch.compile(create_block_mask)
        build = _compiled_create_block_mask
    batch = None if docs is None else docs[0].shape[0]
    return build(mask_mod(spec, docs), batch, None, T, T, device=device, BLOCK_SIZE=block_size)
