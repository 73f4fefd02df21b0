"""Is a fused step of M same-shape runs cheaper than M separate steps? One process, one GPU, one shape at a time.

The ladder benchmark (ladder_bench_gpu.py) found fused groups of 3 seeds stepping at about a third of a separate
run's tokens/s each (H200, d 128-256), i.e. no cheaper per token than running the members one after another.
This measures the step alone, with runs/fusion.py's own FusedLoss (stand-in trainers: model, AdamW, no data):

- single: one member's compiled model, forward + backward + fused AdamW, ms per step;
- fused: FusedLoss over M members (vmap of the stacked parameters, compiled) + each member's AdamW, ms per step;
- speedup = M x single / fused (M: fusion does nothing; 1: as slow as separate runs);
- on CUDA, each step's kernels by kind and count (torch.profiler): M times the single step's attention kernels
  means vmap ran attention member by member; and the graphs dynamo made of the fused function (graph breaks).

  python benchmarks/fused_step_gpu.py --widths 128,256 --members 3 --out benchmarks/results/fused_step.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def kind(kernel: str) -> str:
    k = kernel.lower()
    if "flash" in k or "fmha" in k or "sdpa" in k or "attention" in k:
        return "attention"
    if "nvjet" in k or "gemm" in k or "cutlass" in k or "xmma" in k or "sm90" in k:
        return "gemm"
    if "adam" in k or "multi_tensor" in k:
        return "optimizer"
    return "other"


def shape(d: int):
    from costlaw.costmodel import ModelConfig, paper_ffn

    return ModelConfig(d_model=d, n_layers=4, n_heads=8, n_kv_heads=2, head_dim=64, ffn_dim=paper_ffn(d),
                       vocab_size=264, tied_embeddings=True, rope_theta=5e5)  # gqa-heads-steps' (8,2) rungs


def members(cfg, m: int, batch: int, seq: int, dev: torch.device, dtype):
    """M stand-in trainers with what FusedLoss reads: a model each (seeded apart), AdamW, the run's shapes."""
    from costlaw.runs.models import build_model

    out = []
    for seed in range(m):
        torch.manual_seed(seed)
        model = build_model(cfg, device=dev)
        model.attention_masks(seq, device=dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=dev.type == "cuda")
        run = SimpleNamespace(data=SimpleNamespace(seq_len=seq, doc_mask=False),
                              train=SimpleNamespace(batch_size=batch))
        out.append(SimpleNamespace(model=model, opt=opt, cfg=run, device=dev, dtype=dtype, _log=print))
    return out


def batches(m: int, batch: int, seq: int, vocab: int, dev):
    g = torch.Generator().manual_seed(0)
    return [SimpleNamespace(idx=torch.randint(0, vocab, (batch, seq), generator=g).to(dev),
                            targets=torch.randint(0, vocab, (batch, seq), generator=g).to(dev), doc_ids=None)
            for _ in range(m)]


def timed(step, dev, warm: int, steps: int) -> float:
    for _ in range(warm):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return (time.perf_counter() - t0) / steps * 1e3


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def kernels(step, dev) -> dict | None:
    """Per step: kernel ms and count by kind, and the attention kernels' names (CUDA only)."""
    if dev.type != "cuda":
        return None
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        sync(dev)
    ev = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    out: dict = {"ms": sum(e.self_device_time_total for e in ev) / 3e3, "count": sum(e.count for e in ev) / 3,
                 "by_kind": {}, "attention_kernels": sorted({e.key[:90] for e in ev if kind(e.key) == "attention"})}
    for e in ev:
        k = out["by_kind"].setdefault(kind(e.key), {"ms": 0.0, "count": 0.0})
        k["ms"] += e.self_device_time_total / 3e3
        k["count"] += e.count / 3
    return out


def measure(d: int, m: int, batch: int, seq: int, dev, compile: bool, warm: int, steps: int) -> dict:
    from costlaw.runs.fusion import FusedLoss
    from costlaw.runs.train import autocast

    cfg = shape(d)
    dtype = torch.bfloat16 if dev.type == "cuda" else None
    group = members(cfg, m, batch, seq, dev, dtype)
    micro = batches(m, batch, seq, cfg.vocab_size, dev)
    one = group[0]
    f = torch.compile(one.model) if compile else one.model

    def single():
        with autocast(dev, dtype):
            loss = f(micro[0].idx, targets=micro[0].targets, reduction="sum")[0]
        loss.backward()
        one.opt.step()
        one.opt.zero_grad(set_to_none=True)

    from torch._dynamo.utils import counters

    graphs0 = counters["stats"]["unique_graphs"]
    fused = FusedLoss(group, compile)
    graphs = counters["stats"]["unique_graphs"] - graphs0

    def fused_step():
        fused(group, micro).sum().backward()
        for t in group:
            t.opt.step()
            t.opt.zero_grad(set_to_none=True)

    with torch.no_grad():  # the fused losses are each member's own loss on its own batch
        with autocast(dev, dtype):
            alone = [float(t.model(b.idx, targets=b.targets, reduction="sum")[0]) for t, b in zip(group, micro)]
        together = [float(x) for x in fused(group, micro)]
    ms_single = timed(single, dev, warm, steps)
    ms_fused = timed(fused_step, dev, warm, steps)
    return {"d_model": d, "members": m, "batch": batch, "seq_len": seq, "compile": compile,
            "fused_compile_error": fused.compile_error, "fused_graphs": graphs,
            "ms_single": ms_single, "ms_fused": ms_fused, "speedup": m * ms_single / ms_fused,
            "loss_alone": alone, "loss_fused": together,
            "kernels_single": kernels(single, dev), "kernels_fused": kernels(fused_step, dev)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="128,192,256", help="d_model of each shape (L 4, 8/2 heads, byte vocab)")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--batch", type=int, default=2, help="rows per member (gqa-heads-steps' at d <= 192: 2)")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--device", default="cuda")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--warm", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    rows = [measure(int(d), a.members, a.batch, a.seq, dev, not a.no_compile, a.warm, a.steps)
            for d in a.widths.split(",")]
    doc = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "rows": rows}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{'d':>5} {'M':>3} {'single ms':>10} {'fused ms':>9} {'speedup':>8} {'graphs':>6}  attention kernels "
          "(single / fused, per step)")
    for r in rows:
        ks, kf = r["kernels_single"], r["kernels_fused"]
        att = ("-" if ks is None else f"{ks['by_kind'].get('attention', {}).get('count', 0):.0f} / "
               f"{kf['by_kind'].get('attention', {}).get('count', 0):.0f}")
        print(f"{r['d_model']:>5} {r['members']:>3} {r['ms_single']:>10.2f} {r['ms_fused']:>9.2f} "
              f"{r['speedup']:>8.2f} {r['fused_graphs']:>6}  {att}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
