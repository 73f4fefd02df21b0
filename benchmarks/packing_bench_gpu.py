"""Training speed of hierarchical, single-level, greedy and no packing on one GPU (issue 27, item 1).

One model config is trained from scratch for a fixed number of optimizer steps once per packing, one after the
other in this process, each through runs.train.train_run into a normal run directory:

  hierarchical  HBP: pack groups of rows of each of --levels (default 2048, 8192, 16384), balance batching
  balanced      single-level packing into rows of --seq-len, balanced by attention cost
  greedy        single-level first-fit packing in draw order
  none          one document piece per row, padded

on file documents (data.long_docs = false: with directory documents a 16K row rarely holds two) with document
masking, --positions positions a step (default 32768: 2 rows of 16K, as studies/extension-ablations trains). With
--grad-accum 1 (the study's) a step is one micro-batch, so a hierarchical step holds rows of one level and balance
batching has nothing to even out across micro-batches; --grad-accum 2 or more measures it.

Steady state is every step after the first --warmup steps that compiled nothing (each new row length of
hierarchical packing recompiles the model mid-run); step times are the gaps between the trainer's own CUDA
events at step ends. Per packing: real (target) tokens/s and positions/s over those steps, mean step time and
its CV, the spread of each step's attention cost Σ s², padding ratio, ABR (over the run; within steps, mean
and sd), Ave-T, level shares, compile seconds, peak training memory, and real tokens/s against balanced's.

  python benchmarks/packing_bench_gpu.py --out benchmarks/results/packing_bench.json   # ~5 min on one H200

The corpus is prepared first, outside the runs, if the cache lacks it (as `python -m costlaw data prepare --source
site-packages+include --tokenizer byte --no-long-docs` would); its seconds are `prepare_s` in the JSON.

On a CPU, at tiny scale (~2 min on 2 cores; tests/runs/test_packing_bench.py runs a smaller one on short files):
  python benchmarks/packing_bench_gpu.py --corpus stdlib --d-model 64 --n-layers 2 --seq-len 1024 \\
      --levels 256,512,1024 --steps 6 --device cpu --out /tmp/packing_bench_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKINGS = ("hierarchical", "balanced", "greedy", "none")
BASELINE = "balanced"


def build_config(a, packing: str):
    from costlaw.costmodel import ModelConfig
    from costlaw.costmodel.presets import paper_ffn
    from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig

    model = ModelConfig(d_model=a.d_model, n_layers=a.n_layers, n_heads=a.n_heads, n_kv_heads=a.n_kv_heads,
                        head_dim=a.head_dim, ffn_dim=paper_ffn(a.d_model), vocab_size=264, tied_embeddings=True,
                        rope_theta=5e6)
    rows, rem = divmod(a.positions, a.seq_len * a.grad_accum)
    if rem or rows < 1:
        raise SystemExit(f"--positions {a.positions} must be a multiple of --seq-len × --grad-accum "
                         f"({a.seq_len * a.grad_accum})")
    levels = tuple(a.levels) if packing == "hierarchical" else ()
    return RunConfig(
        model=model, seed=a.seed, name=f"packing-bench-{packing}",
        data=DataConfig(corpus=a.corpus, tokenizer="byte", seq_len=a.seq_len, packing=packing, doc_mask=True,
                        long_docs=False, pack_levels=levels),
        train=TrainConfig(steps=a.steps, batch_size=rows, grad_accum=a.grad_accum, lr=a.lr, log_every=10,
                          checkpoint_every=0),
        # a small val score only shows every packing trained; decode timing and the passkey probe are not asked
        eval=EvalConfig(val_tokens=a.positions, val_sample="spread", retrieval_samples=0, decode_tokens=0))


@contextlib.contextmanager
def step_log():
    """Record, at each step end the trainer marks, its mark and the running packing statistics and compile count:
    per-step values are the differences. Observes the trainer; changes nothing it does."""
    import torch

    from costlaw.runs.train import Trainer

    marks: list[dict] = []
    original = Trainer._mark_step

    def mark(self):
        original(self)
        p = self.task.pack
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        when, compiles = self._step_marks[-1]  # the trainer's own mark: its time and the frames compiled by then
        marks.append({"mark": when, "tokens": p.tokens, "cost": p.cost_sum, "abr": p.step_abr_sum,
                      "levels": dict(p.level_positions), "compiles": compiles, "peak": peak})

    Trainer._mark_step = mark
    try:
        yield marks
    finally:
        Trainer._mark_step = original


def per_step(marks: list[dict], warmup: int) -> list[dict]:
    """One entry per step: its time (None for step 1, whose start has no mark), targets, attention cost, ABR
    among its micro-batches, row lengths, and whether it is steady state."""
    out, prev = [], {"tokens": 0, "cost": 0, "abr": 0.0, "levels": {}, "compiles": None}
    for i, m in enumerate(marks):
        dt = None
        if i:
            a, b = marks[i - 1]["mark"], m["mark"]
            dt = a.elapsed_time(b) / 1000.0 if hasattr(a, "elapsed_time") else b - a
        compiled = prev["compiles"] is not None and m["compiles"] > prev["compiles"]
        levels = sorted(int(k) for k, v in m["levels"].items() if v > prev["levels"].get(k, 0))
        out.append({"step": i + 1, "time_s": dt, "tokens": m["tokens"] - prev["tokens"],
                    "cost": m["cost"] - prev["cost"], "abr": m["abr"] - prev["abr"], "levels": levels,
                    "compiled": compiled, "timed": i >= warmup and dt is not None and not compiled})
        prev = m
    return out


def cv(xs: list[float]) -> float | None:
    return statistics.stdev(xs) / statistics.fmean(xs) if len(xs) > 1 and statistics.fmean(xs) > 0 else None


def row_of(packing: str, summary: dict, steps: list[dict], positions: int, train_peak: int | None) -> dict:
    timed = [s for s in steps if s["timed"]]
    secs = sum(s["time_s"] for s in timed)
    times = [s["time_s"] for s in timed]
    abrs = [s["abr"] for s in steps]
    d = summary["data"]
    return {
        "packing": packing, "run_id": summary["run_id"], "status": summary["status"],
        "steps_timed": len(timed),
        "real_tokens_per_s": sum(s["tokens"] for s in timed) / secs if secs > 0 else None,
        "positions_per_s": len(timed) * positions / secs if secs > 0 else None,
        "step_time_s": statistics.fmean(times) if times else None, "step_time_cv": cv(times),
        "step_time_max_s": max(times) if times else None,
        "attn_cost_cv": cv([float(s["cost"]) for s in timed]),
        "padding_ratio": d["padding_ratio"], "abr": d["abr"], "abr_step": d["abr_step"],
        "abr_step_sd": statistics.pstdev(abrs) if abrs else None, "ave_t": d["ave_t"],
        "level_shares": d["level_shares"], "micro_batches": d["micro_batches"],
        "compile_s": summary["compile_s"],
        # steps after the first that compiled (new row lengths): their seconds are compilation, not training
        "recompile_steps": sum(s["compiled"] for s in steps),
        "recompile_s": sum(s["time_s"] for s in steps if s["compiled"] and s["time_s"] is not None),
        "peak_train_memory_bytes": train_peak, "peak_memory_bytes": summary["peak_memory_bytes"],
        "peak_memory_kind": summary["peak_memory_kind"],
        # the trainer's own numbers: positions/s (padding included) and step times from step 2 on, recompiling steps
        # left out (runs/train.py), beside this bench's warm-up-free ones
        "trainer_tokens_per_s": summary["tokens_per_s"], "trainer_step_time_s": summary["step_time_s"],
        "trainer_step_time_cv": summary["step_time_cv"],
        "final_loss": summary["final_loss"], "val_loss": summary["val_loss"], "wall_s": summary["wall_s"],
        "steps": steps,
    }


def fmt(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def table(rows: list[dict]) -> str:
    head = ("packing", "real tok/s", "pos/s", "x bal", "step ms", "CV", "pad", "ABR", "ABR step", "Ave-T",
            "compile s", "peak GiB", "levels")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append((r["packing"], "FAILED: " + r["error"][:60]) + ("",) * (len(head) - 2))
            continue
        peak = r["peak_train_memory_bytes"] or r["peak_memory_bytes"]
        shares = " ".join(f"{k}:{v:.2f}" for k, v in (r["level_shares"] or {}).items())
        lines.append((r["packing"], fmt(r["real_tokens_per_s"], ",.0f"), fmt(r["positions_per_s"], ",.0f"),
                      fmt(r.get("ratio_vs_balanced"), ".3f"), fmt(r["step_time_s"] and r["step_time_s"] * 1e3, ".1f"),
                      fmt(r["step_time_cv"], ".3f"), fmt(r["padding_ratio"], ".3f"), fmt(r["abr"], ".3f"),
                      fmt(r["abr_step"], ".3f"), fmt(r["ave_t"], ",.0f"), fmt(r["compile_s"], ".1f"),
                      fmt(peak / 2**30, ".2f"), shares))
    widths = [max(len(str(x[i])) for x in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(x, widths)).rstrip() for x in lines)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="site-packages+include", help="a corpus source (costlaw data prepare)")
    p.add_argument("--packings", default=",".join(PACKINGS), help=f"in order (default {','.join(PACKINGS)})")
    p.add_argument("--levels", type=ints, default=[2048, 8192, 16384], help="hierarchical row lengths")
    p.add_argument("--seq-len", type=int, default=16384)
    p.add_argument("--positions", type=int, default=32768, help="positions a step (default 32768)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches a step (default 1, the study's)")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per packing (default 60)")
    p.add_argument("--warmup", type=int, help="first steps left out of the timing (default 5; a third of few steps)")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=6)
    p.add_argument("--n-heads", type=int, default=8)
    p.add_argument("--n-kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "packing_bench.json")
    p.add_argument("--root", type=Path, help="keep the run directories here (default: a temporary one, removed)")
    a = p.parse_args(argv)
    a.packings = [x.strip() for x in a.packings.split(",") if x.strip()]
    if not a.packings or any(x not in PACKINGS for x in a.packings):
        raise SystemExit(f"--packings: {','.join(a.packings)!r}; choose from {', '.join(PACKINGS)}")
    if a.warmup is None:
        a.warmup = min(5, max(1, a.steps // 3))
    if a.warmup < 1 or a.steps < a.warmup + 2:
        raise SystemExit(f"--steps {a.steps} must leave at least 2 steps after --warmup {a.warmup} (>= 1)")
    return a


def main(argv=None) -> int:
    a = parse(argv)
    import torch

    from costlaw.costmodel.core.rundir import run_path
    from costlaw.runs.data import load_corpus
    from costlaw.runs.train import resolve_device, train_run

    dev = resolve_device(a.device)
    configs = {k: build_config(a, k) for k in a.packings}
    work = a.root or Path(tempfile.mkdtemp(prefix="packing-bench-"))
    for cfg in configs.values():  # a finished run would be returned, not retrained: nothing to time
        if run_path(work, cfg.run_id).exists():
            raise SystemExit(f"--root: {run_path(work, cfg.run_id)} exists; remove it or use another --root")
    t0 = time.perf_counter()
    corpus = load_corpus(a.corpus, "byte", long_docs=False, progress=False)  # prepared once, outside the runs
    first = next(iter(configs.values()))
    result = {"gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "device": str(dev),
              "torch": torch.__version__, "corpus": a.corpus, "corpus_id": corpus.corpus_id,
              "train_tokens": corpus.train.tokens, "train_docs": len(corpus.train.positions),
              "prepare_s": time.perf_counter() - t0,
              "config": {"model": first.model.to_dict(), "seq_len": a.seq_len, "levels": a.levels,
                         "positions_per_step": a.positions, "batch_size": first.train.batch_size,
                         "grad_accum": a.grad_accum, "steps": a.steps, "warmup": a.warmup, "lr": a.lr,
                         "seed": a.seed, "doc_mask": True, "long_docs": False},
              "baseline": BASELINE, "packings": []}
    try:
        for packing, cfg in configs.items():
            if dev.type == "cuda":  # each packing compiles afresh and its peak is its own
                torch._dynamo.reset()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "compile-cache" / packing)
            try:
                with step_log() as marks:
                    summary = train_run(cfg, run_path(work, cfg.run_id), device=str(dev), progress=False)
                if summary["status"] != "completed":
                    raise RuntimeError(f"run ended {summary['status']}: {summary.get('error')}")
            except Exception as e:  # the other packings still run; the JSON says why this one has no numbers
                error = f"{type(e).__name__}: {e}"
                result["packings"].append({"packing": packing, "run_id": cfg.run_id, "error": error})
                print(f"{packing}: FAILED {error}", flush=True)
                continue
            row = row_of(packing, summary, per_step(marks, a.warmup), a.positions,
                         marks[-1]["peak"] if marks else None)
            result["packings"].append(row)
            print(f"{packing}: {row['steps_timed']} steps timed, {fmt(row['real_tokens_per_s'], ',.0f')} real tok/s, "
                  f"step CV {fmt(row['step_time_cv'], '.3f')}, compile {fmt(row['compile_s'], '.1f')} s", flush=True)
    finally:
        if a.root is None:
            shutil.rmtree(work, ignore_errors=True)
    base = next((r for r in result["packings"] if r["packing"] == BASELINE and "error" not in r), None)
    for r in result["packings"]:
        if "error" not in r:
            ok = base is not None and base["real_tokens_per_s"] and r["real_tokens_per_s"] is not None
            r["ratio_vs_balanced"] = r["real_tokens_per_s"] / base["real_tokens_per_s"] if ok else None
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['gpu']}, torch {result['torch']}, {a.corpus} (file documents), T {a.seq_len}, "
          f"{a.positions} positions/step, {a.steps} steps ({a.warmup} warm-up) -> {a.out}")
    print(table(result["packings"]))
    return 0 if all("error" not in r for r in result["packings"]) else 1


if __name__ == "__main__":
    sys.exit(main())
