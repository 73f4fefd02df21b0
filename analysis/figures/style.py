"""The figure style every analysis and study figure uses (fitting/style.py, re-exported: fitting may not import
analysis, so the rcParams, colours and writers live there once), the one name of each quantity on an axis, and
the loss's unit read from the runs' tokenizer."""

from __future__ import annotations

import json

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting.style import (
    LINESTYLES,
    MARKERS,
    PALETTE,
    RC,
    SEQUENTIAL,
    colour,
    linestyle,
    marker,
    new_figure,
    outputs,
    save,
    save_as,
    sequential,
    style,
)

__all__ = ["AXES", "DEFAULT_UNIT", "LINESTYLES", "MARKERS", "PALETTE", "RC", "SEQUENTIAL", "axis_label",
           "bytes_unit", "colour", "linestyle", "loss_label", "loss_unit", "loss_unit_of", "marker", "new_figure",
           "no_data", "outputs", "plain_log_ticks", "save", "save_as", "sequential", "si_label", "size_colours",
           "style"]

# One name per quantity, whichever figure draws it.
AXES = {
    "N": "non-embedding parameters N",
    "T": "context T (tokens)",
    "tokens": "training tokens seen",
    "tpp": "training tokens per non-embedding parameter",
    "n_h": "query heads n_h",
    "position": "position in the context (tokens, bucket midpoint)",
    "M": "inference memory M_infer",
    "C": "inference FLOPs per token C_infer",
}
TOKEN_UNITS = {"byte": "nats per byte"}  # a byte-level tokenizer's token is a byte: the loss is per byte
DEFAULT_UNIT = "nats per token"  # true of every tokenizer's cross-entropy; the byte name is the sharper one


def axis_label(key: str, log: bool = False, unit: str | None = None) -> str:
    """AXES[key], with its unit in brackets and "log scale" where the axis is logarithmic."""
    extra = ", ".join(x for x in (unit, "log scale" if log else None) if x)
    return AXES[key] + (f" ({extra})" if extra else "")


def loss_unit(tokenizers) -> str:
    """The loss's unit for runs of these tokenizers: nats per byte when every run is byte-level, else nats per
    token (several tokenizers: each run's own token, which the name says)."""
    names = {t for t in tokenizers if t}
    if len(names) == 1:
        return TOKEN_UNITS.get(next(iter(names)), DEFAULT_UNIT)
    return DEFAULT_UNIT + (" of each run's tokenizer" if len(names) > 1 else "")


def loss_unit_of(runs) -> str:
    """loss_unit of a runs frame: its `tokenizer` column, else each run's config_json (the store's runs)."""
    if runs is None or not len(runs):
        return DEFAULT_UNIT
    if "tokenizer" in runs.columns:
        return loss_unit(runs["tokenizer"].dropna())
    if "config_json" in runs.columns:
        return loss_unit(tokenizer_of(c) for c in runs["config_json"])
    return DEFAULT_UNIT


def tokenizer_of(config_json: str | None) -> str | None:
    if not config_json:
        return None
    return json.loads(config_json).get("config", {}).get("data", {}).get("tokenizer")


def loss_label(kind: str = "validation", unit: str = DEFAULT_UNIT) -> str:
    """"validation loss (nats per byte)", "training loss (nats per token)", ..."""
    return f"{kind} loss ({unit})"


def size_colours(sizes) -> dict:
    """Distinct model sizes -> colours along the sequential colormap by rank: the smallest darkest, the largest
    palest, every size its own colour."""
    ordered = sorted(set(float(s) for s in sizes))
    return dict(zip(ordered, sequential(len(ordered))))


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
            return f"{v / factor:.3g}{prefix}"
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
