"""Compiled pointwise pieces for the model's eager passes on CUDA (prefill, evaluation).

Training compiles the whole model, and inductor fuses RMSNorm, RoPE and the SwiGLU product into few kernels.
Prefill runs the model eagerly (its cache bookkeeping does not trace), where each of those pieces is several
full passes over the activations: fp32 upcasts, the rotation's halves, the product. `pointwise(fn)` returns
a version of `fn` that, on large CUDA inputs outside a compiled graph, runs `fn` through torch.compile
(dynamic shapes: one compilation serves every prompt length); everywhere else (CPU, small inputs such as a
decode step, inside a compiled model) it runs `fn` itself. Same formulas either way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

enabled = True  # a benchmark can switch it off to time the plain eager pieces beside it
MIN_ELEMENTS = 1 << 20  # below this the launch, not the memory traffic, is the cost (a decode step)


def pointwise(fn: Callable) -> Callable:
    compiled = None

    def run(x: torch.Tensor, *args):
        nonlocal compiled
        if torch.compiler.is_compiling() or not (enabled and x.is_cuda and x.numel() >= MIN_ELEMENTS):
            return fn(x, *args)
        if compiled is None:
            compiled = torch.compile(fn, dynamic=True)
        return compiled(x, *args)

    run.__doc__, run.__name__, run.plain = fn.__doc__, fn.__name__, fn
    return run
