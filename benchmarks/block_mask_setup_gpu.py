"""How long building one sink+window BlockMask takes on a GPU, by builder, in fresh processes.

The hybrid 16K extension of studies/hybrid-extend spent 211 s between start and its first step, while its
dense twin took 27 s; the one setup difference was the layer's fixed BlockMask at T = 16,384, then built by
a `torch.compile`d `create_block_mask` (first call in the process). This times, per T and builder, the first
and second call, each builder in its own process with its own empty inductor cache:

  compiled   torch.compile(create_block_mask): what runs.models.masks did for fixed masks before
  internal   create_block_mask(..., _compile=True): FlexAttention's own compiled builder
  eager      create_block_mask without compilation (materialises the T×T rule)
  chunked    runs.models.masks.fixed_block_mask: the rule on query-row chunks, reduced to blocks (now used)

    python benchmarks/block_mask_setup_gpu.py --out OUT/block_mask.json [--T 16384,65536] [--builders chunked]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILDERS = ("compiled", "internal", "eager", "chunked")


def child(builder: str, T: int) -> dict:
    sys.path.insert(0, str(REPO))
    import torch
    from torch.nn.attention.flex_attention import create_block_mask

    from costlaw.costmodel import SinkWindow
    from costlaw.runs.models.masks import fixed_block_mask, mask_mod

    spec = SinkWindow(64, 1024)
    dev = torch.device("cuda")

    compiled = torch.compile(create_block_mask)

    def build():
        if builder == "chunked":
            return fixed_block_mask(spec, T, dev)
        fn = compiled if builder == "compiled" else create_block_mask
        return fn(mask_mod(spec), None, None, T, T, device=dev, _compile=builder == "internal")

    out = {"builder": builder, "T": T}
    for name in ("first_s", "second_s"):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        bm = build()
        torch.cuda.synchronize()
        out[name] = time.perf_counter() - t0
    out["sparsity"] = float(bm.sparsity())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--T", default="16384")
    ap.add_argument("--builders", default=",".join(BUILDERS))
    ap.add_argument("--timeout", type=float, default=60, help="seconds per child process")
    ap.add_argument("--child", nargs=2, metavar=("BUILDER", "T"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]))))
        return 0
    rows = []
    for T in [int(t) for t in a.T.split(",")]:
        for b in a.builders.split(","):
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix=f"ind-{b}-{T}-")}
            t0 = time.perf_counter()
            try:
                p = subprocess.run([sys.executable, __file__, "--out", a.out, "--child", b, str(T)], env=env,
                                   capture_output=True, text=True, timeout=a.timeout)
                r = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {
                    "builder": b, "T": T, "error": p.stderr.strip().splitlines()[-1] if p.stderr else p.returncode}
            except subprocess.TimeoutExpired:
                r = {"builder": b, "T": T, "error": f"timed out after {a.timeout:.0f} s"}
            r["process_s"] = time.perf_counter() - t0
            rows.append(r)
            print(json.dumps(r), flush=True)
            Path(a.out).write_text(json.dumps(rows, indent=1))
    print(f"{'T':>6} {'builder':<9} {'first s':>8} {'second s':>9} {'process s':>9}")
    for r in rows:
        print(f"{r['T']:>6} {r['builder']:<9} {r.get('first_s', float('nan')):>8.2f} "
              f"{r.get('second_s', float('nan')):>9.3f} {r['process_s']:>9.1f} {r.get('error', '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
