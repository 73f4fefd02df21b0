"""Cost-model calibration from GPU measurements: batch-1 inference memory and time next to costmodel's
analytic numbers, linear-in-T laws per family, and a calibration file for `costlaw recommend --calibration`.

    python benchmarks/calibrate_infer_gpu.py --out OUT/measurements.json
    python -m analysis.calibration OUT/measurements.json --out DIR [--gpu H100-SXM]

DIR gets calibration.json (format costlaw-calibration/1), calibration.md (the table and the fitted laws),
measurements.csv (one flat row per measurement) and calibration.png (+ .svg).

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

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from costlaw.analysis.objective import CALIBRATION_FORMAT
from costlaw.costmodel import ModelConfig, c_infer, kv_cache_bytes, m_infer, params_total, policy_params, prefill_flops
from costlaw.costmodel.core.errors import ConfigError, CostlawError
from costlaw.costmodel.core.files import write_atomic
from costlaw.costmodel.costs import DTYPE_BYTES
from costlaw.costmodel.hardware import gpu as find_gpu
from costlaw.costmodel.hardware import roofline

FORMAT = "costlaw-calibration-measurements/1"
FAMILIES = ("gqa", "hybrid", "compressed")
# The columns fitted per family as linear laws in the context T.
LAWS = ("decode_s_per_token", "prefill_s_per_token", "peak_bytes", "kv_bytes_measured")
# Decode steps whose analytic bytes and roofline times are averaged: every step up to this many, else this
# many spread evenly (the quantities are piecewise linear in the step's context, so the mean is exact enough).
MAX_STEPS = 257

_INT, _NUM, _STR, _DICT = "a whole number", "a number", "a string", "a table"
ROW_FIELDS = {"family": _STR, "label": _STR, "model": _DICT, "model_id": _STR, "context": _INT, "batch": _INT,
              "dtype": _STR, "prefill_tokens": _INT, "prefill_s": _NUM, "decode_tokens": _INT, "decode_s": _NUM,
              "kv_bytes_measured": _INT, "kv_bytes_analytic": _INT, "weights_bytes": _INT, "peak_bytes": _INT,
              "m_infer_bytes_analytic": _NUM, "c_infer_flops_per_token": _NUM}
_POSITIVE = ("context", "prefill_tokens", "decode_tokens", "prefill_s", "decode_s", "weights_bytes",
             "m_infer_bytes_analytic", "c_infer_flops_per_token")


# ---------------------------------------------------------------- input
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


# ---------------------------------------------------------------- analytic numbers per row
def _steps(row) -> list[int]:
    """The contexts of the decode steps: the i-th of G steps after a P-token prefill sees P + i tokens."""
    P, G = row["prefill_tokens"], row["decode_tokens"]
    if G <= MAX_STEPS:
        return list(range(P + 1, P + G + 1))
    return sorted({int(t) for t in np.linspace(P + 1, P + G, MAX_STEPS).round()})


def _weights_bytes(cfg: ModelConfig, dtype: str) -> int:
    # What the recommender's calibrated latency counts as weights (analysis/objective.py).
    return (params_total(cfg) + policy_params(cfg)) * DTYPE_BYTES[dtype]


def decode_bytes_per_token(row) -> float:
    """Analytic bytes one decode step reads (weights + KV cache at the step's context), mean over the steps."""
    cfg, dt = row["config"], row["dtype"]
    kv = [kv_cache_bytes(cfg, t, dt) for t in _steps(row)]
    return _weights_bytes(cfg, dt) + float(np.mean(kv))


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
                                                  for t in _steps(row)]))
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


def _by_family(rows) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (FAMILIES.index(r["family"]), r["context"])):
        out.setdefault(r["family"], []).append(r)
    return out


# ---------------------------------------------------------------- fits
def _fit(x, y, x_name: str, y_name: str, where: str) -> dict:
    from costlaw.fitting import fit

    y = np.asarray(y, dtype=float)
    if (y <= 0).any():
        # A CPU run records no CUDA peak (0): nothing to fit, and the table shows it as missing.
        return {"law": "linear", "x": x_name, "y": y_name,
                "skipped": f"{int((y <= 0).sum())} of {len(y)} values are 0 (not measured)"}
    if len(set(np.asarray(x, dtype=float))) < 2:
        raise CostlawError(f"rows: {where} has one {x_name} only; a linear law needs at least two contexts")
    res = fit("linear", np.asarray(x, dtype=float), y, x_names=[x_name], y_name=y_name)
    return {"law": "linear", "x": x_name, "y": y_name, "params": {k: float(v) for k, v in res.params.items()},
            "r2": float(res.r2), "n_points": res.n_points, "objective": float(res.objective),
            "success": bool(res.success)}


def fit_laws(rows) -> dict:
    """Per family, y = a + b·T for each of LAWS, and the rates the calibration file takes:

    {"laws": {family: {column: fit}}, "rates": {family | "all": {"decode": fit of decode_s_per_token against
     decode_bytes_per_token, "prefill": fit of prefill_s against prefill_flops}}}

    where a fit is {"law": "linear", "x", "y", "params": {"a", "b"}, "r2", "n_points", "objective", "success"}
    (or {"skipped": why} for a column with unmeasured zeros)."""
    flat = flat_rows(rows)
    laws, rates = {}, {}
    for fam in _by_family(rows):
        fr = sorted((f for f in flat if f["family"] == fam), key=lambda f: f["context"])
        T = [f["context"] for f in fr]
        laws[fam] = {y: _fit(T, [f[y] for f in fr], "context", y, f"family {fam}") for y in LAWS}
        rates[fam] = _rates(fr, f"family {fam}")
    rates["all"] = _rates(flat, "the pooled rows")
    return {"laws": laws, "rates": rates}


def _rates(fr: list[dict], where: str) -> dict:
    return {"decode": _fit([f["decode_bytes_per_token"] for f in fr], [f["decode_s_per_token"] for f in fr],
                           "decode_bytes_per_token", "decode_s_per_token", where),
            "prefill": _fit([f["prefill_flops"] for f in fr], [f["prefill_s"] for f in fr],
                            "prefill_flops", "prefill_s", where)}


def _decode_entry(rate: dict, where: str) -> dict:
    dec, pre = rate["decode"]["params"], rate["prefill"]["params"]
    for what, b in (("decode time against bytes read", dec["b"]), ("prefill time against FLOPs", pre["b"])):
        if not b > 0:
            raise CostlawError(f"rates: {where}: {what} has slope 0; the measurements cannot give a rate "
                               "(measure longer contexts)")
    return {"overhead_s": dec["a"], "bytes_per_s": 1.0 / dec["b"], "flops_per_s": 1.0 / pre["b"]}


# ---------------------------------------------------------------- calibration file
def calibration_file(rows, fits: dict, gpu: str | None = None, source: str | None = None) -> dict:
    """A costlaw-calibration/1 document: the pooled rates for the GPU, and each family's own under
    "families" (schema: analysis/objective.py). `gpu` overrides the measurements' gpu_key."""
    key = gpu or rows[0].get("gpu_key")
    if not key:
        raise CostlawError("gpu_key: the measurements name no GPU of costmodel.hardware.GPUS (a CPU run?); "
                           "pass --gpu to say which GPU these rates describe")
    key = find_gpu(key).name
    src = source or "analysis.calibration: linear fits to batch-1 measurements"
    families = {}
    for fam, rs in _by_family(rows).items():
        rate = fits["rates"][fam]
        families[fam] = {"decode": _decode_entry(rate, f"family {fam}"),
                         "source": f"{src}; {fam} model {rs[0]['config'].config_id}",
                         "fit": {"contexts": [r["context"] for r in rs], "decode_r2": rate["decode"]["r2"],
                                 "prefill_r2": rate["prefill"]["r2"]}}
    pooled = fits["rates"]["all"]
    return {"format": CALIBRATION_FORMAT,
            "gpus": {key: {"decode": _decode_entry(pooled, "the pooled rows"),
                           "source": f"{src}; pooled over {', '.join(families)}",
                           "fit": {"decode_r2": pooled["decode"]["r2"], "prefill_r2": pooled["prefill"]["r2"]},
                           "families": families}}}


def _calibrations(rows, fits: dict, gpu: str | None):
    """family -> the DecodeCalibration the recommender would apply ({} without a GPU key)."""
    from costlaw.analysis.objective import DecodeCalibration

    key = gpu or rows[0].get("gpu_key")
    if not key:
        return {}
    doc = calibration_file(rows, fits, gpu=key)
    (name, entry), = doc["gpus"].items()
    return {fam: DecodeCalibration(name, family=fam, **e["decode"]) for fam, e in entry["families"].items()}


# ---------------------------------------------------------------- table
def table(rows, fits: dict | None = None, gpu: str | None = None) -> list[dict]:
    """Per family and context: KV bytes measured vs analytic (exact?, ratio), peak memory vs M_infer, decode
    s/token and prefill s measured vs the roofline (ratios measured / roofline); with `fits`, also the decode
    s/token the calibration file predicts for this very model. Roofline columns are None without a GPU."""
    cals = _calibrations(rows, fits, gpu) if fits is not None else {}
    out = []
    for fam, rs in _by_family(rows).items():
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
                flops = float(np.mean([c_infer(cfg, t) for t in _steps(r)]))
                w = _weights_bytes(cfg, r["dtype"])
                row["decode_s_calibrated"] = cals[fam].decode_s(w, a["decode_bytes_per_token"] - w, flops)
            out.append(row)
    return out


# ---------------------------------------------------------------- markdown
def _mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:.2f}"


def _ms(s) -> str:
    return "-" if s is None else f"{s * 1e3:.4g}"


def _ratio(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _ctx(T: int) -> str:
    return f"{T // 1024}K" if T % 1024 == 0 else str(T)


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
        cells = [t["family"], _ctx(t["context"]), _mib(t["kv_bytes_measured"]), _mib(t["kv_bytes_analytic"]),
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
        lines.append(f"| {fam} | {d['params']['a'] * 1e6:.4g} | {_per_s(d['params']['b'])} | {d['r2']:.6f} | "
                     f"{p['params']['a'] * 1e3:.4g} | {_per_s(p['params']['b'])} | {p['r2']:.6f} |")
    return "\n".join(lines) + "\n"


def _per_s(b: float) -> str:
    from costlaw.costmodel.core.units import si

    return si(1.0 / b) if b > 0 else "inf"


# ---------------------------------------------------------------- figure
def figure(rows, fits: dict, path, gpu: str | None = None) -> list[Path]:
    """KV cache and total memory (measured points, analytic lines) and decode ms/token (measured points,
    roofline dashed, calibrated solid) against T, per family (one colour and marker each). PNG and SVG."""
    from matplotlib.lines import Line2D

    from costlaw.analysis.figures.style import colour, marker, new_figure, plain_log_ticks, save, style

    tab = table(rows, fits, gpu)
    families = list(dict.fromkeys(t["family"] for t in tab))
    contexts = sorted({t["context"] for t in tab})
    with style():
        fig, (ak, am, ad) = new_figure(13.5, 4.4, ncols=3)
        for i, fam in enumerate(families):
            ts = [t for t in tab if t["family"] == fam]
            T = [t["context"] for t in ts]
            c, m = colour(i), marker(i)
            ak.plot(T, [t["kv_bytes_analytic"] / 2**20 for t in ts], color=c)
            ak.plot(T, [t["kv_bytes_measured"] / 2**20 for t in ts], m, color=c, fillstyle="none")
            am.plot(T, [t["m_infer_bytes_analytic"] / 2**20 for t in ts], color=c)
            peak = [t for t in ts if t["peak_bytes"]]
            am.plot([t["context"] for t in peak], [t["peak_bytes"] / 2**20 for t in peak], m, color=c,
                    fillstyle="none")
            ad.plot(T, [t["decode_s_per_token"] * 1e3 for t in ts], m, color=c, fillstyle="none")
            if ts[0]["decode_s_roofline"] is not None:
                ad.plot(T, [t["decode_s_roofline"] * 1e3 for t in ts], "--", color=c)
            if "decode_s_calibrated" in ts[0]:
                ad.plot(T, [t["decode_s_calibrated"] * 1e3 for t in ts], color=c)
        fam_keys = [Line2D([], [], color=colour(i), marker=marker(i), fillstyle="none", label=f)
                    for i, f in enumerate(families)]

        def kind(label, **kw):
            return Line2D([], [], color="0.35", label=label, **kw)

        measured = kind("measured", marker="o", linestyle="none", fillstyle="none")
        has_roof = tab[0]["decode_s_roofline"] is not None
        panels = ((ak, "KV cache", "MiB", [measured, kind("analytic")]),
                  (am, "memory: peak vs M_infer", "MiB", [kind("peak measured", marker="o", linestyle="none",
                                                                fillstyle="none"), kind("M_infer analytic")]),
                  (ad, "batch-1 decode", "ms per token",
                   [measured] + ([kind("roofline", linestyle="--")] if has_roof else [])
                   + ([kind("calibrated")] if "decode_s_calibrated" in tab[0] else [])))
        for ax, title, ylab, kinds in panels:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(contexts)
            ax.set_xticklabels([_ctx(T) for T in contexts])
            plain_log_ticks(ax, "y")
            ax.set_xlabel("context T (tokens)")
            ax.set_ylabel(ylab)
            ax.set_title(title)
            ax.legend(handles=fam_keys + kinds, loc="best")
        return save(fig, path)


# ---------------------------------------------------------------- CLI
def _csv_text(flat: list[dict]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(flat[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(flat)
    return buf.getvalue()


def write_outputs(measurements: str | Path, out: str | Path, gpu: str | None = None) -> dict[str, Path]:
    """Read the measurements, fit, and write calibration.json, calibration.md, measurements.csv and
    calibration.png (+ .svg) under `out`. Without a GPU key (the file's or `gpu`) calibration.json and the
    roofline columns are left out: rates need a GPU to belong to."""
    doc = load_measurements(measurements)
    rows = doc["rows"]
    key = find_gpu(gpu).name if gpu else doc["gpu_key"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fits = fit_laws(rows)
    written = {}
    if key:
        src = (f"analysis.calibration from {Path(measurements).name} ({doc.get('gpu') or key}"
               f"{', torch ' + doc['torch'] if doc.get('torch') else ''})")
        write_atomic(out / "calibration.json", json.dumps(calibration_file(rows, fits, gpu=key, source=src), indent=2)
               + "\n")
        written["calibration.json"] = out / "calibration.json"
    write_atomic(out / "calibration.md", render_markdown(rows, fits, gpu=key))
    written["calibration.md"] = out / "calibration.md"
    write_atomic(out / "measurements.csv", _csv_text(flat_rows(rows)))
    written["measurements.csv"] = out / "measurements.csv"
    png, _svg = figure(rows, fits, out / "calibration.png", gpu=key)
    written["calibration.png"] = png
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.calibration", description=__doc__.split("\n")[0])
    ap.add_argument("measurements", help="a costlaw-calibration-measurements/1 JSON file")
    ap.add_argument("--out", required=True, help="directory for calibration.json, .md, .png and measurements.csv")
    ap.add_argument("--gpu", help="the costmodel.hardware.GPUS key the rates describe (default: the file's gpu_key)")
    args = ap.parse_args(argv)
    try:
        written = write_outputs(args.measurements, args.out, gpu=args.gpu)
    except CostlawError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 2
    if "calibration.json" not in written:
        print("calibration.json: not written: the measurements name no GPU (gpu_key null); pass --gpu KEY",
              file=sys.stderr)
    for p in written.values():
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
