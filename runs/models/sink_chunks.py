"""Sink+window attention as balanced chunks, for FlexAttention's backward.

On one sequence, every query sees the sink tokens. FlexAttention's backward gives each key block one program
that loops over the query blocks that see it. The sink's key block is seen by all T/128 query blocks, while
every other key block is seen by about window/128 of them. On an H100 at T = 32K that one program set the
time: 34.4 ms of backward for 8 sparse layers, against 2.2 ms of forward (benchmarks/runs.md).

Here the sequence is cut into chunks of C ≥ window queries. Each chunk attends to its own key row: the sink
(padded to one block), the previous chunk and its own chunk, `P + 2C` keys. Chunks fold into the head axis as
(chunk, head), so GQA's query-head -> KV-head map still holds. Every key block is then seen by at most C/128
query blocks. The sink's keys are copied into each chunk's row, and autograd sums their gradients back.

Keys are masked by their absolute positions, with the pattern's own rule (`spec.visible`). A sink token met
again in a chunk's window part is hidden there, so no key is counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask


@dataclass(frozen=True)
class SinkWindowChunks:
    """What `attend` needs to run a sink_window layer as chunks (see the module docstring)."""

    spec: object  # costmodel.SinkWindow
    T: int
    C: int  # queries per chunk, a multiple of the block, >= window
    P: int  # sink slots, padded to a block
    n_heads: int
    mask: object  # a BlockMask over [1, n_chunks·n_heads, C, P + 2C], or the same as a dense bool tensor

    @property
    def n_chunks(self) -> int:
        return -(-self.T // self.C)


def chunk_sizes(spec, block_size: int) -> tuple[int, int]:
    """(C, P): chunk length and padded sink length, both multiples of the block."""
    up = lambda n: max(block_size, -(-n // block_size) * block_size)  # noqa: E731
    return up(spec.window), up(spec.sink)


def chunk_rule(spec, C: int, P: int, n_heads: int):
    """mask_mod(b, h, q, k) on the chunk layout: h // n_heads is the chunk, q and k are its local indices."""
    S = spec.sink

    def rule(b, h, q, k):
        c = h // n_heads
        in_prev = (k >= P) & (k < P + C)
        k_abs = torch.where(k < S, k, torch.where(in_prev, (c - 1) * C + (k - P), c * C + (k - P - C)))
        in_window = (in_prev & (c >= 1)) | (k >= P + C)
        return ((k < S) | (in_window & (k_abs >= S))) & spec.visible(c * C + q, k_abs)

    return rule


def sink_window_chunks(spec, T: int, n_heads: int, device, block_size: int = 128,
                       dense: bool = False) -> SinkWindowChunks:
    """The chunk layout of a sink_window layer over T tokens; `dense` gives a bool mask (the SDPA path, tests)."""
    from costlaw.runs.models.masks import block_index

    C, P = chunk_sizes(spec, block_size)
    n = -(-T // C)
    rule = chunk_rule(spec, C, P, n_heads)
    chunks = torch.arange(n, device=device)[:, None, None] * n_heads  # one head per chunk: the rule is per chunk
    if dense:
        q, k = torch.arange(C, device=device), torch.arange(P + 2 * C, device=device)
        per_chunk = rule(0, chunks, q[None, :, None], k[None, None, :])
        return SinkWindowChunks(spec, T, C, P, n_heads, per_chunk.repeat_interleave(n_heads, 0)[None])
    # block_index pads keys past its T, so the kv side is exactly P + 2C (a multiple of the block)
    kv_num, kv_idx, full_num, full_idx = block_index(
        lambda q, k: rule(0, chunks, q[None, :, None], k[None, None, :]), n, P + 2 * C, device, block_size)
    nq = C // block_size

    def per_head(t):  # [n, 1, nq(, nk)] -> [1, n·n_heads, nq(, nk)], only the chunk's query blocks
        return t[:, 0, :nq].repeat_interleave(n_heads, 0)[None].contiguous()

    mask = BlockMask.from_kv_blocks(per_head(kv_num), per_head(kv_idx), per_head(full_num), per_head(full_idx),
                                    BLOCK_SIZE=block_size, mask_mod=rule, seq_lengths=(C, P + 2 * C))
    return SinkWindowChunks(spec, T, C, P, n_heads, mask)


def attend_chunks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: SinkWindowChunks, kernel) -> torch.Tensor:
    """q [B, n_h, T, d_h], k and v [B, n_kv, T, d_h] -> [B, n_h, T, d_h] through `kernel(q, k, v, mask)` on the
    chunk layout."""
    B, H, T, d = q.shape
    n, C, P, S = m.n_chunks, m.C, m.P, m.spec.sink
    pad = n * C - T
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))

    def key_rows(t):  # [B, n_kv, n·C, d] -> [B, n·n_kv, P + 2C, d]
        hk = t.shape[1]
        own = t.view(B, hk, n, C, d)
        prev = torch.cat([own.new_zeros(B, hk, 1, C, d), own[:, :, :-1]], dim=2)
        sink = F.pad(t[:, :, :S], (0, 0, 0, P - S))[:, :, None].expand(B, hk, n, P, d)
        rows = torch.cat([sink, prev, own], dim=3)
        return rows.transpose(1, 2).reshape(B, n * hk, P + 2 * C, d)

    q = q.view(B, H, n, C, d).transpose(1, 2).reshape(B, n * H, C, d)
    y = kernel(q, key_rows(k), key_rows(v), m.mask)
    return y.reshape(B, n, H, C, d).transpose(1, 2).reshape(B, H, n * C, d)[:, :, :T]
