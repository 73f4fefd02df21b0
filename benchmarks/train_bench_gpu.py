"""GPU training throughput of costlaw's trainer (runs.train.train_run: the real step loop, data loader,
compile, fused AdamW, run directory) beside the plain-PyTorch reference, in one command.

Configs (issue 4):
  a         d 768, L 12, 12/12 heads, d_h 64, ffn 2048, T 1024, B 16, V 50304 (reference: 446K tok/s on H100)
  b         d 512, L 12, 8/2 heads, d_h 64, ffn 1408, T 32768, B 1, V 50304 (reference: 225K tok/s)
  b-hybrid  b with 4 full layers centred (1/3) and sink(64)+window(1024) elsewhere, its sink+window layers
            trained as balanced chunks (runs/models/sink_chunks.py), as the trainer does by default
  b-hybrid-one-mask  b-hybrid with one FlexAttention BlockMask per sparse layer instead (the path before chunks)
  x, x-hybrid  studies/hybrid-extend's extension: d 256, L 6, 8/2 heads, byte vocab 264, T 16384, B 2, θ 5e6;
            all full, and 2 of 6 layers full with sink(64)+window(1024) elsewhere
Each prints one JSON line: steady-state tokens/s (step 1 / compile excluded), MFU against costmodel's GPU
table with costmodel's sparsity-aware C_train, step time, peak memory, compile time; every config but a also
prefill latency and decode tokens/s at T (batch 1, the layout's KV cache, bf16). A last line compares each
hybrid to its all-full twin: measured train / prefill / decode speedups next to costmodel's ideal for the pair.

  python benchmarks/train_bench_gpu.py --reference ../shared/bench/gpu_reference.py   # ~5 min on one H100

With --reference the plain-PyTorch reference runs first for a and b (same shapes, same GPU, same command)
and a `ratio` line follows each of ours. --precision bf16,fp8 trains each config once per precision (fp8: the
blocks' linear layers in float8 through torchao, runs/fp8.py), each row naming its precision:

  python benchmarks/train_bench_gpu.py --configs a --precision auto,fp8 --reference   # item 5's opt-in, speed
  python benchmarks/train_bench_gpu.py --configs a --precision auto,fp8 --corpus site-packages --steps 600
      # its effect on loss: the same seed and batches, final training loss and val loss side by side
 Tokens are synthetic (`corpus = "synthetic"`: nothing to read)
unless --corpus names a prepared corpus or source. Document masking is off by default so the work equals
the reference's (plain causal attention); --doc-mask measures packed, document-masked training.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from costlaw.costmodel.core.rundir import CHECKPOINT, CHECKPOINT_HEADER, run_path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "a": dict(model=dict(d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, head_dim=64, ffn_dim=2048),
              seq_len=1024, batch_size=16, steps=40),
    "b": dict(model=dict(d_model=512, n_layers=12, n_heads=8, n_kv_heads=2, head_dim=64, ffn_dim=1408),
              seq_len=32768, batch_size=1, steps=30),
    "b-hybrid": dict(model=dict(d_model=512, n_layers=12, n_heads=8, n_kv_heads=2, head_dim=64, ffn_dim=1408,
                                attention={"sparse": "sink_window(64,1024)", "full_layers": 4}),
                     seq_len=32768, batch_size=1, steps=30),
}
# b-hybrid through one BlockMask per sparse layer, the path before balanced chunks, for a same-call comparison
CONFIGS["b-hybrid-one-mask"] = {**CONFIGS["b-hybrid"], "sink_chunks": False}


def _extension_configs() -> dict:
    """x and x-hybrid: studies/hybrid-extend's extension stage, read from its spec (the study's own ModelConfigs,
    T and batch), so the benchmark cannot drift from the study."""
    from costlaw.sweeps import expand, spec

    runs = expand.expand(spec.load(ROOT / "studies" / "hybrid-extend" / "spec.toml"), "/tmp/unused")
    out = {}
    for r in (r for r in runs if r.stage == "extend"):
        name = "x" if r.config.model.family == "gqa" else "x-hybrid"
        out[name] = dict(model=r.config.model.to_dict(), seq_len=r.config.data.seq_len,
                         batch_size=r.config.train.batch_size, steps=40, tokenizer=r.config.data.tokenizer)
    return out


CONFIGS.update(_extension_configs())
PAIRS = (("b", "b-hybrid"), ("b", "b-hybrid-one-mask"), ("x", "x-hybrid"))  # (all full, hybrid) compared
REFERENCE_ARGS = {
    "a": ["--d-model", "768", "--layers", "12", "--heads", "12", "--kv-heads", "12", "--seq", "1024", "--batch", "16"],
    "b": ["--d-model", "512", "--layers", "12", "--heads", "8", "--kv-heads", "2", "--seq", "32768", "--batch", "1",
          "--ffn", "1408"],
}


def model_config(name: str):
    from costlaw.costmodel import ModelConfig

    spec = CONFIGS[name]
    # the reference's vocabulary, tied embeddings and θ unless the config gives its own (x, x-hybrid)
    return ModelConfig.from_dict({"vocab_size": 50304, "tied_embeddings": True, "rope_theta": 5e5, **spec["model"]})


def run_config(name: str, args, precision: str = "auto") -> dict:
    import torch

    from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig
    from costlaw.runs.models import Transformer
    from costlaw.runs.train import train_run

    spec = CONFIGS[name]
    Transformer.sink_chunks = spec.get("sink_chunks", True)
    model = model_config(name)
    T = spec["seq_len"]
    inference = name != "a" and not args.no_inference
    cfg = RunConfig(model=model, name=f"bench-{name}-{precision}",
                    data=DataConfig(corpus=args.corpus, tokenizer=spec.get("tokenizer", "gpt2"), seq_len=T,
                                    doc_mask=args.doc_mask),
                    train=TrainConfig(steps=args.steps or spec["steps"], batch_size=spec["batch_size"], lr=3e-4,
                                      log_every=10, checkpoint_every=0, compile=args.compile, precision=precision),
                    eval=EvalConfig(val_tokens=T * spec["batch_size"], position_buckets=1, retrieval_samples=0,
                                    decode_tokens=32 if inference else 0))
    out = run_path(args.out, cfg.run_id)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    s = train_run(cfg, out, device=args.device, resume=False, progress=False)
    wall = time.perf_counter() - t0
    evals = [json.loads(x) for x in (out / "evals.jsonl").read_text().splitlines()] if (out / "evals.jsonl").exists() \
        else []
    inf = next((e["metrics"] for e in evals if e["eval"] == "inference" and e["tags"]["context"] == T), {})
    tok_s = s["tokens_per_s"]
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    row = {"ref": "costlaw", "config": name, "precision": precision, "gpu": gpu, "torch": torch.__version__,
           "status": s["status"], "params": s["params_measured"], "seq": T, "batch": spec["batch_size"],
           "steps": s["steps"], "tok_s": tok_s, "step_s": spec["batch_size"] * T / tok_s if tok_s else None,
           "mfu": s["mfu"], "peak_gib": s["peak_memory_bytes"] / 2**30, "compile_s": s["compile_s"],
           "wall_s": wall, "doc_mask": args.doc_mask, "sink_chunks": Transformer.sink_chunks,
           "compile_mode": os.environ.get("COSTLAW_COMPILE_MODE"),
           "c_train_flops_per_token": s["costs"]["c_train_flops_per_token"], "final_loss": s["final_loss"],
           "val_loss": s.get("val_loss"), "error": s["error"]}
    if inf:
        row.update(prefill_s=inf["prefill_s"], prefill_tokens=inf.get("prefill_tokens"),
                   decode_tokens_per_s=inf["decode_tokens_per_s"], kv_bytes=inf["kv_bytes"],
                   kv_bytes_analytic=inf["kv_bytes_analytic"])
    if not args.keep:
        for name in (CHECKPOINT, CHECKPOINT_HEADER):
            (out / name).unlink(missing_ok=True)
    return row


def ideal(full_cfg, hybrid_cfg, T: int) -> dict:
    from costlaw.costmodel import c_infer, c_train, kv_cache_bytes, params_total, prefill_flops

    def decode_bytes(c):
        return 2 * params_total(c) + kv_cache_bytes(c, T, "bf16")

    return {"train": c_train(full_cfg, T) / c_train(hybrid_cfg, T),
            "prefill": prefill_flops(full_cfg, T) / prefill_flops(hybrid_cfg, T),
            "decode_flops": c_infer(full_cfg, T) / c_infer(hybrid_cfg, T),
            "decode_bytes": decode_bytes(full_cfg) / decode_bytes(hybrid_cfg)}


def compare(b: dict, h: dict, base: str, name: str) -> dict:
    """Measured speedups of a hybrid row over its all-full base, next to costmodel's ideal for that pair."""
    want = ideal(model_config(base), model_config(name), CONFIGS[base]["seq_len"])
    cmp = {"compare": f"{name} vs {base}", "train_speedup": h["tok_s"] / b["tok_s"], "train_ideal": want["train"]}
    if b.get("prefill_s") and h.get("prefill_s"):
        cmp.update(prefill_speedup=b["prefill_s"] / h["prefill_s"], prefill_ideal=want["prefill"])
    if b.get("decode_tokens_per_s") and h.get("decode_tokens_per_s"):
        cmp.update(decode_speedup=h["decode_tokens_per_s"] / b["decode_tokens_per_s"],
                   decode_ideal_flops=want["decode_flops"], decode_ideal_bytes=want["decode_bytes"])
    cmp["train_share_of_ideal"] = cmp["train_speedup"] / want["train"]
    return cmp


def reference(path: str, name: str) -> dict | None:
    r = subprocess.run([sys.executable, path, *REFERENCE_ARGS[name]], capture_output=True, text=True)
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode != 0 or not lines:
        error = (r.stderr.strip().splitlines() or ["?"])[-1]
        print(json.dumps({"ref": "plain-pytorch", "config": name, "error": error}), flush=True)
        return None
    row = json.loads(lines[-1])
    row["config"] = name
    print(json.dumps(row), flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="a,b,b-hybrid", help="comma-separated: " + ", ".join(CONFIGS))
    p.add_argument("--steps", type=int, help="optimizer steps per config (default 40 for a, 30 for b)")
    p.add_argument("--corpus", default="synthetic", help="synthetic (default), a source or a prepared corpus dir")
    p.add_argument("--doc-mask", action="store_true", help="document-masked packed rows (varlen kernel on full "
                   "layers, FlexAttention on sparse ones)")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--precision", default="auto", help="comma-separated train.precision values, each config trained "
                   "once per value: auto (bf16 on a GPU), bf16, fp32, fp8 (torchao)")
    p.add_argument("--compile-mode", help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    p.add_argument("--no-inference", action="store_true", help="skip prefill/decode timing (every config but a)")
    default_ref = ROOT.parent / "shared" / "bench" / "gpu_reference.py"
    p.add_argument("--reference", nargs="?", const=str(default_ref),
                   help=f"also run the plain-PyTorch reference first (default path {default_ref})")
    p.add_argument("--device", default="cuda", help="cuda (default); cpu only for a smoke test of the script")
    p.add_argument("--out", help="results root (default: a temporary directory, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep checkpoints in --out")
    args = p.parse_args()
    if args.compile_mode:
        os.environ["COSTLAW_COMPILE_MODE"] = args.compile_mode
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    for n in names:
        if n not in CONFIGS:
            p.error(f"--configs: unknown config {n!r}; choose from {', '.join(CONFIGS)}")
    precisions = [x.strip() for x in args.precision.split(",") if x.strip()]
    for x in precisions:
        if x not in ("auto", "bf16", "fp32", "fp8"):
            p.error(f"--precision: unknown value {x!r}; choose from auto, bf16, fp32, fp8")
    tmp = None
    if not args.out:
        tmp = tempfile.mkdtemp(prefix="costlaw-bench-")
        args.out = tmp
    try:
        rows = {}
        for n in names:
            ref = reference(args.reference, n) if args.reference and n in REFERENCE_ARGS else None
            for prec in precisions:
                try:
                    row = run_config(n, args, prec)
                except Exception as e:  # one failing config must not hide the others
                    row = {"ref": "costlaw", "config": n, "precision": prec,
                           "error": f"{type(e).__name__}: {e}".splitlines()[0]}
                rows.setdefault(n, row)  # the hybrid comparisons use each config's first precision
                print(json.dumps(row), flush=True)
                if ref and row.get("tok_s"):
                    print(json.dumps({"ratio": n, "precision": prec, "tok_s_vs_reference": row["tok_s"] / ref["tok_s"],
                                      "goal": 1.2 if n == "a" else None}), flush=True)
        for base, hn in PAIRS:
            if rows.get(base, {}).get("tok_s") and rows.get(hn, {}).get("tok_s"):
                print(json.dumps(compare(rows[base], rows[hn], base, hn)), flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
