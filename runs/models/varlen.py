"""Document-masked full attention through FlashAttention's variable-length kernel (GPU, bf16/fp16).

A packed row's full layers attend causally within each document. FlexAttention does that from a block mask,
but its kernels ran this attention at half the speed of the dense causal kernel: on an H100, the gqa-heads
study's d 640 rung (T 2048, B 32) spent 17.1 ms a step in FlexAttention against 11.1 ms for the dense kernel
without documents (benchmarks/runs.md). The variable-length kernel treats the B rows as one stream of
documents, given by their offsets (`cu_seqlens`), and skips cross-document work outright.

Sparse patterns (sink_window, block_strided) keep FlexAttention: the varlen kernel has no sinks or strides.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VarlenDocs:
    """The mask of a full layer over packed rows of T tokens, as document offsets in the flattened rows."""

    cu_seqlens: torch.Tensor  # int32 [n_docs + 1]: 0, end of document 1, ..., B·T
    T: int


try:
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn
except ImportError:  # torch without the varlen API: FlexAttention stays
    _varlen_attn = None
# its keyword for causal attention changed across torch versions (is_causal, then window_size); read once here,
# outside any compiled graph
_PARAMS = inspect.signature(_varlen_attn).parameters if _varlen_attn is not None else {}
_CAUSAL = {"window_size": (-1, 0)} if "window_size" in _PARAMS else {"is_causal": True}


def available(device: torch.device, dtype: torch.dtype | None) -> bool:
    """Whether `attend_varlen` can run: a CUDA device, half-precision compute and a torch with the API."""
    return device.type == "cuda" and dtype in (torch.bfloat16, torch.float16) and _varlen_attn is not None


def cu_seqlens(doc_ids: torch.Tensor) -> torch.Tensor:
    """int32 offsets of the documents of packed rows doc_ids [B, T] in the flattened B·T tokens (a document
    starts at every row start and wherever the id changes), followed by B·T."""
    B, T = doc_ids.shape
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    offsets = torch.nonzero(starts.reshape(-1)).reshape(-1)
    return torch.cat([offsets, offsets.new_tensor([B * T])]).to(torch.int32)


def _kernel(q, k, v, cu, T):
    """varlen_attn, causal, over q [N, n_h, d] and k, v [N, n_kv, d]."""
    gqa = {"enable_gqa": True} if q.shape[1] != k.shape[1] and "enable_gqa" in _PARAMS else {}
    return _varlen_attn(q, k, v, cu, cu, T, T, **_CAUSAL, **gqa)


def attend_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: VarlenDocs) -> torch.Tensor:
    """q [B, n_h, T, d_h], k and v [B, n_kv, T, d_h] -> [B, n_h, T, d_h], causal within each document.
    Attention hands q, k, v over as transposes of [B, T, heads, d_h] tensors, so the token-major layout the
    kernel wants costs no copy."""
    B, H, T, d = q.shape

    def tokens(t):
        return t.transpose(1, 2).reshape(B * T, t.shape[1], d)

    # max length T, not the longest document: a data-dependent int would recompile the graph
    y = _kernel(tokens(q), tokens(k), tokens(v), m.cu_seqlens, T)
    return y.view(B, T, H, d).transpose(1, 2)
