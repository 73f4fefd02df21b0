"""Compile seconds of a sweep's runs with and without the compile cache the sweep root shares (issue 23, item 2).

Runs of one shape (seeds) are submitted one at a time to the local executor, each its own process, with
train.compile = "on". The first run of a root compiles cold and fills ROOT/compile-cache (inductor's FX graph,
AOTAutograd and kernel caches, sweeps/worker.py); the later ones load it. A second root repeats the first run's
shape with its own, empty cache: the cold time again. compile_s is a run's first step, compilation included.

  python benchmarks/compile_cache.py --device cpu --out benchmarks/results/compile_cache_cpu.json
  python benchmarks/compile_cache.py --device cuda --out $OUT/compile_cache_gpu.json          # on a GPU host
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """[sweep]
name = "{name}"
seeds = {seeds}

[base.model]
d_model = {d}
n_layers = {layers}
n_heads = 4
n_kv_heads = 2
head_dim = 32
ffn_dim = {ffn}
vocab_size = 264

[base.data]
corpus = "stdlib"
tokenizer = "byte"
seq_len = {T}

[base.train]
steps = {steps}
batch_size = 4
compile = "on"
log_every = 10
checkpoint_every = 0

[base.eval]
val_tokens = {val}
retrieval_samples = 0
decode_tokens = 0

[resources]
gpus = {gpus}
cpus = 2
time_min = 30
"""


def submit(spec: Path, root: Path, device: str) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "costlaw", "sweep", "submit", str(spec), "--executor", "local", "--root", str(root),
           "--max-parallel", "1", "--device", device]
    rc = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {rc}; `costlaw sweep status --root {root}` says why")
    return time.perf_counter() - t0


def compile_seconds(root: Path) -> list[dict]:
    out = []
    for s in sorted((root / "runs").glob("*/summary.json")):
        d = json.loads(s.read_text())
        doc = json.loads((s.parent / "config.json").read_text())
        out.append({"run_id": d["run_id"], "seed": doc["config"]["seed"], "compile_s": d["compile_s"],
                    "wall_s": d["wall_s"], "created": doc["created"]})
    return sorted(out, key=lambda r: r["created"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--runs", type=int, default=3, help="runs of one shape sharing a root (default 3)")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--out", type=Path, help="the JSON written (default: print only)")
    a = p.parse_args()
    gpus = 1 if a.device.startswith("cuda") else 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shared = work / "shared.toml"
        fmt = dict(d=a.d_model, layers=a.layers, ffn=4 * a.d_model, T=a.seq_len, steps=20, val=4 * a.seq_len,
                   gpus=gpus)
        shared.write_text(SPEC.format(name="cache-shared", seeds=list(range(a.runs)), **fmt))
        alone = work / "alone.toml"
        alone.write_text(SPEC.format(name="cache-alone", seeds=[0], **fmt))
        # one run at a time, so each later run finds what the earlier ones cached
        walls = {"shared": submit(shared, work / "shared", a.device), "alone": submit(alone, work / "alone", a.device)}
        shared_runs, alone_runs = compile_seconds(work / "shared"), compile_seconds(work / "alone")
    import torch

    cold = [shared_runs[0]["compile_s"], alone_runs[0]["compile_s"]]
    warm = [r["compile_s"] for r in shared_runs[1:]]
    doc = {"device": a.device, "gpu": torch.cuda.get_device_name(0) if gpus else None,
           "cpu": f"{platform.machine()}, {os.cpu_count()} CPUs",
           "torch": torch.__version__, "shape": {"d_model": a.d_model, "n_layers": a.layers, "seq_len": a.seq_len},
           "runs_shared_root": shared_runs, "run_own_root": alone_runs, "compile_s_cold": cold,
           "compile_s_warm": warm, "warm_over_cold": statistics.median(warm) / statistics.median(cold),
           "submit_wall_s": walls}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"compile_s cold {', '.join(f'{x:.1f}' for x in cold)}; warm (same root) "
          f"{', '.join(f'{x:.1f}' for x in warm)}; warm / cold {doc['warm_over_cold']:.3f} ({a.device})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
