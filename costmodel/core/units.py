"""The units costs come in, read and written the same way by every verb: token counts ("128K"), byte sizes
("16GiB"), SI counts ("1.24 G", up to quetta) and plain aligned text tables that fit the terminal they are
printed on (`table_width`; `--wide` on a verb shows every column)."""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import shutil
import sys

from costlaw.costmodel.core.errors import ConfigError

_BYTE_UNITS = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
               "b": 1}
_SI = ("", "k", "M", "G", "T", "P", "E", "Z", "Y", "R", "Q")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


MAX_TOKENS = 2**40  # a trillion tokens: past any context or run a costlaw study prices


def parse_tokens(text, field: str = "context") -> int:
    """A whole token count in [1, MAX_TOKENS]: 131072, '131072', '128K' or '1M' (binary: K = 1024)."""
    v = text
    if isinstance(text, str):
        t = text.strip().upper()
        mult = {"K": 1024, "M": 1024**2}.get(t[-1:], 1)
        num = t[:-1] if mult > 1 else t
        try:
            x = int(num) * mult if num.lstrip("+-").isdigit() else float(num) * mult
        except ValueError:
            raise ConfigError(field, f"{text!r} is not a token count; write e.g. 8192, 128K or 1M") from None
        if isinstance(x, float) and not math.isfinite(x):  # inf, nan and 1e400 parse as floats; none is a count
            raise ConfigError(field, f"{text!r} is not a finite token count; write e.g. 8192, 128K or 1M")
        if x != int(x):
            raise ConfigError(field, f"{text!r} is not a whole number of tokens; write e.g. 8192, 128K or 1M")
        v = int(x)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(field, f"must be a whole number of tokens, got {type(v).__name__} {v!r}")
    if v < 1:
        raise ConfigError(field, f"must be >= 1, got {v}")
    if v > MAX_TOKENS:
        shown = f"{v:.3g}" if v < 10**300 else f"a {len(str(v))}-digit number of"  # past a float's range
        raise ConfigError(field, f"{shown} tokens is beyond {MAX_TOKENS:,} (2**40); give a context or count in "
                                 "tokens, e.g. 128K or 1M")
    return v


def parse_bytes(text, field: str = "--memory-budget") -> float:
    """A finite size > 0 in bytes: '16GiB', '16GB', '512MiB', '1.6e10'."""
    t = str(text).strip()
    low = t.lower()
    num, mult = t, 1
    for u in sorted(_BYTE_UNITS, key=len, reverse=True):
        if low.endswith(u):
            num, mult = t[: -len(u)], _BYTE_UNITS[u]
            break
    try:
        v = float(num) * mult
    except ValueError:
        raise ConfigError(field, f"{text!r} is not a size; write e.g. 16GiB, 800MB or 1.6e10") from None
    if not math.isfinite(v):
        raise ConfigError(field, f"{text!r} is not a finite size; write e.g. 16GiB, 800MB or 1.6e10")
    if not v > 0:
        raise ConfigError(field, f"must be > 0, got {text!r}")
    return v


def _scaled(x: float, base: float, names: tuple[str, ...]) -> tuple[str, str] | None:
    """(mantissa to 3 significant digits, unit) with the mantissa below `base` once rounded; None past the last."""
    k = 0
    while k + 1 < len(names) and abs(x) >= base ** (k + 1):
        k += 1
    while k < len(names):
        text = f"{x / base ** k:.3g}"
        # 999.7 k rounds to 1e+03 k, and 1020 KiB prints as 1.02e+03 KiB: both read better in the next unit
        if abs(float(text)) < 1000 or k + 1 == len(names):
            return (text, names[k]) if "e" not in text else None
        k += 1
    return None


def si(x: float | None, unit: str = "") -> str:
    """1234567 -> '1.23 M' (3 significant digits; prefixes k to Q, scientific notation past 1000 Q)."""
    if x is None:
        return "-"
    x = float(x)
    if not math.isfinite(x):
        return f"{x} {unit}".rstrip()
    if abs(x) < 1:
        return f"{x:.3g} {unit}".rstrip()
    got = _scaled(x, 1000.0, _SI)
    if got is None:
        return f"{x:.3g} {unit}".rstrip()
    return f"{got[0]} {got[1]}{unit}".rstrip()


def binary_bytes(n: float | None) -> str:
    """Bytes in KiB ... YiB with 3 significant digits ('512 B' below a KiB)."""
    if n is None:
        return "-"
    n = float(n)
    if not math.isfinite(n):
        return f"{n} B"
    if abs(n) < 1024:
        return f"{int(n)} B"
    got = _scaled(n, 1024.0, _BINARY)
    return f"{got[0]} {got[1]}" if got is not None else f"{n:.3g} B"


def cell(v) -> str:
    """One table cell: '-' for missing, 4 significant digits for floats."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# The width tables are fitted to while a verb prints to a terminal (None: every column). A context variable, so a
# verb sets it around what it prints and files written meanwhile (reports) are never cut.
_WIDTH: contextvars.ContextVar[int | None] = contextvars.ContextVar("costlaw_table_width", default=None)
TEXT_CAP = 32  # a text column wider than this is cut (…) before whole columns are dropped
WIDE_HINT = "--wide shows every column"


def terminal_width() -> int | None:
    """The terminal's width when stdout is one (or COLUMNS says), else None: a pipe or a file gets every column."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return max(20, shutil.get_terminal_size().columns)
    return None


@contextlib.contextmanager
def table_width(width: int | None):
    """Tables made inside fit `width` characters (None: no limit)."""
    token = _WIDTH.set(width)
    try:
        yield
    finally:
        _WIDTH.reset(token)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def table(rows: list[dict], columns: list[str] | None = None, width: int | None = None) -> str:
    """Rows of dicts as an aligned text table; numeric columns right-aligned. Wider than `width` (default: the
    enclosing `table_width`, else no limit), long text cells are cut and then the rightmost columns dropped, and a
    last line names what was left out."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0])
    width = _WIDTH.get() if width is None else width
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                   for r in rows if r.get(c) is not None) for c in columns]
    dropped: list[str] = []
    if width is not None and _span(widths) > width:
        widths = [w if n else min(w, max(len(c), TEXT_CAP)) for w, n, c in zip(widths, numeric, columns)]
        keep = len(columns)
        while keep > 1 and _span(widths[:keep]) > width:
            keep -= 1
        dropped = columns[keep:]
        columns, numeric = columns[:keep], numeric[:keep]
        widths = [min(w, width) for w in widths[:keep]]
        cells = [[_cut(v, w) for v, w in zip(row[:keep], widths)] for row in cells]

    def line(vals):
        return "  ".join(_cut(v, w).rjust(w) if n else _cut(v, w).ljust(w)
                         for v, w, n in zip(vals, widths, numeric)).rstrip()

    out = [line(columns), line(["-" * w for w in widths]), *(line(row) for row in cells)]
    if dropped:
        names = ", ".join(dropped)
        note = f"({len(dropped)} more column{'s' if len(dropped) > 1 else ''}: {names}; {WIDE_HINT})"
        if len(note) > width:
            note = f"({len(dropped)} more column{'s' if len(dropped) > 1 else ''}; {WIDE_HINT})"
        out.append(note)
    return "\n".join(out)


def _span(widths: list[int]) -> int:
    return sum(widths) + 2 * (len(widths) - 1)
