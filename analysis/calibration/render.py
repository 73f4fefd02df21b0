"""The calibration table (measured next to analytic, per family and context) and its markdown with the laws."""

from __future__ import annotations

import numpy as np

from costlaw.analysis.calibration.analytic import analytic, by_family, decode_steps, weights_bytes
from costlaw.analysis.calibration.fit import calibrations
from costlaw.costmodel import c_infer


def table(rows, fits: dict | None = None, gpu: str | None = None) -> list[dict]:
    """Per family and context: KV bytes measured vs analytic (exact?, ratio), peak memory vs M_infer, decode
    s/token and prefill s measured vs the roofline (ratios measured / roofline); with `fits`, also the decode
    s/token the calibration file predicts for this very model. Roofline columns are None without a GPU."""
    cals = calibrations(rows, fits, gpu) if fits is not None else {}
    out = []
    for fam, rs in by_family(rows).items():
        for r in rs:
            a = analytic(r, gpu)
            dec = r["decode_s"] / r["decode_tokens"]
            row = {"family": fam, "context": r["context"],
                   "kv_bytes_measured": r["kv_bytes_measured"], "kv_bytes_analytic": a["kv_bytes"],
                   "kv_exact": r["kv_bytes_measured"] == a["kv_bytes"],
                   "kv_ratio": r["kv_bytes_measured"] / a["kv_bytes"] if a["kv_bytes"] else None,
                   "peak_bytes": r["peak_bytes"] or None, "m_infer_bytes_analytic": a["m_infer_bytes"],
                   "memory_ratio": r["peak_bytes"] / a["m_infer_bytes"] if r["peak_bytes"] else None,
                   "decode_s_per_token": dec, "decode_s_roofline": a.get("decode_s_roofline"),
                   "decode_ratio": dec / a["decode_s_roofline"] if "decode_s_roofline" in a else None,
                   "prefill_s": r["prefill_s"], "prefill_s_roofline": a.get("prefill_s_roofline"),
                   "prefill_ratio": r["prefill_s"] / a["prefill_s_roofline"] if "prefill_s_roofline" in a else None}
            if fam in cals:
                cfg = r["config"]
                flops = float(np.mean([c_infer(cfg, t) for t in decode_steps(r)]))
                w = weights_bytes(cfg, r["dtype"])
                row["decode_s_calibrated"] = cals[fam].decode_s(w, a["decode_bytes_per_token"] - w, flops)
            out.append(row)
    return out


def _mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:.2f}"


def _ms(s) -> str:
    return "-" if s is None else f"{s * 1e3:.4g}"


def _ratio(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def ctx_label(T: int) -> str:
    return f"{T // 1024}K" if T % 1024 == 0 else str(T)


def per_s(b: float) -> str:
    """A fitted slope b (seconds per unit) as a rate with an SI prefix."""
    from costlaw.costmodel.core.units import si

    return si(1.0 / b) if b > 0 else "inf"


def render_markdown(rows, fits: dict, gpu: str | None = None, title: str = "Cost-model calibration") -> str:
    """The calibration table (one line per family and context) and the fitted laws with R², in markdown."""
    key = gpu or rows[0].get("gpu_key")
    tab = table(rows, fits, gpu)
    has_cal = any("decode_s_calibrated" in t for t in tab)
    lines = [f"# {title}", "",
             f"Batch 1, {rows[0]['dtype']}; roofline: costmodel.hardware.roofline on "
             f"{key or '(no GPU key: roofline columns empty)'}. KV and memory in MiB; analytic = costmodel "
             "(KV cache at T; M_infer = weights + policy + KV). Decode: ms per token over the last G tokens; "
             "prefill: ms for T − G tokens. Ratios are measured / analytic.", ""]
    head = ["family", "T", "KV measured", "KV analytic", "exact", "KV ratio", "peak", "M_infer", "peak/M_infer",
            "decode ms/tok", "roofline", "ratio"]
    if has_cal:
        head.append("calibrated")
    head += ["prefill ms", "roofline", "ratio"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for t in tab:
        cells = [t["family"], ctx_label(t["context"]), _mib(t["kv_bytes_measured"]), _mib(t["kv_bytes_analytic"]),
                 "yes" if t["kv_exact"] else "no", _ratio(t["kv_ratio"]), _mib(t["peak_bytes"]),
                 _mib(t["m_infer_bytes_analytic"]), _ratio(t["memory_ratio"]), _ms(t["decode_s_per_token"]),
                 _ms(t["decode_s_roofline"]), _ratio(t["decode_ratio"])]
        if has_cal:
            cells.append(_ms(t.get("decode_s_calibrated")))
        cells += [_ms(t["prefill_s"]), _ms(t["prefill_s_roofline"]), _ratio(t["prefill_ratio"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Laws against context T: y = a + b·T", "",
              "| family | y | a | b (per token of context) | R² | points |", "|---|---|---|---|---|---|"]
    for fam, laws in fits["laws"].items():
        for y, f in laws.items():
            if "skipped" in f:
                lines.append(f"| {fam} | {y} | - | - | skipped: {f['skipped']} | - |")
            else:
                p = f["params"]
                r2 = f"{f['r2']:.6f}" + ("" if f["success"] else " (fit did not converge)")
                lines.append(f"| {fam} | {y} | {p['a']:.4g} | {p['b']:.4g} | {r2} | {f['n_points']} |")
    lines += ["", "## Rates for `costlaw recommend --calibration`", "",
              "decode s/token = overhead + bytes / bytes_per_s (bytes: weights + KV cache per step, analytic); "
              "prefill s = a + FLOPs / flops_per_s. `all` pools every family (the GPU-level entry).", "",
              "| family | overhead µs | bytes/s | decode R² | prefill a ms | FLOP/s | prefill R² |",
              "|---|---|---|---|---|---|---|"]
    for fam, r in fits["rates"].items():
        d, p = r["decode"], r["prefill"]
        if "skipped" in d or "skipped" in p:
            continue
        lines.append(f"| {fam} | {d['params']['a'] * 1e6:.4g} | {per_s(d['params']['b'])} | {d['r2']:.6f} | "
                     f"{p['params']['a'] * 1e3:.4g} | {per_s(p['params']['b'])} | {p['r2']:.6f} |")
    return "\n".join(lines) + "\n"
