"""Rotary position embeddings, half-split convention (GPT-NeoX / Llama in HF): channel i is rotated
together with channel i + d/2 by the angle position · θ^(-2i/d).

Angles are computed in fp32 (fp64 for a fp64 model) and the rotation too; the result comes back in the
input's dtype. Rotations compose, RoPE(p2)·x = R(p2 - p1)·RoPE(p1)·x, which is how a KV cache re-assigns
the position of a stored key without its pre-RoPE value (`LayerCache.reposition`).
"""

from __future__ import annotations

import torch

from costlaw.runs.models.fused import pointwise


def wide_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32, or fp64 for fp64 tensors: the precision of RoPE, RMSNorm and the loss."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape `positions.shape + (head_dim // 2,)` (positions may be any integer tensor)."""
    inv_freq = theta ** -(torch.arange(0, head_dim, 2, device=positions.device, dtype=dtype) / head_dim)
    angles = positions.to(dtype)[..., None] * inv_freq
    return angles.cos(), angles.sin()


@pointwise
def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the last dim of x by angles whose cos/sin broadcast against x[..., : d/2]."""
    x1, x2 = x.to(cos.dtype).chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)
