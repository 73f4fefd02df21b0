"""Plain aligned tables and human units for terminal output (shared by every verb)."""

from __future__ import annotations


def si(x: float, unit: str = "") -> str:
    """1234567 -> '1.23 M'; keeps 3 significant digits."""
    if x is None:
        return "-"
    ax = abs(x)
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if ax >= factor:
            return f"{x / factor:.3g} {prefix}{unit}".rstrip()
    return f"{x:.3g} {unit}".rstrip()


def binary_bytes(n: float) -> str:
    """Bytes in KiB/MiB/GiB/TiB with 3 significant digits."""
    if n is None:
        return "-"
    for factor, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= factor:
            return f"{n / factor:.3g} {suffix}"
    return f"{int(n)} B"


def table(rows: list[dict], columns: list[str] | None = None, align_right: bool = True) -> str:
    """Rows of dicts as an aligned text table; numbers right-aligned."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(vals, numeric):
        return "  ".join(v.rjust(w) if (n and align_right) else v.ljust(w)
                         for v, w, n in zip(vals, widths, numeric)).rstrip()

    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                   for r in rows if r.get(c) is not None) for c in columns]
    out = [line(columns, numeric), line(["-" * w for w in widths], numeric)]
    out += [line(row, numeric) for row in cells]
    return "\n".join(out)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
