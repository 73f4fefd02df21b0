"""`costlaw calibrate`: GPU inference measurements -> linear laws per family, a table, a figure, and the
calibration file `costlaw recommend --calibration` reads."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
input: the JSON benchmarks/calibrate_infer_gpu.py writes (format costlaw-calibration-measurements/1): batch-1
  prefill and decode times, KV cache bytes and peak memory per family (gqa, hybrid, compressed) and context.

output (--out DIR):
  calibration.json   rates per family and pooled (format costlaw-calibration/1) for
                     `costlaw recommend --calibration`; only when a GPU is named (the file's gpu_key or --gpu)
  calibration.md     measured vs analytic per family and context, the fitted laws with R², the rates
  measurements.csv   one flat row per measurement: `costlaw fit --data DIR/measurements.csv --law linear
                     --x context --y decode_s_per_token --group-by family` reproduces the laws
  calibration.png    memory and decode time against the context (+ .svg)

example:
  python benchmarks/calibrate_infer_gpu.py --out OUT/measurements.json
  costlaw calibrate OUT/measurements.json --out studies/calibration
"""


def add_arguments(p):
    from costlaw import options

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("measurements", help="a costlaw-calibration-measurements/1 JSON file")
    p.add_argument("--out", required=True, help="directory for calibration.json, .md, .png and measurements.csv")
    p.add_argument("--gpu", help="the GPU the rates describe, a costmodel.hardware.GPUS key such as H100-SXM "
                                 "(default: the file's gpu_key)")
    options.add_json(p, "print {gpu, written, laws, rates} as JSON instead of the summary")
    options.add_wide(p)


def _rate_rows(fits: dict) -> list[dict]:
    from costlaw.costmodel.core.units import si

    rows = []
    for fam, r in fits["rates"].items():
        d, p = r["decode"], r["prefill"]
        if "skipped" in d or "skipped" in p:
            continue
        inv = {k: 1.0 / f["params"]["b"] if f["params"]["b"] > 0 else None for k, f in (("d", d), ("p", p))}
        rows.append({"family": fam, "overhead µs": d["params"]["a"] * 1e6, "bytes/s": si(inv["d"]),
                     "decode R²": d["r2"], "FLOP/s": si(inv["p"]), "prefill R²": p["r2"]})
    return rows


def main(args) -> int:
    from costlaw.analysis.calibration import write_outputs
    from costlaw.costmodel.core.errors import ConfigError, CostlawError
    from costlaw.costmodel.core.units import table, terminal_width
    from costlaw.costmodel.hardware import gpu as find_gpu
    from costlaw.options import input_file, output_dir

    gpu = None
    if args.gpu:
        try:
            gpu = find_gpu(args.gpu).name
        except ConfigError as e:
            raise CostlawError(f"--gpu: {e.problem}") from None
    input_file(args.measurements, "measurements", "the JSON benchmarks/calibrate_infer_gpu.py wrote")
    output_dir(args.out, "--out", "the calibration's files")
    res = write_outputs(args.measurements, args.out, gpu=gpu)
    if args.json:
        print(json.dumps({"gpu": res.gpu, "written": {k: str(v) for k, v in res.written.items()},
                          "laws": res.fits["laws"], "rates": res.fits["rates"]}, indent=1))
    else:
        fams = list(dict.fromkeys(r["family"] for r in res.rows))
        contexts = sorted({r["context"] for r in res.rows})
        print(f"{len(res.rows)} measurements ({', '.join(fams)}; contexts {contexts[0]}–{contexts[-1]}) on "
              f"{res.gpu or 'no named GPU'}; rates (decode s/token = overhead + bytes / bytes/s):")
        print(table(_rate_rows(res.fits), width=None if args.wide else terminal_width()))
        for p in res.written.values():
            print(f"wrote {p}")
        if res.calibration is not None:
            print("next:")
            print(f"  costlaw recommend --db RESULTS.duckdb --target-loss L --context 128K --gpu {res.gpu} "
                  f"--calibration {res.written['calibration.json']}")
    if res.calibration is None:
        print("calibration.json: not written: the measurements name no GPU (gpu_key null); pass --gpu KEY",
              file=sys.stderr)
    return 0
