"""Graph decode of b and its 1/3-full hybrid across batch sizes, next to costmodel's ideal (issue 4).

A graph-replayed decode step pays a fixed cost per kernel before it reads any KV (about 1.3 ms for the 12-layer
d 512 models on an H100, benchmarks/runs.md), and only the KV reads differ between b and the hybrid. So the
hybrid's measured speedup depends on the batch: this script measures it at several batch sizes, with the
default graph step and with the opt-in compiled one (`GraphDecoder.compile_body`), and times the first decode
step of each cache, which captures the graph (and, compiled, compiles the step): the cost a run pays once.

Each point: prefill `--seq` random tokens into a cache made for seq + generate, decode `--generate` steps,
`--rounds` rounds on one cache reset in place (the first warms up). bf16 weights and cache.

  python benchmarks/decode_batch_gpu.py --batches 1,8,32,64 --compiled-batches 8,64 --out results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from model_smoke_gpu import CONFIGS, DRY, infer, make_config  # noqa: E402

from costlaw.runs.models.decode_graph import GraphDecoder  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--compiled-batches", default="8,64", help="batches also timed with the compiled step")
    p.add_argument("--seq", type=int, default=32768)
    p.add_argument("--generate", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU, to check the script")
    p.add_argument("--out", help="write the rows as JSON here")
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("decode_batch_gpu: no CUDA device; use --device cpu --dry-run to check the script")
        return 2
    # each cache's compiled step is a new specialisation of one function; the default limit of 8 would send the
    # later ones back to eager without an error
    torch._dynamo.config.recompile_limit = 64
    batches = [int(x) for x in a.batches.split(",")]
    compiled_batches = {int(x) for x in a.compiled_batches.split(",") if x}
    cfgs = {n: make_config({**CONFIGS[n], **({k: v for k, v in DRY.items() if k != "vocab"} if a.dry_run else {})},
                           DRY["vocab"] if a.dry_run else 50304) for n in ("b", "hybrid")}
    if a.dry_run:
        a.seq, a.generate = 200, 4
    a.infer_rounds = a.rounds
    rows = []
    for batch in batches:
        a.infer_batch = batch
        for name, cfg in cfgs.items():
            for compiled in ([False, True] if batch in compiled_batches else [False]):
                GraphDecoder.compile_body = compiled
                try:  # model_smoke_gpu's prefill + decode rounds; the same seeded prompt for every step kind
                    r = infer(name, cfg, a.seq, a, graph=True)
                except torch.OutOfMemoryError as e:
                    r = dict(config=name, batch=batch, error=str(e).splitlines()[0])
                r["compiled"] = compiled
                rows.append(r)
                if a.device == "cuda":
                    torch.cuda.empty_cache()
    GraphDecoder.compile_body = False
    by = {(r["config"], r["batch"], r["compiled"]): r for r in rows}
    gpu = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(f"\n{gpu}, torch {torch.__version__}, prompt {a.seq}, {a.generate} decode steps, ms per step (first step s)")
    print("| batch | step | b | hybrid | hybrid/b | ideal (C_infer) | share | ideal (bytes) | greedy tokens equal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, batch, compiled), h in by.items():
        b = by.get(("b", batch, compiled))
        if name != "hybrid" or b is None or "error" in b or "error" in h:
            continue
        ideal = b["c_infer_flops_per_token"] / h["c_infer_flops_per_token"]
        ratio = b["decode_ms_per_step"] / h["decode_ms_per_step"]
        same = ""
        if compiled:  # the compiled step against the default one on the same prompt
            pairs = [(by[(n, batch, False)]["tokens"], by[(n, batch, True)]["tokens"]) for n in ("b", "hybrid")]
            same = " / ".join(f"{int((torch.tensor(x) == torch.tensor(y)).sum())}/{torch.tensor(x).numel()}"
                              for x, y in pairs)
        print(f"| {batch} | {'compiled' if compiled else 'graph'} | {b['decode_ms_per_step']:.2f} "
              f"({b['first_step_s']:.1f}) | {h['decode_ms_per_step']:.2f} ({h['first_step_s']:.1f}) | {ratio:.2f}x "
              f"| {ideal:.2f}x | {ratio / ideal:.0%} | {b['decode_bytes_per_step'] / h['decode_bytes_per_step']:.2f}x "
              f"| {same} |")
    for r in rows:
        r["gpu"], r["torch"] = gpu, torch.__version__
        r.pop("tokens", None)
        print(json.dumps(r))
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
