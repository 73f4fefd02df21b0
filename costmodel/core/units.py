"""The units costs come in, read and written the same way by every verb: token counts ("128K"), byte sizes
("16GiB"), SI counts ("1.24 G") and plain aligned text tables."""

from __future__ import annotations

from costlaw.costmodel.core.errors import ConfigError

_BYTE_UNITS = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
               "b": 1}


def parse_tokens(text, field: str = "context") -> int:
    """A token count >= 1: 131072, '131072', '128K' or '1M' (binary: K = 1024)."""
    v = text
    if isinstance(text, str):
        t = text.strip().upper()
        mult = {"K": 1024, "M": 1024**2}.get(t[-1:], 1)
        try:
            v = int(float(t[:-1] if mult > 1 else t) * mult)
        except ValueError:
            raise ConfigError(field, f"{text!r} is not a token count; write e.g. 8192, 128K or 1M") from None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(field, f"must be a whole number of tokens, got {type(v).__name__} {v!r}")
    if v < 1:
        raise ConfigError(field, f"must be >= 1, got {v}")
    return v


def parse_bytes(text, field: str = "--memory-budget") -> float:
    """A size > 0 in bytes: '16GiB', '16GB', '512MiB', '1.6e10'."""
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
    if not v > 0:
        raise ConfigError(field, f"must be > 0, got {text!r}")
    return v


def si(x: float | None, unit: str = "") -> str:
    """1234567 -> '1.23 M' (3 significant digits)."""
    if x is None:
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}".rstrip()
    return f"{x:.3g} {unit}".rstrip()


def binary_bytes(n: float | None) -> str:
    """Bytes in KiB/MiB/GiB/TiB with 3 significant digits."""
    if n is None:
        return "-"
    for factor, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= factor:
            return f"{n / factor:.3g} {suffix}"
    return f"{int(n)} B"


def cell(v) -> str:
    """One table cell: '-' for missing, 4 significant digits for floats."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of dicts as an aligned text table; numeric columns right-aligned."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                   for r in rows if r.get(c) is not None) for c in columns]

    def line(vals):
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(vals, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(row) for row in cells)])
