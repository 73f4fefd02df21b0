"""Cost-model calibration from GPU measurements: batch-1 inference memory and time next to costmodel's
analytic numbers, linear-in-T laws per family, and a calibration file for `costlaw recommend --calibration`.

    python benchmarks/calibrate_infer_gpu.py --out OUT/measurements.json
    costlaw calibrate OUT/measurements.json --out DIR [--gpu H100-SXM]

DIR gets calibration.json (format costlaw-calibration/1), calibration.md (the table and the fitted laws),
measurements.csv (one flat row per measurement) and calibration.png (+ .svg).

| module | holds |
|---|---|
| measurements.py | the input format: reading and validating it |
| analytic.py | costmodel's numbers per measurement, the flat rows (measurements.csv) |
| fit.py | the laws, the rates and the calibration file |
| render.py | the table and its markdown |
| figure.py | the figure |
| outputs.py | `write_outputs`: everything above into one directory |

Input (format costlaw-calibration-measurements/1): {"gpu": torch device name, "gpu_key": a key of
costmodel.hardware.GPUS or null, "rows": [...]}, one row per (family, context T) for one model per family:
prefill T - G tokens, then decode G tokens (prefill_s, decode_s in total seconds), the KV cache bytes
measured and the peak CUDA memory. Analytic numbers (KV bytes, M_infer, roofline times) are recomputed here
from each row's model, so the comparison is with this checkout's costmodel.

Laws. Per family, `fitting`'s linear law y = a + b·T (a, b >= 0, through `fitting.fit`, the code path of
`costlaw fit`) for decode s/token, prefill s/token, peak bytes and KV bytes measured, against the context T.
`costlaw fit --data DIR/measurements.csv --law linear --x context --y decode_s_per_token --group-by family`
reproduces them.

Rates. The recommender prices a decode step as overhead_s + max(bytes / bytes_per_s, flops / flops_per_s)
(analysis/objective.py), with bytes = weights + KV cache. So per family the same law is fitted to decode
s/token against the analytic bytes a step reads (x = decode_bytes_per_token, the mean over the G steps): its
intercept is overhead_s and its slope 1 / bytes_per_s. Batch-1 decode never reaches the compute bound, so
flops_per_s comes from prefill, where compute binds: prefill seconds against analytic prefill FLOPs, slope
1 / flops_per_s. The GPU-level entry pools every family and prices families that have no entry of their own.

With one model per family only the KV cache grows with T: bytes_per_s is the rate at which the step time
grows with KV bytes, and the weights' read time sits in the intercept. Candidates far from the measured
model's size are priced with the KV rate for their weights too; measure more sizes to separate the two.
"""

from costlaw.analysis.calibration.analytic import analytic, by_family, decode_bytes_per_token, flat_rows
from costlaw.analysis.calibration.figure import figure
from costlaw.analysis.calibration.fit import LAWS, calibration_file, fit_laws
from costlaw.analysis.calibration.measurements import FAMILIES, FORMAT, ROW_FIELDS, load_measurements, validate
from costlaw.analysis.calibration.outputs import CalibrationOutputs, write_outputs
from costlaw.analysis.calibration.render import render_markdown, table

__all__ = ["FAMILIES", "FORMAT", "LAWS", "ROW_FIELDS", "CalibrationOutputs", "analytic", "by_family",
           "calibration_file", "decode_bytes_per_token", "figure", "fit_laws", "flat_rows", "load_measurements",
           "render_markdown", "table", "validate", "write_outputs"]
