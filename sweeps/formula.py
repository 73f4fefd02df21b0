"""Formulas for a sweep: a spec's [derived] fields and `costlaw sweep ... --where`, in costlaw's one expression
language (costmodel/core/expr.py, whose docstring states it; never eval()).

What a sweep adds to that language: the names are field paths of the point (`model.d_model`, `train.lr`,
`data.seq_len`, `seed`) and POINT_NAMES; the functions are FUNCTIONS; the constants pi and e. Strings appear only
in a --where's comparisons (`model.kv_policy.method == 'snapkv'`), never in a derived field. A formula is checked
when the spec is loaded and every error names its key path. Evaluated once per point from a file anyone may
edit, each evaluation is bounded in magnitude and time (MAX_MAGNITUDE, TIME_BUDGET_S) and its text in length.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from costlaw.costmodel import ConfigError
from costlaw.costmodel.core import expr as E
from costlaw.costmodel.presets import paper_ffn


def round_to(x, m):
    """x rounded to the nearest multiple of m (at least m): round_to(700, 64) = 704."""
    if m <= 0:
        raise ValueError(f"round_to multiple must be > 0, got {m}")
    r = max(1, round(x / m)) * m
    return int(r) if float(r).is_integer() else r


def clamp(x, lo, hi):
    return min(max(x, lo), hi)


def _round(x, ndigits=None):
    if ndigits is None:
        return round(x)
    if abs(ndigits) > MAX_DIGITS:  # round(5, -10**9) builds 10**(10**9) before it answers
        raise ValueError(f"round's ndigits {ndigits} is beyond +-{MAX_DIGITS}")
    return round(x, int(ndigits))


FUNCTIONS: dict[str, Callable] = {
    "min": min, "max": max, "abs": abs, "round": _round, "floor": math.floor, "ceil": math.ceil,
    "int": int, "float": float, "log": math.log, "log2": math.log2, "log10": math.log10, "exp": math.exp,
    "sqrt": math.sqrt, "paper_ffn": paper_ffn, "round_to": round_to, "clamp": clamp,
}
CONSTANTS = {"pi": math.pi, "e": math.e}
# names resolved per point (sweeps.expand): N = non-embedding parameters of the point's model (the GQA paper's
# N), N_total / N_embedding, tokens_per_step = batch_size * grad_accum * seq_len; and, as text for a --where,
# stage (pretrain | extend | compress), family (gqa | hybrid | compressed, as the store records it) and sparse (the
# model's sparse patterns joined by "+", e.g. "sink_window(64,1024)", or "none": a compressed run keeps its parent's)
POINT_NAMES = ("N", "N_total", "N_embedding", "tokens_per_step", "seed", "stage", "family", "sparse")

MAX_EXPONENT = E.MAX_EXPONENT
# Every value a formula computes (constants, intermediates, results) stays within +-MAX_MAGNITUDE: five orders above
# anything a run config counts (tokens ~1e13, training FLOPs ~1e25), so a formula that leaves it is a mistake, and
# no intermediate can grow into a number whose arithmetic takes minutes (((10 ** 1000) ** 1000) ** 1000).
MAX_MAGNITUDE = 1e30
MAX_DIGITS = 30  # round's ndigits: beyond the magnitude bound nothing is left to round
MAX_CHARS = 1000  # a formula's length: a derived field is a line of arithmetic, not a program
TIME_BUDGET_S = 1.0  # one evaluation, per point: bounded magnitudes keep real formulas in microseconds
LIMITS = E.Limits(magnitude=MAX_MAGNITUDE, seconds=TIME_BUDGET_S)

Formula = E.Expr  # text, tree, names (point names and field paths it reads), calls


def compile_formula(text: str, where: str, *, strings: bool = False) -> Formula:
    """Parse and check a formula; `where` (its key path or flag) is named in every error. strings: string
    constants may be compared with (a --where filter), not only numbers."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(where, "empty formula; write an expression such as \"20 * N\"")
    return E.parse(text, where, functions=FUNCTIONS, constants=CONSTANTS, names=_name_check(where), dotted=True,
                   strings=strings, max_chars=MAX_CHARS)


def _name_check(where: str) -> Callable[[str], str | None]:
    """A point name or a settable field path is a name; anything else is refused with what would be."""
    from costlaw.sweeps.spec import SECTIONS, check_path

    def check(name: str) -> str | None:
        if name in POINT_NAMES:
            return None
        if "." not in name:
            if name in SECTIONS:
                return f"{name!r} alone is a table; name a field such as {name}.<field>"
            return (f"unknown name {name!r}; known names: {', '.join(POINT_NAMES + tuple(CONSTANTS))} and field "
                    "paths like model.d_model")
        if name.split(".")[0] not in SECTIONS:
            return (f"attribute access ({name}) is not allowed; field paths start with "
                    f"{', '.join(s + '.' for s in SECTIONS)}")
        check_path(name, where)  # an unknown field is refused with the fields its section has
        return None

    return check


def evaluate(f: Formula, lookup: Callable[[str], object], where: str):
    """The formula's value; `lookup(name)` resolves point names and field paths. Every value on the way stays
    within +-MAX_MAGNITUDE and the whole evaluation within TIME_BUDGET_S, or it fails in one line."""
    v = E.evaluate(f, lookup, FUNCTIONS, where, constants=CONSTANTS, limits=LIMITS)
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(where, f"formula {f.text!r} gives {v}; it must be a finite number")
    return v
