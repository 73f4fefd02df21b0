"""GPU smoke benchmark of runs.models: build, torch.compile(fullgraph=True) and time training steps (forward +
backward + fused AdamW under bf16 autocast; median of 20 steps after 5 warm-up steps, as
../shared/bench/gpu_reference.py does), for the issue's configs:

  a       d 768, L 12, 12/12 heads, V 50304, T 1024, B 16
  b       d 512, L 12, 8/2 heads,  V 50304, T 32768, B 1
  hybrid  b with 1/3 full layers (centred) and sink_window(64,1024) elsewhere

d_ff is the reference's (8d/3 rounded up to 64) so parameter counts match gpu_reference.py. Prints one JSON
line per measurement and a table; `--infer` adds prefill latency and decode tokens/s with the layout's KV
cache for b and hybrid, next to costmodel's ideal ratios. No data needed. Run it beside the reference in one
command, e.g.

  python ../shared/bench/gpu_reference.py --d-model 768 --layers 12 --heads 12 --kv-heads 12 --seq 1024 --batch 16
  python ../shared/bench/gpu_reference.py --d-model 512 --layers 12 --heads 8 --kv-heads 2 --seq 32768 --batch 1
  python benchmarks/model_smoke_gpu.py --infer

`--docs N` packs random documents of mean length N (every layer then goes through FlexAttention with a
BlockMask built per step inside the graph). `--device cpu --dry-run --compile off` checks the script itself.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from costlaw.costmodel import (  # noqa: E402
    ModelConfig,
    c_infer,
    c_train,
    hybrid_layout,
    kv_cache_bytes,
    params_total,
    prefill_flops,
)
from costlaw.runs.models import build_model  # noqa: E402

CONFIGS = {
    "a": dict(d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, seq=1024, batch=16),
    "b": dict(d_model=512, n_layers=12, n_heads=8, n_kv_heads=2, seq=32768, batch=1),
    "hybrid": dict(d_model=512, n_layers=12, n_heads=8, n_kv_heads=2, seq=32768, batch=1,
                   sparse="sink_window(64,1024)"),
}
DRY = dict(d_model=64, n_layers=3, seq=256, batch=2, vocab=512)


def reference_ffn(d_model: int) -> int:
    return 64 * math.ceil(8 * d_model / 3 / 64)


def make_config(spec: dict, vocab: int) -> ModelConfig:
    layers = spec["n_layers"]
    layout = hybrid_layout(layers, spec["sparse"], full_layers=layers // 3) if "sparse" in spec else ()
    return ModelConfig(d_model=spec["d_model"], n_layers=layers, n_heads=spec["n_heads"],
                       n_kv_heads=spec["n_kv_heads"], head_dim=64, ffn_dim=reference_ffn(spec["d_model"]),
                       vocab_size=vocab, tied_embeddings=True, rope_theta=5e5, layout=layout)


def random_docs(batch: int, seq: int, mean: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(batch):
        ids, doc = [], 0
        while len(ids) < seq:
            n = max(1, int(torch.empty(1).exponential_(1 / mean, generator=g).item()))
            ids += [doc] * n
            doc += 1
        rows.append(ids[:seq])
    return torch.tensor(rows, device=device)


def timed(fn, steps: int, device: str) -> list[float]:
    times = []
    for _ in range(steps):
        if device == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return times


def median_ms(fn, reps: int = 20, warmup: int = 3) -> float:
    """Median CUDA time of `fn` in ms over `reps` calls, after `warmup` untimed ones."""
    timed(fn, warmup, "cuda")
    return 1e3 * statistics.median(timed(fn, reps, "cuda"))


def train(name: str, cfg: ModelConfig, seq: int, batch: int, a) -> dict:
    dev = a.device
    torch.manual_seed(0)
    model = build_model(cfg, device=dev)
    n = sum(p.numel() for p in model.parameters())
    assert n == params_total(cfg), (n, params_total(cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=dev == "cuda")
    model.attention_masks(seq, device=dev)  # fixed masks built once, outside the compiled graph
    f = torch.compile(model, fullgraph=True, mode=a.mode) if a.compile == "on" else model
    idx = torch.randint(0, cfg.vocab_size, (batch, seq), device=dev)
    tgt = torch.randint(0, cfg.vocab_size, (batch, seq), device=dev)
    doc_ids = random_docs(batch, seq, a.docs, dev) if a.docs else None

    def step():
        with torch.autocast(dev, torch.bfloat16):
            loss = f(idx, tgt, doc_ids=doc_ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()
    if dev == "cuda":
        torch.cuda.synchronize()
    first_s = time.perf_counter() - t0  # includes compilation
    for _ in range(a.warmup - 1):
        step()
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = statistics.median(timed(step, a.steps, dev))
    ref_flops = 6 * n + 6 * cfg.n_layers * seq * cfg.n_heads * cfg.head_dim  # gpu_reference.py's count
    from torch._dynamo.utils import counters

    return dict(
        bench="runs.models-train", config=name, gpu=torch.cuda.get_device_name() if dev == "cuda" else "cpu",
        torch=torch.__version__, params=n, layout=cfg.to_dict()["layout"], seq=seq, batch=batch,
        docs_mean_len=a.docs or None, compile=a.compile, mode=a.mode, first_step_s=round(first_s, 1),
        step_s=t, tok_s=batch * seq / t, mfu=ref_flops * batch * seq / t / (a.peak_tflops * 1e12),
        mfu_effective=c_train(cfg, seq) * batch * seq / t / (a.peak_tflops * 1e12),
        c_train_flops_per_token=c_train(cfg, seq),
        peak_gib=torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None,
        graph_breaks=sum(counters["graph_break"].values()), unique_graphs=counters["stats"]["unique_graphs"])


def infer(name: str, cfg: ModelConfig, seq: int, a, graph: bool) -> dict:
    """Batch `--infer-batch` prefill of `seq` tokens into the layout's cache, then `--generate` decode steps;
    model in bf16 (FlexAttention and its BlockMask builder compiled inside), decode eager or replayed from a
    CUDA graph (`graph`). One cache, reset between rounds, so the graph captured in the warm-up round is
    replayed in the timed ones. `first_step_s` is the warm-up round's first decode step: the capture (and a
    compiled step's compilation, `GraphDecoder.compile_body`), the cost a cache pays once."""
    dev, B, G = a.device, a.infer_batch, a.generate
    torch.manual_seed(0)
    dtype, dtype_name = (torch.bfloat16, "bf16") if dev == "cuda" else (torch.float32, "fp32")
    model = build_model(cfg, device=dev, dtype=dtype)
    model.graph_decode = graph
    prompt = torch.randint(0, cfg.vocab_size, (B, seq), device=dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    prefill_s, decode_s, first_step_s = [], [], None
    cache = model.new_cache(B, seq + G, device=dev)
    with torch.inference_mode():
        for _ in range(a.infer_rounds):  # the first round warms up (compiles flex, builds masks, captures)
            cache.reset()
            sync()
            t = time.perf_counter()
            tok = model.prefill(prompt, cache, last_only=True)[:, -1].argmax(-1)
            sync()
            prefill_s.append(time.perf_counter() - t)
            out = []
            t = time.perf_counter()
            for _ in range(G):
                tok = model.decode(tok, cache)[:, -1].argmax(-1)
                out.append(tok)
                if first_step_s is None:
                    sync()
                    first_step_s = time.perf_counter() - t
            sync()
            decode_s.append(time.perf_counter() - t)
    return dict(bench="runs.models-infer", config=name, graph=graph, batch=B, seq=seq, generate=G,
                prefill_s=statistics.median(prefill_s[1:]), decode_tok_s=B * G / statistics.median(decode_s[1:]),
                decode_ms_per_step=statistics.median(decode_s[1:]) / G * 1e3, first_step_s=first_step_s,
                tokens=torch.stack(out, 1).tolist(),
                kv_cache_bytes=cache.nbytes(), kv_cache_bytes_costmodel=kv_cache_bytes(cfg, seq + G, dtype_name, B),
                prefill_flops=prefill_flops(cfg, seq), c_infer_flops_per_token=c_infer(cfg, seq),
                decode_bytes_per_step=2 * params_total(cfg) + kv_cache_bytes(cfg, seq, "bf16", B))  # bf16 weights


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="a,b,hybrid", help="comma-separated subset of a,b,hybrid")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", choices=["on", "off"], default="on")
    p.add_argument("--mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    p.add_argument("--docs", type=int, default=0, help="pack random documents of this mean length (0: none)")
    p.add_argument("--infer", action="store_true", help="also time prefill and decode for b and hybrid")
    p.add_argument("--infer-batch", type=int, default=8)
    p.add_argument("--infer-only", action="store_true", help="skip the training steps (with --infer)")
    p.add_argument("--generate", type=int, default=64)
    p.add_argument("--infer-rounds", type=int, default=3, help="prefill + decode rounds; the first warms up")
    p.add_argument("--decode", choices=["graph", "eager", "both"], default="both",
                   help="decode replayed from a CUDA graph (the default path), eager, or both beside each other")
    p.add_argument("--compile-decode", action="store_true",
                   help="capture a torch.compile'd decode step (GraphDecoder.compile_body)")
    p.add_argument("--fused", choices=["on", "off"], default="on",
                   help="compiled pointwise pieces in eager passes such as prefill (runs/models/fused.py)")
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes and 2 steps, to check the script")
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("model_smoke_gpu: no CUDA device; use --device cpu --dry-run --compile off to check the script")
        return 2
    names = [n.strip() for n in a.only.split(",") if n.strip()]
    vocab = DRY["vocab"] if a.dry_run else a.vocab
    if a.dry_run:
        a.steps, a.warmup, a.generate = 2, 1, 4
    rows = {}
    for name in names:
        spec = dict(CONFIGS[name], **({k: v for k, v in DRY.items() if k != "vocab"} if a.dry_run else {}))
        cfg = make_config(spec, vocab)
        if a.infer_only:
            rows[name] = (cfg, spec, None)
            continue
        row = train(name, cfg, spec["seq"], spec["batch"], a)
        print(json.dumps(row), flush=True)
        rows[name] = (cfg, spec, row)
        if a.device == "cuda":
            torch.cuda.empty_cache()
    infer_rows = {}
    from costlaw.runs.models import fused

    fused.enabled = a.fused == "on"
    if a.compile_decode:
        from costlaw.runs.models.decode_graph import GraphDecoder

        GraphDecoder.compile_body = True
    if a.infer:
        modes = {"graph": [True], "eager": [False], "both": [False, True]}[a.decode]
        for name in [n for n in ("b", "hybrid") if n in rows]:
            cfg, spec, _ = rows[name]
            for graph in modes:
                r = infer(name, cfg, spec["seq"], a, graph)
                infer_rows[name, graph] = r
                print(json.dumps({k: v for k, v in r.items() if k != "tokens"}), flush=True)
        for name in ("b", "hybrid"):
            if (name, False) in infer_rows and (name, True) in infer_rows:
                e, g = infer_rows[name, False], infer_rows[name, True]
                same = sum(x == y for re, rg in zip(e["tokens"], g["tokens"]) for x, y in zip(re, rg))
                ge, gg = e["decode_ms_per_step"], g["decode_ms_per_step"]
                print(f"{name}: decode graph {gg:.2f} ms/step vs eager {ge:.2f} ms/step ({ge / gg:.2f}x); "
                      f"greedy tokens equal {same}/{a.infer_batch * a.generate}")
    if any(r is not None for _, _, r in rows.values()):
        print("\n| config | params | tok/s | step ms | MFU (ref count) | MFU (effective) | peak GiB | first step s |")
        print("|---|---|---|---|---|---|---|---|")
    for name, (_, _, r) in rows.items():
        if r is None:
            continue
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        print(f"| {name} | {r['params'] / 1e6:.1f}M | {r['tok_s']:,.0f} | {r['step_s'] * 1e3:.1f} | {r['mfu']:.1%} "
              f"| {r['mfu_effective']:.1%} | {peak} | {r['first_step_s']} |")
    if "b" in rows and "hybrid" in rows:
        (cb, sb, rb), (ch, _, rh) = rows["b"], rows["hybrid"]
        T = sb["seq"]
        if rb and rh:
            print(f"\nhybrid vs b (T={T}): train {rb['step_s'] / rh['step_s']:.2f}x "
                  f"(costmodel ideal {c_train(cb, T) / c_train(ch, T):.2f}x)")
        for graph in (False, True):
            if (("b", graph) not in infer_rows) or (("hybrid", graph) not in infer_rows):
                continue
            ib, ih = infer_rows["b", graph], infer_rows["hybrid", graph]
            print(f"  decode {'graph' if graph else 'eager'}: prefill {ib['prefill_s'] / ih['prefill_s']:.2f}x "
                  f"(ideal {prefill_flops(cb, T) / prefill_flops(ch, T):.2f}x by FLOPs); "
                  f"decode {ih['decode_tok_s'] / ib['decode_tok_s']:.2f}x "
                  f"(ideal {c_infer(cb, T) / c_infer(ch, T):.2f}x by FLOPs, "
                  f"{ib['decode_bytes_per_step'] / ih['decode_bytes_per_step']:.2f}x by bytes read); "
                  f"{ib['decode_tok_s']:,.0f} vs {ih['decode_tok_s']:,.0f} tok/s")
            print(f"  KV bytes {ib['kv_cache_bytes'] / ih['kv_cache_bytes']:.2f}x smaller "
                  f"({ih['kv_cache_bytes'] / 2**20:.0f} MiB vs {ib['kv_cache_bytes'] / 2**20:.0f} MiB, "
                  "measured == costmodel: "
                  f"{all(r['kv_cache_bytes'] == r['kv_cache_bytes_costmodel'] for r in (ib, ih))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
