"""Where a training step's GPU time goes: costlaw's model vs the plain-PyTorch reference, same shapes, same
GPU, one command. Prints the top kernels by CUDA time for each (torch.profiler, 3 steps after warm-up), and
the step's kernel time by kind (GEMM, dense attention, FlexAttention, the rest).

  python benchmarks/profile_step_gpu.py --reference ../shared/bench/gpu_reference.py     # a: 124M, T 1024
  python benchmarks/profile_step_gpu.py --configs b,b-hybrid                             # d 512, T 32K
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def kind(kernel: str) -> str:
    k = kernel.lower()
    if "flex" in k or k.startswith("triton_tem"):
        return "flex attention"
    if "sdpa" in k or "flash" in k or "fmha" in k:
        return "dense attention"
    if "nvjet" in k or "gemm" in k or "cutlass" in k or "xmma" in k:
        return "gemm"
    return "other"


def profile(name, model, idx, tgt, loss_fn, rows):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    f = torch.compile(model)

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            loss = loss_fn(f, idx, tgt)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in events) / 3 / 1e3
    print(f"== {name}: {total:.2f} ms of kernels per step")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:rows]:
        print(f"  {e.self_device_time_total / 3 / 1e3:7.3f} ms  x{e.count // 3:<4d} {e.key[:110]}")
    kinds = {}
    for e in events:
        kinds[kind(e.key)] = kinds.get(kind(e.key), 0.0) + e.self_device_time_total / 3 / 1e3
    print("  by kind: " + ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--configs", default="a", help="comma-separated: a (beside the reference), b, b-hybrid")
    p.add_argument("--reference", help="gpu_reference.py, for config a")
    p.add_argument("--rows", type=int, default=14)
    a = p.parse_args()
    from costmodel import ModelConfig, hybrid_layout
    from runs.models import build_model

    V = 50304
    for name in a.configs.split(","):
        torch.manual_seed(0)
        if name == "a":
            B, T = 16, 1024
            idx = torch.randint(0, V, (B, T), device="cuda")
            tgt = torch.randint(0, V, (B, T), device="cuda")
            if a.reference:
                spec = importlib.util.spec_from_file_location("gpu_reference", a.reference)
                ref = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(ref)
                args = SimpleNamespace(vocab=V, d_model=768, layers=12, heads=12, kv_heads=12, head_dim=64,
                                       ffn=2048, seq=T)
                profile("reference", ref.Model(args).cuda(), idx, tgt, lambda f, i, t: f(i, t), a.rows)
            cfg = ModelConfig(d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, head_dim=64, ffn_dim=2048,
                              vocab_size=V, tied_embeddings=True, rope_theta=5e5)
        else:
            B, T = 1, 32768
            idx = torch.randint(0, V, (B, T), device="cuda")
            tgt = torch.randint(0, V, (B, T), device="cuda")
            layout = hybrid_layout(12, "sink_window(64,1024)", full_layers=4) if name == "b-hybrid" else ()
            cfg = ModelConfig(d_model=512, n_layers=12, n_heads=8, n_kv_heads=2, head_dim=64, ffn_dim=1408,
                              vocab_size=V, tied_embeddings=True, rope_theta=5e5, layout=layout)
        model = build_model(cfg, device="cuda")
        model.attention_masks(T, device="cuda")  # fixed masks and RoPE table outside the graph, as the trainer
        profile(f"costlaw {name}", model, idx, tgt, lambda f, i, t: f(i, targets=t, reduction="mean"), a.rows)


if __name__ == "__main__":
    main()
