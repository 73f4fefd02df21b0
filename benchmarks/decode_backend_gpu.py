"""Decode speed by SDPA backend, for the all-full (b) and 1/3-full hybrid models of model_smoke_gpu.py.

Decode attends to a slot count that grows by one each step. This times batch-1 and batch-8 greedy decode after
a 32K prompt with `runs.models.attention`'s decode backends forced to one list at a time, so the backend that
plans per shape shows up as a per-token cost (random bf16 weights, eager model):

    python benchmarks/decode_backend_gpu.py [--seq 32768] [--generate 32] [--repeats 3] [--out OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from model_smoke_gpu import CONFIGS, make_config  # noqa: E402
from torch.nn.attention import SDPBackend  # noqa: E402

from costlaw.runs.evaluate import timed_generation  # noqa: E402
from costlaw.runs.models import attention, build_model  # noqa: E402

BACKENDS = {
    "any-length (used)": list(attention._ANY_LENGTH),
    "cudnn first": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.MATH],
    "flash": [SDPBackend.FLASH_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq", type=int, default=32768)
    p.add_argument("--generate", type=int, default=32)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row; the median is reported")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset of the lists above")
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out")
    a = p.parse_args()
    dev, rows = torch.device(a.device), []
    for name in ("b", "hybrid"):
        cfg = make_config(CONFIGS[name], a.vocab)
        torch.manual_seed(0)
        model = build_model(cfg, device=dev, dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
        for batch in map(int, a.batches.split(",")):
            prompt = torch.randint(0, cfg.vocab_size, (batch, a.seq - a.generate), device=dev)
            for label in a.backends.split(","):
                attention._ANY_LENGTH[:] = BACKENDS[label]
                try:
                    _, prefill_s, decode_s, _ = timed_generation(model, prompt, a.seq, a.generate, dev, a.repeats)
                    row = dict(config=name, batch=batch, backends=label, prefill_s=prefill_s,
                               decode_ms_per_step=1e3 * decode_s / a.generate,
                               decode_tok_s=batch * a.generate / decode_s)
                except RuntimeError as e:  # a forced backend that cannot run these shapes
                    row = dict(config=name, batch=batch, backends=label, error=str(e).splitlines()[0][:200])
                rows.append(row)
                print(json.dumps(row), flush=True)
        attention._ANY_LENGTH[:] = BACKENDS["any-length (used)"]
    print(f"\n{'config':8} {'batch':>5} {'backends':20} {'ms/step':>9} {'tok/s':>9}")
    for r in rows:
        print(f"{r['config']:8} {r['batch']:>5} {r['backends']:20} {r.get('decode_ms_per_step', float('nan')):9.2f} "
              f"{r.get('decode_tok_s', float('nan')):9.1f}")
    if a.out:
        gpu = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
        Path(a.out).write_text(json.dumps(dict(gpu=gpu, torch=torch.__version__, seq=a.seq, generate=a.generate,
                                               repeats=a.repeats, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
