"""One sink+window layer's attention on the GPU, one BlockMask over the sequence vs balanced chunks
(runs/models/sink_chunks.py): output and gradient agreement (fp32), and forward + backward time (bf16).

    python benchmarks/sink_chunks_gpu.py [--T 32768] [--sink 64] [--window 1024] [--out OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from model_smoke_gpu import median_ms  # noqa: E402

from costlaw.costmodel import SinkWindow  # noqa: E402
from costlaw.runs.models.attention import attend  # noqa: E402
from costlaw.runs.models.masks import fixed_block_mask  # noqa: E402
from costlaw.runs.models.sink_chunks import sink_window_chunks  # noqa: E402


def inputs(B, H, KV, T, d, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(B, n, T, d, device="cuda", dtype=dtype, generator=g).requires_grad_()
            for n in (H, KV, KV)]


def grads(fn, q, k, v, grad):
    """fn(q, k, v) and its gradients with respect to q, k and v for the output gradient `grad`."""
    y = fn(q, k, v)
    return (y, *torch.autograd.grad(y, (q, k, v), grad))


def times(fns: dict, q, k, v, grad) -> dict:
    """Median forward and forward + backward ms of each attention path fn(q, k, v)."""
    return {"fwd_ms": {n: median_ms(lambda f=f: f(q.detach(), k.detach(), v.detach())) for n, f in fns.items()},
            "fwd_bwd_ms": {n: median_ms(lambda f=f: grads(f, q, k, v, grad)) for n, f in fns.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--T", type=int, default=32768)
    p.add_argument("--sink", type=int, default=64)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--heads", default="8,2")
    p.add_argument("--out")
    a = p.parse_args()
    H, KV = map(int, a.heads.split(","))
    spec, T, d = SinkWindow(a.sink, a.window), a.T, 64
    masks = {"one BlockMask": fixed_block_mask(spec, T, "cuda"), "chunks": sink_window_chunks(spec, T, H, "cuda")}
    fns = {n: (lambda q, k, v, m=m: attend(q, k, v, m)) for n, m in masks.items()}
    out = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, T=T, spec=spec.spec(), heads=[H, KV])

    q, k, v = inputs(1, H, KV, T, d, torch.float32)
    grad = torch.randn_like(q)
    ref, got = (grads(f, q, k, v, grad) for f in fns.values())
    out["fp32_max_abs_diff"] = {name: (a_ - b_).abs().max().item() for name, a_, b_ in zip(("y", "dq", "dk", "dv"),
                                                                                         ref, got)}
    q, k, v = inputs(1, H, KV, T, d, torch.bfloat16, seed=1)
    grad = torch.randn_like(q)
    out.update(times(fns, q, k, v, grad))
    print(json.dumps(out))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
