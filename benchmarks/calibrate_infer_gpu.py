"""Cost-model calibration on a GPU (issue 8, item 6): batch-1 inference memory and time across contexts for
one model of each family, next to costmodel's analytic numbers.

    python benchmarks/calibrate_infer_gpu.py --out OUT/measurements.json          # ~2 min on one H100
    costlaw calibrate OUT/measurements.json --out studies/calibration              # fits, table, figure

Families (one shape, d 768, L 12, 12 query / 4 KV heads, d_h 64, V 50304, random bf16 weights: time and
memory do not depend on what the weights learned):
  gqa         every layer full attention
  hybrid      4 of 12 layers full (centred), the rest sink 64 + window 1024 (LongGen's 1/3-full layout)
  compressed  gqa under SnapKV keeping 25% of the prompt's KV (training-free, so random weights suffice)

Per family and context T: prefill T − G tokens into a fresh cache, then decode G tokens greedily, so the
cache ends at exactly T (as runs/evaluate.py does); the median of `--repeats` measurements after a warm-up.
Rows: prefill and decode seconds, KV bytes measured (`cache.nbytes()`) and analytic, peak CUDA memory
(torch.cuda.max_memory_allocated after a reset), weights bytes, M_infer bytes and C_infer FLOPs/token.
`--decode-step compiled` captures the opt-in torch.compile'd decode step in the graph (GraphDecoder.compile_body:
fewer, fused kernels; a compilation per model and cache shape, about 20 s on an H100), the path to decode near its
roofline (issue 23, item 6); every row records which step it timed.
`--device cpu --contexts 256,512 --d-model 64 --layers 3` checks the script without a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from costlaw.costmodel import KVPolicy, ModelConfig, c_infer, hybrid_layout, kv_cache_bytes, m_infer, params_total  # noqa: E402
from costlaw.costmodel.core.units import parse_tokens  # noqa: E402
from costlaw.costmodel.costs import dtype_bytes  # noqa: E402
from costlaw.costmodel.hardware import GPUS  # noqa: E402
from costlaw.costmodel.presets import paper_ffn  # noqa: E402
from costlaw.runs.evaluate import timed_generation  # noqa: E402
from costlaw.runs.kv.registry import policy_model  # noqa: E402
from costlaw.runs.models import build_model  # noqa: E402
from costlaw.runs.models.decode_graph import GraphDecoder  # noqa: E402

FORMAT = "costlaw-calibration-measurements/1"
LABELS = {"gqa": "dense GQA", "hybrid": "1/3 full, sink 64 + window 1024", "compressed": "GQA + SnapKV keep 0.25"}


def family_configs(d: int, layers: int, heads: int, kv_heads: int, vocab: int) -> dict[str, ModelConfig]:
    base = ModelConfig(d_model=d, n_layers=layers, n_heads=heads, n_kv_heads=kv_heads, head_dim=64,
                       ffn_dim=paper_ffn(d), vocab_size=vocab, tied_embeddings=True, rope_theta=5e5)
    return {"gqa": base,
            "hybrid": base.replace(layout=hybrid_layout(layers, "sink_window(64,1024)",
                                                        full_layers=max(1, layers // 3))),
            "compressed": base.replace(kv_policy=KVPolicy("snapkv", keep=0.25))}


def gpu_key(device: torch.device) -> str | None:
    """The costmodel.hardware key of this GPU (roofline numbers), from its torch name."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    for key in GPUS:
        k = key.lower()
        if k.split("-")[0] in name and (("pcie" in k) == ("pcie" in name)):
            return key
    return None


def measure(net, cfg: ModelConfig, T: int, G: int, repeats: int, device) -> dict:
    runner = policy_model(net, cfg) if cfg.kv_policy is not None else net
    prompt = torch.randint(0, cfg.vocab_size, (1, T - G), device=device)
    cache, prefill_s, decode_s, peak = timed_generation(runner, prompt, T, G, device, repeats)
    kv = cache.nbytes()
    peak = peak if device.type == "cuda" else 0  # ru_maxrss is the process's, not this measurement's
    dtype = "bf16" if next(net.parameters()).dtype == torch.bfloat16 else "fp32"
    return {"context": T, "batch": 1, "dtype": dtype, "prefill_tokens": T - G,
            "prefill_s": prefill_s, "decode_tokens": G, "decode_s": decode_s,
            "kv_bytes_measured": int(kv), "kv_bytes_analytic": int(kv_cache_bytes(cfg, T, dtype)),
            "weights_bytes": int(sum(p.numel() * p.element_size() for p in net.parameters())),
            "peak_bytes": int(peak), "m_infer_bytes_analytic": float(m_infer(cfg, T) * dtype_bytes(dtype)),
            "c_infer_flops_per_token": float(c_infer(cfg, T)), "params_total": params_total(cfg)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="measurements JSON to write")
    ap.add_argument("--contexts", default="1K,2K,4K,8K,16K,32K,64K")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--families", default="gqa,hybrid,compressed")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--decode-step", choices=("graph", "compiled"), default="graph",
                    help="the decode step captured in the CUDA graph: the eager one (default) or torch.compile'd")
    a = ap.parse_args(argv)
    was, GraphDecoder.compile_body = GraphDecoder.compile_body, a.decode_step == "compiled"
    try:
        return _measure_all(a)
    finally:
        GraphDecoder.compile_body = was


def _measure_all(a) -> int:
    device = torch.device(a.device)
    contexts = [parse_tokens(c) for c in a.contexts.split(",")]
    cfgs = family_configs(a.d_model, a.layers, a.heads, a.kv_heads, a.vocab)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    net = build_model(cfgs["gqa"], device=device, dtype=dtype).eval()
    hybrid = build_model(cfgs["hybrid"], device=device, dtype=dtype).eval()
    hybrid.load_state_dict(net.state_dict())  # same weights: the families differ only in attention
    doc = {"format": FORMAT, "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "gpu_key": gpu_key(device), "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "decode_tokens": a.decode_tokens, "decode_step": a.decode_step, "repeats": a.repeats, "rows": [],
           "failed": []}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = doc["rows"]
    for fam in a.families.split(","):
        cfg = cfgs[fam]
        model = hybrid if fam == "hybrid" else net
        for T in contexts:
            t0 = time.perf_counter()
            try:
                r = {"family": fam, "label": LABELS[fam], "model": cfg.to_dict(), "model_id": cfg.config_id,
                     "decode_step": a.decode_step,
                     **measure(model, cfg, T, min(a.decode_tokens, T // 2), a.repeats, device)}
            except torch.cuda.OutOfMemoryError as e:  # a context past the GPU: record it, measure the rest
                doc["failed"].append({"family": fam, "context": T, "error": str(e).splitlines()[0]})
                print(f"{fam:<10} T {T:>6}  out of memory", flush=True)
                torch.cuda.empty_cache()
                continue
            rows.append(r)
            print(f"{fam:<10} T {T:>6}  prefill {r['prefill_s'] * 1e3:8.2f} ms  decode "
                  f"{r['decode_s'] / r['decode_tokens'] * 1e3:6.3f} ms/tok  KV {r['kv_bytes_measured'] / 2**20:8.2f} "
                  f"MiB (analytic {r['kv_bytes_analytic'] / 2**20:8.2f})  peak {r['peak_bytes'] / 2**20:8.1f} MiB  "
                  f"[{time.perf_counter() - t0:.1f} s]", flush=True)
            out.write_text(json.dumps(doc, indent=1))  # after every row: a run cut short keeps what it measured
    print(f"wrote {len(rows)} rows to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
