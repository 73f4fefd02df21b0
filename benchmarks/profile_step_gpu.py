"""Where a training step's GPU time goes: costlaw's model vs the plain-PyTorch reference, same shapes, same
GPU, one command. Prints the top kernels by CUDA time for each (torch.profiler, 3 steps after warm-up), and
the step's kernel time by kind (GEMM, dense attention, FlexAttention, the rest).

  python benchmarks/profile_step_gpu.py --reference ../shared/bench/gpu_reference.py     # a: 124M, T 1024
  python benchmarks/profile_step_gpu.py --configs b,b-hybrid                             # d 512, T 32K
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
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
    t0 = time.perf_counter()
    for _ in range(10):  # wall time per step, unsynchronised as in the trainer: kernels plus host gaps
        step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / 10 * 1e3
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in events) / 3 / 1e3
    print(f"== {name}: {total:.2f} ms of kernels per step, {wall:.2f} ms wall per step "
          f"({idx.numel() / wall * 1e3:,.0f} tok/s)")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:rows]:
        print(f"  {e.self_device_time_total / 3 / 1e3:7.3f} ms  x{e.count // 3:<4d} {e.key[:110]}")
    kinds = {}
    for e in events:
        kinds[kind(e.key)] = kinds.get(kind(e.key), 0.0) + e.self_device_time_total / 3 / 1e3
    print("  by kind: " + ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])))


def synthetic_doc_ids(B: int, T: int, mean: float = 2000.0, seed: int = 0) -> torch.Tensor:
    """doc_ids [B, T] of log-normal document lengths (mean `mean` tokens), as the benchmarks' synthetic corpus."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(B):
        ids, n, doc = [], 0, 0
        while n < T:
            length = max(1, int(torch.empty(1).log_normal_(math.log(mean) - 0.5, 1.0, generator=g).item()))
            ids += [doc] * min(length, T - n)
            n, doc = n + length, doc + 1
        rows.append(ids)
    return torch.tensor(rows, device="cuda")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--configs", default="a", help="comma-separated: a (beside the reference), b, b-hybrid, "
                   "g640 (the gqa-heads study's d 640 rung: L 8, 8/1 heads, T 2048, B 32, byte vocab 264), "
                   "g640-docs (g640 with packed documents, index built each step as the trainer does: document "
                   "offsets computed on the host and copied), g640-docs-device-offsets (offsets derived on the "
                   "device, the path before), g640-docs-flex (through FlexAttention instead of the varlen kernel)")
    p.add_argument("--reference", help="gpu_reference.py, for config a")
    p.add_argument("--rows", type=int, default=14)
    a = p.parse_args()
    from costlaw.costmodel import ModelConfig, hybrid_layout, paper_ffn
    from costlaw.runs.models import build_model, varlen

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
        elif name.startswith("g640"):
            B, T, Vb = 32, 2048, 264
            idx = torch.randint(0, Vb, (B, T), device="cuda")
            tgt = torch.randint(0, Vb, (B, T), device="cuda")
            cfg = ModelConfig(d_model=640, n_layers=8, n_heads=8, n_kv_heads=1, head_dim=64, ffn_dim=paper_ffn(640),
                              vocab_size=Vb, tied_embeddings=True, rope_theta=5e5)
            if name.startswith("g640-docs"):
                if name == "g640-docs-flex":  # the path before runs/models/varlen.py, for a same-call comparison
                    varlen.available = lambda device, dtype: False
                model = build_model(cfg, device="cuda")
                model.attention_masks(T, device="cuda")
                docs = synthetic_doc_ids(B, T)
                host_cu = varlen.cu_seqlens(docs.cpu()).pin_memory()  # the loader's thread computes these
                on_host = name == "g640-docs"

                def docs_loss(f, i, t, model=model, docs=docs, host_cu=host_cu, on_host=on_host):
                    cu = host_cu.to("cuda", non_blocking=True) if on_host else None
                    index = model.document_block_index(docs, cu)
                    return f(i, targets=t, doc_ids=docs, reduction="mean", block_index=index)

                profile(f"costlaw {name}", model, idx, tgt, docs_loss, a.rows)
                continue
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
