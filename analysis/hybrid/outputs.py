"""What `costlaw compare-hybrid` leaves in its output directory: hybrid.json, hybrid.md, hybrid.png (+ .svg)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from costlaw.analysis.hybrid.compare import compare
from costlaw.analysis.hybrid.figure import figure
from costlaw.analysis.hybrid.render import render_markdown
from costlaw.costmodel.core.files import write_atomic


@dataclass
class HybridOutputs:
    """`result`: the comparison (format costlaw-hybrid/1, as in hybrid.json); `written`: the paths written."""
    result: dict
    written: list[Path]


def write_outputs(db, out) -> HybridOutputs:
    """compare(db), then DIR/hybrid.json, hybrid.md and hybrid.png + .svg. Nothing is written when the store
    holds no pair to compare."""
    result = compare(db)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "hybrid.json", json.dumps(result, indent=2) + "\n")
    write_atomic(out / "hybrid.md", render_markdown(result))
    return HybridOutputs(result, [out / "hybrid.json", out / "hybrid.md", *figure(result, out / "hybrid.png")])
