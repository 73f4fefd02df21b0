"""Print-readable figure style: >= 9 pt text, labelled axes with units, Okabe-Ito colours (colour-blind safe)
with a distinct marker per series, so a figure still reads in greyscale. Figures are drawn on the Agg canvas
(no pyplot state, no display) and saved as PNG and SVG side by side."""

from __future__ import annotations

import contextlib
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import atomic_file

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
RC = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
      "legend.fontsize": 9, "figure.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3, "lines.linewidth": 1.6,
      "lines.markersize": 6, "svg.fonttype": "path", "savefig.dpi": 150}


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


@contextlib.contextmanager
def style():
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def new_figure(width: float = 7.0, height: float = 4.2, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def outputs(path) -> tuple[Path, Path]:
    """FILE.png / FILE.svg for `path` (its suffix, if any, is replaced)."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix.lower() in (".png", ".svg") else p
    return stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")


def save(fig, path) -> list[Path]:
    """Write PNG and SVG (each to a temporary name, then moved into place); returns both paths."""
    paths = outputs(path)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for p in paths:
        with atomic_file(p) as f:
            fig.savefig(f, format=p.suffix[1:])
    return list(paths)


def no_data(figure: str, what: str, fix: str):
    raise CostlawError(f"figure {figure}: no data ({what}); {fix}")


def bytes_unit(max_bytes: float) -> tuple[float, str]:
    """(divisor, unit name) that puts the largest value between 1 and 1024."""
    for factor, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if max_bytes >= factor:
            return float(factor), unit
    return 1.0, "bytes"


def si_label(v: float) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= factor:
            return f"{v / factor:g}{prefix}"
    return f"{v:g}"


def plain_log_ticks(ax, axis: str = "x", si: bool = False) -> None:
    """Readable labels on a log axis: plain (or SI-prefixed) numbers at 1, 2 and 5 times powers of ten."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator

    def fmt(v, _pos):
        if v <= 0:
            return ""
        mant = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6)
        if mant not in (1.0, 2.0, 5.0):
            return ""
        return si_label(v) if si else f"{v:g}"

    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(LogLocator(base=10))
    a.set_minor_locator(LogLocator(base=10, subs=(2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)))
    a.set_major_formatter(FuncFormatter(fmt))
    a.set_minor_formatter(FuncFormatter(fmt))
