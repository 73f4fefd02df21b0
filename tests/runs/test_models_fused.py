"""runs/models/fused.py: the pointwise pieces give their plain formula off CUDA, and trace into a compiled
model (fullgraph) as that formula, so training keeps one graph."""

import torch

from costlaw.runs.models.rope import apply_rope, rope_angles
from costlaw.runs.models.transformer import rms_norm, silu_mul


def step(x, w, cos, sin):
    h = rms_norm(x, w, 1e-6)
    return silu_mul(torch.cat([h, h], -1)) + apply_rope(h.unflatten(-1, (2, 8)), cos, sin).flatten(-2)


def test_plain_off_cuda_and_one_graph_when_compiled():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 5, 16, generator=g), torch.randn(16, generator=g)
    cos, sin = rope_angles(torch.arange(5)[None, :, None], 8, 1e4)
    want = step(x, w, cos, sin)
    xf = x.float()
    norm = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w
    assert torch.allclose(rms_norm(x, w, 1e-6), norm)
    assert rms_norm.plain is not rms_norm and silu_mul.plain(torch.ones(1, 4)).shape == (1, 2)
    got = torch.compile(step, fullgraph=True, backend="eager")(x, w, cos, sin)  # fails on a graph break
    assert torch.equal(got, want)

