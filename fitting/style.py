"""The one figure style of the project: >= 9 pt text, Okabe-Ito colours (colour-blind safe) with a distinct marker
per series so a figure still reads in greyscale, a sequential colormap for ordered quantities (model size), the Agg
canvas (no pyplot state, no display), PNG and SVG written atomically.

It lives in fitting, not in analysis, because fitting may not import analysis while analysis may import fitting:
`costlaw fit --plot` (fitting/plot.py) draws with it here, and analysis/figures/style.py re-exports it with the
analysis-side helpers (unit names, byte and SI axis labels) for the report's, validate's, calibration's, hybrid's
and the study scripts' figures.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from costlaw.costmodel.core.files import atomic_file

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))
SEQUENTIAL = "viridis"  # perceptually uniform and greyscale-monotone: an ordered quantity reads in print too
RC = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
      "legend.fontsize": 9, "figure.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3, "lines.linewidth": 1.6,
      "lines.markersize": 6, "svg.fonttype": "path", "savefig.dpi": 150}


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def linestyle(i: int):
    return LINESTYLES[i % len(LINESTYLES)]


def sequential(n: int) -> list:
    """n colours in order along the sequential colormap, evenly spaced by rank (not by value), so neighbouring
    sizes stay apart however their values crowd; the palest 15% is left out, it vanishes on white."""
    from matplotlib import colormaps

    cmap = colormaps[SEQUENTIAL]
    return [cmap(0.85 * i / (n - 1) if n > 1 else 0.0) for i in range(n)]


@contextlib.contextmanager
def style():
    import matplotlib
    from cycler import cycler

    # the palette is also the default cycle, so a colour a figure does not pick ("C0") is the palette's
    with matplotlib.rc_context({**RC, "axes.prop_cycle": cycler(color=list(PALETTE))}):
        yield


def new_figure(width: float = 7.0, height: float = 4.2, ncols: int = 1, nrows: int = 1):
    """A Figure on the Agg canvas and its nrows x ncols axes (a flat list; none when ncols is 0)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)] if ncols else []
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
        save_as(fig, p)
    return list(paths)


def save_as(fig, path) -> Path:
    """Write one file in the format its suffix names (PNG when it has none), atomically, at the style's dpi."""
    p = Path(path)
    with style(), atomic_file(p) as f:
        fig.savefig(f, format=p.suffix.lstrip(".").lower() or "png")
    return p
