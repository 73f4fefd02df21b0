"""The laws fitted to the measurements, the rates the recommender takes from them, and the calibration file
(format costlaw-calibration/1, read by analysis/objective.py) that carries those rates."""

from __future__ import annotations

import numpy as np

from costlaw.analysis.calibration.analytic import by_family, flat_rows
from costlaw.analysis.objective import CALIBRATION_FORMAT
from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.hardware import gpu as find_gpu

# The columns fitted per family as linear laws in the context T.
LAWS = ("decode_s_per_token", "prefill_s_per_token", "peak_bytes", "kv_bytes_measured")
SOURCE = "analysis.calibration: linear fits to batch-1 measurements"


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
    for fam in by_family(rows):
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


def decode_entry(rate: dict, where: str) -> dict:
    """A calibration file's "decode" entry from one fitted rate: overhead_s, bytes_per_s, flops_per_s."""
    dec, pre = rate["decode"]["params"], rate["prefill"]["params"]
    for what, b in (("decode time against bytes read", dec["b"]), ("prefill time against FLOPs", pre["b"])):
        if not b > 0:
            raise CostlawError(f"rates: {where}: {what} has slope 0; the measurements cannot give a rate "
                               "(measure longer contexts)")
    return {"overhead_s": dec["a"], "bytes_per_s": 1.0 / dec["b"], "flops_per_s": 1.0 / pre["b"]}


def calibration_file(rows, fits: dict, gpu: str | None = None, source: str | None = None) -> dict:
    """A costlaw-calibration/1 document: the pooled rates for the GPU, and each family's own under
    "families" (schema: analysis/objective.py). `gpu` overrides the measurements' gpu_key."""
    key = gpu or rows[0].get("gpu_key")
    if not key:
        raise CostlawError("gpu_key: the measurements name no GPU of costmodel.hardware.GPUS (a CPU run?); "
                           "pass --gpu to say which GPU these rates describe")
    key = find_gpu(key).name
    src = source or SOURCE
    families = {}
    for fam, rs in by_family(rows).items():
        rate = fits["rates"][fam]
        families[fam] = {"decode": decode_entry(rate, f"family {fam}"),
                         "source": f"{src}; {fam} model {rs[0]['config'].config_id}",
                         "fit": {"contexts": [r["context"] for r in rs], "decode_r2": rate["decode"]["r2"],
                                 "prefill_r2": rate["prefill"]["r2"]}}
    pooled = fits["rates"]["all"]
    return {"format": CALIBRATION_FORMAT,
            "gpus": {key: {"decode": decode_entry(pooled, "the pooled rows"),
                           "source": f"{src}; pooled over {', '.join(families)}",
                           "fit": {"decode_r2": pooled["decode"]["r2"], "prefill_r2": pooled["prefill"]["r2"]},
                           "families": families}}}


def calibrations(rows, fits: dict, gpu: str | None) -> dict:
    """family -> the DecodeCalibration the recommender would apply ({} without a GPU key)."""
    from costlaw.analysis.objective import DecodeCalibration

    key = gpu or rows[0].get("gpu_key")
    if not key:
        return {}
    doc = calibration_file(rows, fits, gpu=key)
    (name, entry), = doc["gpus"].items()
    return {fam: DecodeCalibration(name, family=fam, **e["decode"]) for fam, e in entry["families"].items()}
