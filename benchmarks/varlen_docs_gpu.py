"""A full layer over packed documents on the GPU: FlexAttention with a document BlockMask (the path before) vs
FlashAttention's varlen kernel (runs/models/varlen.py, the path now), beside dense causal attention without
documents. Agreement of each with a float64 per-document reference (output and gradients), then forward and
forward + backward time in bf16.

    python benchmarks/varlen_docs_gpu.py [--B 32] [--T 2048] [--heads 8,1] [--out OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from profile_step_gpu import synthetic_doc_ids  # noqa: E402
from sink_chunks_gpu import grads, times  # noqa: E402

from costlaw.costmodel import FULL  # noqa: E402
from costlaw.runs.models import varlen  # noqa: E402
from costlaw.runs.models.attention import attend  # noqa: E402
from costlaw.runs.models.masks import block_mask, document_layout  # noqa: E402


def reference(q, k, v, doc_ids):
    """Causal attention within each document, one row at a time (float64 inputs give the reference)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    segment, _ = document_layout(doc_ids)
    rows = []
    for b in range(q.shape[0]):
        same = segment[b][:, None] == segment[b][None, :]
        causal = torch.ones_like(same).tril()
        rows.append(F.scaled_dot_product_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], attn_mask=same & causal))
    return torch.cat(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--T", type=int, default=2048)
    p.add_argument("--heads", default="8,1")
    p.add_argument("--out")
    a = p.parse_args()
    H, KV = map(int, a.heads.split(","))
    d, T = 64, a.T
    out = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, B=a.B, T=T, heads=[H, KV],
               varlen_keywords=sorted(varlen._PARAMS), varlen_available=varlen.available(
                   torch.device("cuda"), torch.bfloat16))

    def paths(doc_ids):
        docs = document_layout(doc_ids)
        bm = block_mask(FULL, T, "cuda", docs)
        vd = varlen.VarlenDocs(varlen.cu_seqlens(doc_ids), T)
        return {"flex, document BlockMask": lambda q, k, v: attend(q, k, v, bm),
                "varlen": lambda q, k, v: attend(q, k, v, vd)}

    # agreement on 4 rows, bf16 inputs, against float64 on the same bf16 values
    doc_ids = synthetic_doc_ids(4, T)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(4, n, T, d, device="cuda", generator=g).bfloat16().requires_grad_() for n in (H, KV, KV))
    dy = torch.randn(4, H, T, d, device="cuda", generator=g).bfloat16()
    wide = [t.detach().double().requires_grad_() for t in (q, k, v)]
    want = grads(lambda *t: reference(*t, doc_ids), *wide, dy.double())
    out["max_abs_diff_vs_float64"] = {}
    for name, fn in paths(doc_ids).items():
        got = grads(fn, q, k, v, dy)
        out["max_abs_diff_vs_float64"][name] = {n: (x.double() - w).abs().max().item()
                                                for n, x, w in zip(("y", "dq", "dk", "dv"), got, want)}

    doc_ids = synthetic_doc_ids(a.B, T)
    out["documents"] = int(varlen.cu_seqlens(doc_ids).numel() - 1)
    q, k, v = (torch.randn(a.B, n, T, d, device="cuda", generator=g).bfloat16().requires_grad_() for n in (H, KV, KV))
    dy = torch.randn(a.B, H, T, d, device="cuda", generator=g).bfloat16()
    fns = {**paths(doc_ids), "dense causal, no documents": lambda q, k, v: attend(q, k, v, None)}

    out.update(times(fns, q, k, v, dy))
    print(json.dumps(out))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
