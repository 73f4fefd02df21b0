"""Agreement of the CUDA-graph decode (runs/models/decode_graph.py) on a GPU, before timing it with
`model_smoke_gpu.py --infer`:

1. `attend_filled` in bf16 at 32K slots against float64 masked softmax, beside SDPA over the same slots;
2. the b and hybrid models (bf16): logits of `--steps` graph-replayed decode steps against the eager decode of
   a second cache fed the same tokens.

  python benchmarks/decode_graph_gpu.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.model_smoke_gpu import CONFIGS, make_config  # noqa: E402
from costlaw.runs.models import build_model  # noqa: E402
from costlaw.runs.models.attention import attend_filled, split_parts  # noqa: E402
from costlaw.runs.models.decode_graph import GraphDecoder  # noqa: E402


def attention_check(B: int, S: int, length: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, 8, 1, 64, device="cuda", generator=g)
    k, v = (torch.randn(B, 2, S, 64, device="cuda", generator=g) for _ in range(2))
    q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    ref_k, ref_v = (t.double().repeat_interleave(4, 1)[:, :, :length] for t in (k, v))
    ref = ((q.double() @ ref_k.transpose(-1, -2)) / math.sqrt(64)).softmax(-1) @ ref_v
    out = attend_filled(q, k, v, torch.tensor([length], device="cuda"), split_parts(S))
    sdpa = F.scaled_dot_product_attention(q, k[:, :, :length], v[:, :, :length], enable_gqa=True)
    return {"check": "attend_filled", "batch": B, "slots": S, "length": length,
            "max_abs_err_attend_filled": (out.double() - ref).abs().max().item(),
            "max_abs_err_sdpa": (sdpa.double() - ref).abs().max().item()}


def model_check(name: str, prompt_len: int, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    cfg = make_config(CONFIGS[name], 50304)
    model = build_model(cfg, device="cuda", dtype=torch.bfloat16).eval()
    prompt = torch.randint(0, cfg.vocab_size, (batch, prompt_len), device="cuda")
    errs, same = [], 0
    with torch.inference_mode():
        eager, graphed = (model.new_cache(batch, prompt_len + steps) for _ in range(2))
        tok = model.prefill(prompt, eager, last_only=True)[:, -1].argmax(-1, keepdim=True)
        model.prefill(prompt, graphed, last_only=True)
        dec = GraphDecoder(model, graphed)
        model.graph_decode = False
        for _ in range(steps):
            want = model.decode(tok, eager)
            got = dec.step(graphed, tok)
            errs.append((got.float() - want.float()).abs().max().item())
            same += int(torch.equal(got.argmax(-1), want.argmax(-1)))
            tok = want.argmax(-1)
    return {"check": "decode logits, graph vs eager", "config": name, "batch": batch, "prompt": prompt_len,
            "steps": steps, "max_abs_logit_diff": max(errs), "steps_with_equal_argmax": same,
            "logit_scale": "bf16 logits of a random-init model"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--prompt", type=int, default=32768 - 16)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("decode_graph_gpu: needs a CUDA device")
        return 2
    rows = [attention_check(8, 32768, 32700), attention_check(1, 1088, 1088), attention_check(8, 32832, 1)]
    rows += [model_check(n, a.prompt, a.steps, 8) for n in ("b", "hybrid")]
    for r in rows:
        print(json.dumps(r), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                                           "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
