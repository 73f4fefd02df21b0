"""The measurements file (format costlaw-calibration-measurements/1) that benchmarks/calibrate_infer_gpu.py
writes: reading it, and naming the field of anything wrong in it."""

from __future__ import annotations

import json
import math
from pathlib import Path

from costlaw.costmodel import ModelConfig
from costlaw.costmodel.core.errors import ConfigError, CostlawError
from costlaw.costmodel.costs import DTYPE_BYTES
from costlaw.costmodel.hardware import gpu as find_gpu

FORMAT = "costlaw-calibration-measurements/1"
FAMILIES = ("gqa", "hybrid", "compressed")

_INT, _NUM, _STR, _DICT = "a whole number", "a number", "a string", "a table"
ROW_FIELDS = {"family": _STR, "label": _STR, "model": _DICT, "model_id": _STR, "context": _INT, "batch": _INT,
              "dtype": _STR, "prefill_tokens": _INT, "prefill_s": _NUM, "decode_tokens": _INT, "decode_s": _NUM,
              "kv_bytes_measured": _INT, "kv_bytes_analytic": _INT, "weights_bytes": _INT, "peak_bytes": _INT,
              "m_infer_bytes_analytic": _NUM, "c_infer_flops_per_token": _NUM}
_POSITIVE = ("context", "prefill_tokens", "decode_tokens", "prefill_s", "decode_s", "weights_bytes",
             "m_infer_bytes_analytic", "c_infer_flops_per_token")


def load_measurements(path: str | Path) -> dict:
    """The validated measurements document. Each row gains `gpu_key` (the document's, as a GPUS key or None)
    and `config` (its ModelConfig); a bad field raises a one-line CostlawError naming it."""
    p = Path(path)
    if not p.is_file():
        raise CostlawError(f"measurements: no such file {str(p)!r}; run benchmarks/calibrate_infer_gpu.py first")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CostlawError(f"measurements: {p} is not valid JSON ({e.msg} at line {e.lineno}); fix the file") from None
    except UnicodeDecodeError:
        raise CostlawError(f"measurements: {p} is not a text file; give the JSON that "
                           "benchmarks/calibrate_infer_gpu.py wrote") from None
    return validate(doc)


def validate(doc) -> dict:
    """`load_measurements` for an already parsed document."""
    if not isinstance(doc, dict):
        raise CostlawError(f"measurements: the document must be a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise CostlawError(f"format: expected {FORMAT!r}, got {doc.get('format')!r}; "
                           "give a file written by benchmarks/calibrate_infer_gpu.py")
    if not isinstance(doc.get("gpu", ""), str):
        raise CostlawError(f"gpu: must be the device name (a string), got {doc['gpu']!r}")
    key = doc.get("gpu_key")
    if key is not None:
        if not isinstance(key, str):
            raise CostlawError(f"gpu_key: must be a key of costmodel.hardware.GPUS or null, got {key!r}")
        try:
            key = find_gpu(key).name
        except ConfigError as e:
            raise CostlawError(f"gpu_key: {e.problem}") from None
    rows = doc.get("rows")
    if not isinstance(rows, list) or not rows:
        raise CostlawError("rows: missing or empty; the file holds no measurements")
    seen: dict[tuple[str, int], int] = {}
    models: dict[str, tuple[int, str]] = {}
    out = []
    for i, r in enumerate(rows):
        row = _check_row(r, f"rows[{i}]")
        where = f"rows[{i}]"
        k = (row["family"], row["context"])
        if k in seen:
            raise CostlawError(f"{where}: a second {k[0]} row at context {k[1]} (the first is rows[{seen[k]}]); "
                               "keep one row per family and context")
        seen[k] = i
        cid = row["config"].config_id
        first = models.setdefault(row["family"], (i, cid))
        if first[1] != cid:
            raise CostlawError(f"{where}.model: family {row['family']} has a second model (rows[{first[0]}] holds "
                               "another); the fits need one model per family")
        row["gpu_key"] = key
        out.append(row)
    return {**doc, "gpu_key": key, "rows": out}


def _check_row(r, where: str) -> dict:
    if not isinstance(r, dict):
        raise CostlawError(f"{where}: must be an object of measurements, got {type(r).__name__}")
    for name, kind in ROW_FIELDS.items():
        if name not in r:
            raise CostlawError(f"{where}.{name}: missing; every row needs {', '.join(ROW_FIELDS)}")
        v = r[name]
        ok = {_STR: isinstance(v, str), _DICT: isinstance(v, dict),
              _INT: isinstance(v, int) and not isinstance(v, bool),
              _NUM: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}[kind]
        if not ok:
            raise CostlawError(f"{where}.{name}: must be {kind}, got {v!r}")
        if kind in (_INT, _NUM) and (v <= 0 if name in _POSITIVE else v < 0):
            raise CostlawError(f"{where}.{name}: must be {'> 0' if name in _POSITIVE else '>= 0'}, got {v!r}")
    if r["family"] not in FAMILIES:
        raise CostlawError(f"{where}.family: {r['family']!r} is not one of {', '.join(FAMILIES)}")
    if r["batch"] != 1:
        raise CostlawError(f"{where}.batch: {r['batch']}; the calibration prices batch-1 decode, measure batch 1")
    if r["dtype"] not in DTYPE_BYTES:
        raise CostlawError(f"{where}.dtype: {r['dtype']!r} is not one of {', '.join(DTYPE_BYTES)}")
    if r["prefill_tokens"] + r["decode_tokens"] != r["context"]:
        raise CostlawError(f"{where}.context: {r['context']} but prefill_tokens + decode_tokens = "
                           f"{r['prefill_tokens'] + r['decode_tokens']}; the cache must end at the context")
    try:
        cfg = ModelConfig.from_dict(r["model"])
    except ConfigError as e:
        raise CostlawError(str(e.under(f"{where}.model"))) from None
    if cfg.family != r["family"]:
        raise CostlawError(f"{where}.family: {r['family']!r} but its model is a {cfg.family} config; "
                           "fix the family or the model")
    return {**r, "config": cfg}
