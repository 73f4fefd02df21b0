"""What `costlaw calibrate` leaves in its output directory: calibration.json, calibration.md, measurements.csv
and calibration.png (+ .svg)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from costlaw.analysis.calibration.analytic import flat_rows
from costlaw.analysis.calibration.figure import figure
from costlaw.analysis.calibration.fit import calibration_file, fit_laws
from costlaw.analysis.calibration.measurements import load_measurements
from costlaw.analysis.calibration.render import render_markdown
from costlaw.costmodel.core.files import write_atomic
from costlaw.costmodel.hardware import gpu as find_gpu


@dataclass
class CalibrationOutputs:
    """`gpu`: the GPUS key the rates describe (None: no GPU named, so no calibration.json); `calibration`: the
    costlaw-calibration/1 document written, if any; `written`: file name -> path."""
    gpu: str | None
    rows: list[dict]
    fits: dict
    calibration: dict | None
    written: dict[str, Path] = field(default_factory=dict)


def csv_text(flat: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(flat[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(flat)
    return buf.getvalue()


def write_outputs(measurements: str | Path, out: str | Path, gpu: str | None = None) -> CalibrationOutputs:
    """Read the measurements, fit, and write calibration.json, calibration.md, measurements.csv and
    calibration.png (+ .svg) under `out`. Without a GPU key (the file's or `gpu`) calibration.json and the
    roofline columns are left out: rates need a GPU to belong to."""
    doc = load_measurements(measurements)
    rows = doc["rows"]
    key = find_gpu(gpu).name if gpu else doc["gpu_key"]
    fits = fit_laws(rows)
    cal = None
    if key:
        # The source names the library module, not the verb: it is what computed the rates.
        src = (f"analysis.calibration from {Path(measurements).name} ({doc.get('gpu') or key}"
               f"{', torch ' + doc['torch'] if doc.get('torch') else ''})")
        cal = calibration_file(rows, fits, gpu=key, source=src)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = CalibrationOutputs(key, rows, fits, cal)
    if cal is not None:
        write_atomic(out / "calibration.json", json.dumps(cal, indent=2) + "\n")
        res.written["calibration.json"] = out / "calibration.json"
    write_atomic(out / "calibration.md", render_markdown(rows, fits, gpu=key))
    res.written["calibration.md"] = out / "calibration.md"
    write_atomic(out / "measurements.csv", csv_text(flat_rows(rows)))
    res.written["measurements.csv"] = out / "measurements.csv"
    png, svg = figure(rows, fits, out / "calibration.png", gpu=key)
    res.written["calibration.png"] = png
    res.written["calibration.svg"] = svg
    return res
