"""Where a training step's GPU time goes: costlaw's model vs the plain-PyTorch reference, same shapes, same
GPU, one command. Prints the top kernels by CUDA time for each (torch.profiler, 3 steps after warm-up).

  python benchmarks/profile_step_gpu.py --reference ../shared/bench/gpu_reference.py
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reference", required=True)
    p.add_argument("--rows", type=int, default=14)
    a = p.parse_args()
    spec = importlib.util.spec_from_file_location("gpu_reference", a.reference)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    B, T, V = 16, 1024, 50304
    torch.manual_seed(0)
    idx = torch.randint(0, V, (B, T), device="cuda")
    tgt = torch.randint(0, V, (B, T), device="cuda")
    args = SimpleNamespace(vocab=V, d_model=768, layers=12, heads=12, kv_heads=12, head_dim=64, ffn=2048, seq=T)
    profile("reference", ref.Model(args).cuda(), idx, tgt, lambda f, i, t: f(i, t), a.rows)

    from costmodel import ModelConfig
    from runs.models import build_model

    cfg = ModelConfig(d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, head_dim=64, ffn_dim=2048,
                      vocab_size=V, tied_embeddings=True, rope_theta=5e5)
    profile("costlaw", build_model(cfg, device="cuda"), idx, tgt,
            lambda f, i, t: f(i, targets=t, reduction="mean"), a.rows)


if __name__ == "__main__":
    main()
