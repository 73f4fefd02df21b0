"""Where a batch-1 prefill's time goes: kernel time against wall time, and the host's top operators, for an
all-full model and its hybrid twin (default: studies/hybrid-extend's extension pair x / x-hybrid at 16K, from
train_bench_gpu.py's table). A prefill whose wall time is far above its kernel time is paced by the host;
"host waits" counts the stream synchronisations per prefill (each lets the GPU run dry).

  python benchmarks/prefill_profile_gpu.py --configs x,x-hybrid --tokens 16352
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from train_bench_gpu import model_config  # noqa: E402

from costlaw.costmodel import prefill_flops  # noqa: E402
from costlaw.runs.models import build_model  # noqa: E402


def prefill_once(model, cache, prompt) -> None:
    cache.reset()
    model.prefill(prompt, cache, last_only=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="x,x-hybrid")
    p.add_argument("--tokens", type=int, default=16352, help="prompt length (the study's: 16K minus 32 decoded)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("prefill_profile_gpu: needs a CUDA device")
        return 2
    rows = []
    for name in a.configs.split(","):
        cfg = model_config(name)
        torch.manual_seed(0)
        model = build_model(cfg, device="cuda", dtype=torch.bfloat16)
        prompt = torch.randint(0, cfg.vocab_size, (1, a.tokens), device="cuda")
        cache = model.new_cache(1, a.tokens + 32, device="cuda")

        with torch.inference_mode():
            for _ in range(3):  # compiles FlexAttention and the pointwise pieces, builds the masks
                prefill_once(model, cache, prompt)
            torch.cuda.synchronize()
            walls = []
            for _ in range(a.repeats):
                t = time.perf_counter()
                prefill_once(model, cache, prompt)
                torch.cuda.synchronize()
                walls.append(time.perf_counter() - t)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    prefill_once(model, cache, prompt)
                torch.cuda.synchronize()
        events = prof.key_averages()
        kernels = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        wall = statistics.median(walls) * 1e3
        syncs = sum(e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize")) / 3
        rows.append((name, wall, kernels / 3 / 1e3, syncs, prefill_flops(cfg, a.tokens)))
        print(f"== {name}: {wall:.2f} ms wall, {kernels / 3 / 1e3:.2f} ms of kernels per prefill")
        print(events.table(sort_by="self_cpu_time_total", row_limit=a.top, max_name_column_width=60))
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, batch 1, {a.tokens} tokens")
    print("| config | wall ms | kernel ms | kernel share | host waits | prefill GFLOP |")
    print("|---|---|---|---|---|---|")
    for name, wall, kern, syncs, flops in rows:
        print(f"| {name} | {wall:.2f} | {kern:.2f} | {kern / wall:.0%} | {syncs:g} | {flops / 1e9:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
