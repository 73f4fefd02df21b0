"""Formulas for derived fields: a small, safe expression language parsed with `ast` (never eval()).

Allowed: numbers, + - * / // % **, unary -, comparisons, `and`/`or`/`not`, `a if cond else b`,
field paths of the point (`model.d_model`, `train.lr`, `data.seq_len`, `seed`), the names below, and
calls (positional arguments only) to the whitelisted functions below. Anything else (attribute access
on values, subscripts, lambdas, comprehensions, strings, keyword arguments) is refused when the spec is
loaded, with the formula's key path.
"""

from __future__ import annotations

import ast
import math
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass

from costlaw.costmodel import ConfigError
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
# N), N_total / N_embedding, tokens_per_step = batch_size * grad_accum * seq_len
POINT_NAMES = ("N", "N_total", "N_embedding", "tokens_per_step", "seed")

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_}
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}
MAX_EXPONENT = 1000
# Every value a formula computes (constants, intermediates, results) stays within +-MAX_MAGNITUDE: five orders above
# anything a run config counts (tokens ~1e13, training FLOPs ~1e25), so a formula that leaves it is a mistake, and
# no intermediate can grow into a number whose arithmetic takes minutes (((10 ** 1000) ** 1000) ** 1000).
MAX_MAGNITUDE = 1e30
MAX_DIGITS = 30  # round's ndigits: beyond the magnitude bound nothing is left to round
MAX_CHARS = 1000  # a formula's length: a derived field is a line of arithmetic, not a program
TIME_BUDGET_S = 1.0  # one evaluation, per point: bounded magnitudes keep real formulas in microseconds


@dataclass(frozen=True)
class Formula:
    text: str
    tree: ast.Expression
    names: tuple[str, ...]  # point names and field paths it reads


def compile_formula(text: str, where: str) -> Formula:
    """Parse and check a formula; `where` (its key path) is named in every error."""
    if not text.strip():
        raise ConfigError(where, "empty formula; write an expression such as \"20 * N\"")
    if len(text) > MAX_CHARS:
        raise ConfigError(where, f"formula of {len(text)} characters is longer than {MAX_CHARS}; derive the field "
                                 "in steps (several derived fields) or set it directly")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ConfigError(where, f"formula {_short(text)!r} does not parse ({e.msg}); write arithmetic like "
                                 "\"20 * N\"") from None
    except (RecursionError, MemoryError):
        raise ConfigError(where, f"formula {_short(text)!r} nests too deeply; write it flatter") from None
    names: list[str] = []
    try:
        _check(tree.body, text, where, names)
    except RecursionError:
        raise ConfigError(where, f"formula {_short(text)!r} nests too deeply; write it flatter") from None
    return Formula(text=text, tree=tree, names=tuple(dict.fromkeys(names)))


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _check(node, text: str, where: str, names: list[str]) -> None:
    from costlaw.sweeps.spec import SECTIONS, check_path

    def bad(what: str):
        raise ConfigError(where, f"{what} is not allowed in formula {text!r}; use numbers, + - * / ** , field "
                                 f"paths, {', '.join(POINT_NAMES)} and {', '.join(FUNCTIONS)}")

    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            bad(f"the constant {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return
        if node.id in SECTIONS:
            raise ConfigError(where, f"{node.id!r} alone is a table; name a field such as {node.id}.<field> "
                                     f"in formula {text!r}")
        if node.id not in POINT_NAMES:
            hint = " (a function: call it)" if node.id in FUNCTIONS else ""
            raise ConfigError(where, f"unknown name {node.id!r}{hint} in formula {text!r}; known names: "
                                     f"{', '.join(POINT_NAMES + tuple(CONSTANTS))} and field paths like model.d_model")
        names.append(node.id)
    elif isinstance(node, ast.Attribute):
        path = _dotted(node)
        if path is None or path.split(".")[0] not in SECTIONS:
            bad("attribute access")
        check_path(path, where)
        names.append(path)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            bad(f"the operator {type(node.op).__name__}")
        _check(node.left, text, where, names)
        _check(node.right, text, where, names)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            bad(f"the operator {type(node.op).__name__}")
        _check(node.operand, text, where, names)
    elif isinstance(node, ast.Compare):
        if not all(type(op) in _CMP for op in node.ops):
            bad("that comparison")
        for sub in (node.left, *node.comparators):
            _check(sub, text, where, names)
    elif isinstance(node, ast.BoolOp):
        for sub in node.values:
            _check(sub, text, where, names)
    elif isinstance(node, ast.IfExp):
        for sub in (node.test, node.body, node.orelse):
            _check(sub, text, where, names)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            fn = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ConfigError(where, f"unknown function {fn!r} in formula {text!r}; allowed: {', '.join(FUNCTIONS)}")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            bad("keyword or starred arguments")
        for a in node.args:
            _check(a, text, where, names)
    else:
        bad(type(node).__name__)


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


class _Budget:
    """Magnitude and time bounds of one evaluation (see MAX_MAGNITUDE, TIME_BUDGET_S)."""

    def __init__(self):
        self.deadline = time.monotonic() + TIME_BUDGET_S

    def bound(self, v):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) > MAX_MAGNITUDE:
            raise _TooLarge(f"an intermediate value reaches {_magnitude(v)}, beyond +-{MAX_MAGNITUDE:g}")
        if time.monotonic() > self.deadline:
            raise _TooLarge(f"evaluation took more than {TIME_BUDGET_S:g} s")
        return v


class _TooLarge(ArithmeticError):
    pass


def _magnitude(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return f"about 1e{len(str(abs(v))) - 1}" if abs(v) < 10 ** 4300 else "more than 1e4300"


def evaluate(f: Formula, lookup: Callable[[str], object], where: str):
    """The formula's value; `lookup(name)` resolves point names and field paths. Every value on the way stays
    within +-MAX_MAGNITUDE and the whole evaluation within TIME_BUDGET_S, or it fails in one line."""
    try:
        v = _eval(f.tree.body, lookup, _Budget())
    except ConfigError:
        raise
    except _TooLarge as e:
        raise ConfigError(where, f"formula {_short(f.text)!r} is out of bounds: {e}; check its arithmetic") from None
    except RecursionError:
        raise ConfigError(where, f"formula {_short(f.text)!r} nests too deeply; write it flatter") from None
    except (ArithmeticError, ValueError, TypeError) as e:
        raise ConfigError(where, f"formula {f.text!r} fails: {e}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(where, f"formula {f.text!r} gives {v}; it must be a finite number")
    return v


def _pow_fits(a, b) -> bool:
    """Whether a ** b stays within MAX_MAGNITUDE, decided from logarithms before it is computed."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b <= 0:
        return True  # a negative exponent shrinks; a non-number fails in the operator itself
    base = abs(a)
    if base <= 1:
        return True
    return b * math.log10(base) <= math.log10(MAX_MAGNITUDE)


def _eval(node, lookup, budget: _Budget):
    return budget.bound(_value(node, lookup, budget))


def _value(node, lookup, budget: _Budget):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return CONSTANTS[node.id] if node.id in CONSTANTS else lookup(node.id)
    if isinstance(node, ast.Attribute):
        return lookup(_dotted(node))
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, lookup, budget), _eval(node.right, lookup, budget)
        if isinstance(node.op, ast.Pow):
            if isinstance(b, (int, float)) and abs(b) > MAX_EXPONENT:
                raise ValueError(f"exponent {b} is larger than {MAX_EXPONENT}")
            if not _pow_fits(a, b):
                shown = f"({a!r})" if a < 0 else repr(a)
                raise _TooLarge(f"{shown} ** {b!r} is beyond +-{MAX_MAGNITUDE:g}")
        return _BINOPS[type(node.op)](a, b)
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, lookup, budget))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, lookup, budget)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, lookup, budget)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        vals = (_eval(v, lookup, budget) for v in node.values)
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.IfExp):
        test = _eval(node.test, lookup, budget)
        return _eval(node.body, lookup, budget) if test else _eval(node.orelse, lookup, budget)
    if isinstance(node, ast.Call):
        return FUNCTIONS[node.func.id](*(_eval(a, lookup, budget) for a in node.args))
    raise TypeError(f"unexpected {type(node).__name__}")  # _check refused it already
