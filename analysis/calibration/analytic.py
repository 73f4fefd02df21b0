"""costmodel's numbers next to each measurement, recomputed from the row's model so the comparison is with this
checkout's costmodel, and the flat rows (measurements.csv) the fits read."""

from __future__ import annotations

import numpy as np

from costlaw.analysis.calibration.measurements import FAMILIES, ROW_FIELDS
from costlaw.costmodel import ModelConfig, kv_cache_bytes, m_infer, params_total, policy_params, prefill_flops
from costlaw.costmodel.costs import DTYPE_BYTES
from costlaw.costmodel.hardware import roofline

# Decode steps whose analytic bytes and roofline times are averaged: every step up to this many, else this
# many spread evenly (the quantities are piecewise linear in the step's context, so the mean is exact enough).
MAX_STEPS = 257


def decode_steps(row) -> list[int]:
    """The contexts of the decode steps: the i-th of G steps after a P-token prefill sees P + i tokens."""
    P, G = row["prefill_tokens"], row["decode_tokens"]
    if G <= MAX_STEPS:
        return list(range(P + 1, P + G + 1))
    return sorted({int(t) for t in np.linspace(P + 1, P + G, MAX_STEPS).round()})


def weights_bytes(cfg: ModelConfig, dtype: str) -> int:
    # What the recommender's calibrated latency counts as weights (analysis/objective.py).
    return (params_total(cfg) + policy_params(cfg)) * DTYPE_BYTES[dtype]


def decode_bytes_per_token(row) -> float:
    """Analytic bytes one decode step reads (weights + KV cache at the step's context), mean over the steps."""
    cfg, dt = row["config"], row["dtype"]
    kv = [kv_cache_bytes(cfg, t, dt) for t in decode_steps(row)]
    return weights_bytes(cfg, dt) + float(np.mean(kv))


def analytic(row, gpu: str | None = None) -> dict:
    """costmodel's numbers for one measurement: KV bytes and M_infer bytes at the context, bytes per decode
    step, prefill FLOPs, and (with a GPU) roofline prefill seconds and decode seconds per token."""
    cfg, T, dt = row["config"], row["context"], row["dtype"]
    out = {"kv_bytes": kv_cache_bytes(cfg, T, dt), "m_infer_bytes": m_infer(cfg, T) * DTYPE_BYTES[dt],
           "decode_bytes_per_token": decode_bytes_per_token(row),
           "prefill_flops": prefill_flops(cfg, row["prefill_tokens"])}
    gpu = gpu or row.get("gpu_key")
    if gpu:
        out["prefill_s_roofline"] = roofline(cfg, row["prefill_tokens"], gpu, dtype=dt)["prefill_s"]
        out["decode_s_roofline"] = float(np.mean([roofline(cfg, t, gpu, dtype=dt)["decode_s_per_token"]
                                                  for t in decode_steps(row)]))
    return out


def flat_rows(rows) -> list[dict]:
    """One flat dict per measurement (measurements.csv): the measured fields, per-token times and the analytic
    columns the fits use as x."""
    out = []
    for r in rows:
        a = analytic(r)
        flat = {k: r[k] for k in ROW_FIELDS if k != "model"}
        flat.update(decode_s_per_token=r["decode_s"] / r["decode_tokens"],
                    prefill_s_per_token=r["prefill_s"] / r["prefill_tokens"],
                    kv_bytes_analytic=a["kv_bytes"], m_infer_bytes_analytic=float(a["m_infer_bytes"]),
                    decode_bytes_per_token=a["decode_bytes_per_token"], prefill_flops=a["prefill_flops"])
        out.append(flat)
    return out


def by_family(rows) -> dict[str, list[dict]]:
    """The rows grouped by family (in FAMILIES order), each group sorted by context."""
    out: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (FAMILIES.index(r["family"]), r["context"])):
        out.setdefault(r["family"], []).append(r)
    return out
