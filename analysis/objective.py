"""What "cheapest" means: the GQA paper's hardware-aware cost Z, hard budgets, and decode latency.

Z = λ·M^α + (1−λ)·C^β (the paper's Eq. 5; defaults λ 0.9, α 1/2, β 1/3), with M = M_infer in bytes at the
chosen dtype (weights + KV cache + policy parameters) and C = C_infer in FLOPs per token, both at one
context length, from `costmodel.costs`.

Budgets are hard limits: M_infer bytes, C_infer FLOPs per token, and batch-1 decode latency per token on
a GPU. Latency comes from `costmodel.roofline` (a lower bound from datasheet peaks) unless a calibration
file gives measured rates for that GPU:

    {"format": "costlaw-calibration/1",
     "gpus": {"H100-SXM": {"decode": {"overhead_s": 2.0e-4, "bytes_per_s": 2.9e12, "flops_per_s": 6.0e14},
                           "families": {"hybrid": {"decode": {...the same three keys...}, "source": "..."}},
                           "source": "how these were measured"}}}

A calibrated decode step takes overhead_s + max(bytes / bytes_per_s, flops / flops_per_s), where bytes are
the weights plus the KV cache at the context and flops are C_infer: the roofline's form with measured
effective rates and a fixed per-step overhead in place of datasheet peaks.

"families" is optional: rates measured on one model of a family (gqa, hybrid, compressed) price that
family's candidates, because a family's attention kernels (sliding-window masks, a compressed cache) reach
different effective rates than dense attention; a family without an entry takes the GPU-level "decode".
`costlaw calibrate` writes such a file from GPU measurements.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from costlaw.costmodel import ModelConfig, costs
from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.costs import dtype_bytes
from costlaw.costmodel.hardware import gpu as find_gpu
from costlaw.costmodel.hardware import roofline

CALIBRATION_FORMAT = "costlaw-calibration/1"


@dataclass(frozen=True)
class DecodeCalibration:
    gpu: str
    overhead_s: float
    bytes_per_s: float
    flops_per_s: float
    source: str = ""
    family: str | None = None  # the family these rates were measured on; None: the GPU-level rates
    families: dict[str, DecodeCalibration] = field(default_factory=dict)

    def decode_s(self, weight_bytes: float, kv_bytes: float, flops: float) -> float:
        return self.overhead_s + max((weight_bytes + kv_bytes) / self.bytes_per_s, flops / self.flops_per_s)

    def for_family(self, family: str) -> DecodeCalibration:
        """The rates that price a candidate of this family: its own entry, else the GPU-level ones."""
        return self.families.get(family, self)


def load_calibration(path: str | Path) -> dict[str, DecodeCalibration]:
    """GPU table name -> its measured decode rates, from a calibration file (schema in the module doc)."""
    p = Path(path)
    if not p.is_file():
        raise CostlawError(f"--calibration: no such file {str(p)!r}; give a calibration JSON "
                           f"(format {CALIBRATION_FORMAT!r}) or leave the flag out for roofline estimates")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CostlawError(f"--calibration: {p} is not valid JSON ({e.msg} at line {e.lineno}); fix the file") from None
    if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
        raise CostlawError(f"--calibration: {p} lacks \"format\": \"{CALIBRATION_FORMAT}\"; see "
                           "`costlaw recommend --help` for the schema")
    gpus = data.get("gpus")
    if not isinstance(gpus, dict) or not gpus:
        raise CostlawError(f"--calibration: {p} has no \"gpus\" table; add {{\"H100-SXM\": {{\"decode\": ...}}}}")
    out = {}
    for name, entry in gpus.items():
        g = find_gpu(name).name
        if not isinstance(entry, dict):
            raise CostlawError(f"--calibration: gpus.{name} must be a table with \"decode\"; see "
                               "`costlaw recommend --help` for the schema")
        families = entry.get("families", {})
        if not isinstance(families, dict):
            raise CostlawError(f"--calibration: gpus.{name}.families must be a table like "
                               "{\"hybrid\": {\"decode\": ...}}")
        from costlaw.analysis.recommend.candidates import FAMILIES  # lazily: analysis.recommend imports this module

        per_family = {}
        for fam, fentry in families.items():
            if fam not in FAMILIES:
                raise CostlawError(f"--calibration: gpus.{name}.families.{fam} is not a family; "
                                   f"use {', '.join(FAMILIES)}")
            per_family[fam] = _decode_rates(fentry, f"gpus.{name}.families.{fam}", g, family=fam)
        out[g] = _decode_rates(entry, f"gpus.{name}", g, families=per_family)
    return out


def _decode_rates(entry, where: str, gpu_name: str, **extra) -> DecodeCalibration:
    dec = entry.get("decode") if isinstance(entry, dict) else None
    if not isinstance(dec, dict):
        raise CostlawError(f"--calibration: {where} has no \"decode\" table; give overhead_s, "
                           "bytes_per_s and flops_per_s")
    vals = {}
    for k in ("overhead_s", "bytes_per_s", "flops_per_s"):
        v = dec.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (
                k != "overhead_s" and v == 0):
            raise CostlawError(f"--calibration: {where}.decode.{k} must be a positive number, got {v!r}")
        vals[k] = float(v)
    return DecodeCalibration(gpu_name, source=str(entry.get("source", "")), **vals, **extra)


def parse_number(text: str, field: str) -> float:
    """'2e9', '2G', '1.5T' -> float (SI prefixes k, M, G, T, P)."""
    t = str(text).strip()
    mult = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}.get(t[-1:], 1)
    try:
        v = float(t[:-1] if mult != 1 else t) * mult
    except ValueError:
        raise CostlawError(f"{field}: {text!r} is not a number; write e.g. 2e9 or 2G") from None
    if not v > 0:
        raise CostlawError(f"{field}: must be > 0, got {text!r}")
    return v


@dataclass(frozen=True)
class Objective:
    lam: float = 0.9
    alpha: float = 0.5
    beta: float = 1 / 3
    dtype: str = "bf16"
    memory_budget: float | None = None  # bytes of M_infer
    flops_budget: float | None = None  # C_infer FLOPs per token
    gpu: str | None = None
    latency_target_ms: float | None = None  # decode ms per token, batch 1
    calibration: dict[str, DecodeCalibration] = field(default_factory=dict)

    def __post_init__(self):
        if not 0 <= self.lam <= 1:
            raise CostlawError(f"--lambda: must be in [0, 1], got {self.lam}")
        for name, v in (("--alpha", self.alpha), ("--beta", self.beta)):
            if not v > 0:
                raise CostlawError(f"{name}: must be > 0, got {v}")
        dtype_bytes(self.dtype)
        if self.latency_target_ms is not None and self.gpu is None:
            raise CostlawError("--latency-target-ms: needs --gpu to price decode latency; add e.g. --gpu H100")
        if self.gpu is not None:
            object.__setattr__(self, "gpu", find_gpu(self.gpu).name)

    def z(self, m_bytes: float, c_flops: float) -> float:
        return self.lam * m_bytes ** self.alpha + (1 - self.lam) * c_flops ** self.beta

    def describe(self) -> dict:
        d = {"z": f"Z = {self.lam:g}*M^{self.alpha:.4g} + {1 - self.lam:g}*C^{self.beta:.4g}",
             "lambda": self.lam, "alpha": self.alpha, "beta": self.beta, "dtype": self.dtype,
             "M": f"M_infer bytes at {self.dtype}", "C": "C_infer FLOPs per token"}
        for k in ("memory_budget", "flops_budget", "gpu", "latency_target_ms"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.gpu is not None:
            cal = self.calibration.get(self.gpu)
            if cal is None:
                d["latency_model"] = "roofline lower bound (datasheet peaks)"
            else:
                fams = f"; {', '.join(cal.families)} at their own rates" if cal.families else ""
                d["latency_model"] = f"calibrated ({cal.source or 'calibration file'}{fams})"
        return d

    def price(self, cfg: ModelConfig, T: int) -> dict:
        """Costs at context T, Z, decode latency (with --gpu) and the budgets this config breaks."""
        row = costs(cfg, T, dtype=self.dtype)
        m, c = float(row["m_infer_bytes"]), float(row["c_infer_flops_per_token"])
        out = {"context": T, "m_infer_bytes": m, "c_infer_flops_per_token": c, "z": self.z(m, c),
               "kv_cache_bytes": float(row["kv_cache_bytes"]), "params_total": row["params_total"],
               "params_non_embedding": row["params_non_embedding"],
               "m_invariant_bytes": float(row["m_infer_bytes"] - row["kv_cache_bytes"]),
               "c_invariant_flops": float(c - self._attention_flops(cfg, T)),
               "violations": []}
        out["c_attention_flops"] = c - out["c_invariant_flops"]
        if self.gpu is not None:
            cal = self.calibration.get(self.gpu)
            if cal is not None:
                cal = cal.for_family(cfg.family)
                weights = (row["params_total"] + row["params_policy"]) * dtype_bytes(self.dtype)
                out["decode_ms"] = 1e3 * cal.decode_s(weights, row["kv_cache_bytes"], c)
                out["latency_model"] = "calibrated"
                out["calibration"] = cal.family or "gpu"
            else:
                rf = roofline(cfg, T, self.gpu, dtype=self.dtype)
                out["decode_ms"] = 1e3 * rf["decode_s_per_token"]
                out["latency_model"] = "roofline"
        if self.memory_budget is not None and m > self.memory_budget:
            out["violations"].append("memory")
        if self.flops_budget is not None and c > self.flops_budget:
            out["violations"].append("flops")
        if self.latency_target_ms is not None and out["decode_ms"] > self.latency_target_ms:
            out["violations"].append("latency")
        return out

    @staticmethod
    def _attention_flops(cfg: ModelConfig, T: int) -> float:
        from costlaw.costmodel.costs import attention_keys

        return 4 * cfg.head_dim * cfg.n_heads * attention_keys(cfg, T)
