"""One safe expression language for formulas, filters and derived columns: parsed with `ast`, checked against a
whitelist, evaluated by walking the tree (never eval()). Every expression a user types into costlaw is this
language: `costlaw fit --formula/--assign/--where/--holdout-where` (over a table's columns), `costlaw sweep ...
--where` and a sweep spec's [derived] formulas (over a run config's field paths, sweeps/formula.py). Only the
names and functions differ by place; each place's help lists its own.

The language:

    numbers          3, 0.5, 1e21 (no True/False: write a comparison)
    names            loss, N, `Training FLOP` (backquotes quote a name with spaces or symbols),
                     model.d_model (dotted field paths, where the place reads a config)
    strings          'completed', only to compare with (fit --where, sweep --where)
    arithmetic       + - * / // % **   (** refuses exponents beyond +-1000)
    comparisons      < <= > >= == !=, chained as in Python: 1 < x <= 4
    logic            and, or, not;  a if cond else b
    calls            f(a, b) to the place's functions, positional arguments only

Anything else (attribute access on values, subscripts, lambdas, comprehensions, keyword arguments, walrus, bit
operators) is refused when the expression is parsed, in one line naming the flag or key and the fix.

Allowed: numbers; strings where the caller allows them (filters compare `status == 'completed'`); names (free
names are resolved by the caller's `lookup`; `` `Training FLOP` `` quotes a name with spaces); dotted field paths
(`model.d_model`) where the caller allows them; + - * / // % **; unary + - not; comparisons < <= > >= == != (chained);
and / or; `a if cond else b`; calls, with positional arguments, to the caller's whitelisted functions.
Refused: attribute access on values, subscripts, lambdas, comprehensions, keyword arguments, bool literals, ...

Evaluation works on Python scalars and, unchanged, on numpy arrays (or any objects with numpy's operators): where
an operand is an array (it has `ndim` > 0), `and`/`or`/`not` and chained comparisons become elementwise, and a
conditional calls the caller's `where(cond, a, b)` function. This module imports nothing beyond the standard library:
the caller passes the functions (`SCALAR_FUNCTIONS` below for scalars; costlaw.fitting.formula and
costlaw.analysis.fits.rows hold numpy tables).

`**` with two Python numbers refuses exponents above MAX_EXPONENT in magnitude, so `10**10**10` cannot hang the
process building a huge integer; array powers overflow to inf like any numpy arithmetic. A place that evaluates
user text once per item (a sweep's formulas, per point) also bounds every value and the time taken (`Limits`), and
`parse(max_chars=...)` bounds the text; an expression nested too deeply for the parser is refused in one line.

    e = parse("E + A/N**alpha", "--formula", functions=SCALAR_FUNCTIONS)
    e.names                                   # ('E', 'A', 'N', 'alpha')
    evaluate(e, {"E": 1.7, "A": 400.0, "N": 1e9, "alpha": 0.34}.__getitem__, SCALAR_FUNCTIONS)
"""

from __future__ import annotations

import ast
import math
import operator
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from costlaw.costmodel.core.errors import ConfigError

MAX_EXPONENT = 1000
# No `e`: Epoch and others name a fitted parameter e (log E); write exp(1).
CONSTANTS = {"pi": math.pi, "inf": math.inf}

BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
           ast.Eq: operator.eq, ast.NotEq: operator.ne}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}


def _where(cond, a, b):
    return a if cond else b


SCALAR_FUNCTIONS: dict[str, Callable] = {
    "exp": math.exp, "log": math.log, "log2": math.log2, "log10": math.log10, "sqrt": math.sqrt, "abs": abs,
    "min": min, "max": max, "minimum": min, "maximum": max, "where": _where, "floor": math.floor, "ceil": math.ceil,
}

_QUOTED = re.compile(r"`([^`]*)`")


@dataclass(frozen=True)
class Expr:
    """A checked expression. names: the free names it reads, in order of first use (dotted paths as written,
    quoted names without their backquotes); calls: the functions it calls."""

    text: str
    tree: ast.expr
    names: tuple[str, ...]
    calls: tuple[str, ...]
    quoted: Mapping[str, str]  # placeholder identifier -> the quoted name it stands for


def parse(text: str, where: str = "expression", *, functions: Collection[str] = SCALAR_FUNCTIONS,
          constants: Mapping[str, float] = CONSTANTS,
          names: Collection[str] | Callable[[str], str | None] | None = None, dotted: bool = False,
          strings: bool = False, max_chars: int | None = None) -> Expr:
    """Parse and check `text`; every error is one line `where: problem; fix` (a ConfigError).

    functions: the names that may be called; constants: names with fixed values; names: the free names allowed
    (a collection, or a callable returning an error text for a bad name and None for a good one; None: any);
    dotted: `a.b.c` is one name (field paths); strings: string constants are allowed (comparisons in filters);
    max_chars: the longest text accepted.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(where, "empty expression; write one such as \"loss < 4\"")
    if max_chars is not None and len(text) > max_chars:
        raise ConfigError(where, f"the expression of {len(text)} characters is longer than {max_chars}; split it into "
                                 "steps or set the value directly")
    try:
        return _parse(text, where, functions, constants, names, dotted, strings)
    except (RecursionError, MemoryError):  # the parser's and the checker's recursion: "-" * 900 + "1"
        raise ConfigError(where, f"{_short(text)!r} nests too deeply; write it flatter") from None


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _parse(text, where, functions, constants, names, dotted, strings) -> Expr:
    quoted: dict[str, str] = {}

    def unquote(m):
        name = m.group(1)
        if not name.strip():
            raise ConfigError(where, f"empty quoted name in {text!r}; write `column name`")
        key = f"_q{len(quoted)}_"
        quoted[key] = name
        return key

    source = _QUOTED.sub(unquote, text)
    if "`" in source:
        raise ConfigError(where, f"unbalanced backquote in {text!r}; quote a name with spaces as `like this`")
    try:
        tree = ast.parse(source.strip(), mode="eval").body
    except SyntaxError as e:
        raise ConfigError(where, f"{text!r} does not parse ({e.msg}); write an expression like \"A/N**alpha + E\"") \
            from None
    found: list[str] = []
    calls: list[str] = []
    _Checker(text, where, set(functions), dict(constants), names, dotted, strings, quoted, found, calls).visit(tree)
    return Expr(text, tree, tuple(dict.fromkeys(found)), tuple(dict.fromkeys(calls)), quoted)


class _Checker:
    def __init__(self, text, where, functions, constants, allowed, dotted, strings, quoted, found, calls):
        self.text, self.where, self.functions, self.constants = text, where, functions, constants
        self.allowed, self.dotted, self.strings, self.quoted = allowed, dotted, strings, quoted
        self.found, self.calls = found, calls

    def bad(self, what: str):
        fns = ", ".join(sorted(self.functions)) or "none"
        raise ConfigError(self.where, f"{what} is not allowed in {self.text!r}; use numbers, names, arithmetic, "
                                      f"comparisons, and/or/not, 'a if c else b' and the functions {fns}")

    def name(self, name: str):
        if name in self.constants and name not in self.quoted:
            return
        shown = self.quoted.get(name, name)
        if self.allowed is not None:
            problem = self.allowed(shown) if callable(self.allowed) else (
                None if shown in self.allowed else
                f"unknown name {shown!r}; known: {', '.join(map(str, self.allowed)) or 'none'}")
            if problem:
                hint = " (a function: call it)" if shown in self.functions else ""
                raise ConfigError(self.where, f"{problem}{hint} (in {self.text!r})")
        self.found.append(shown)

    def visit(self, node):
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, (int, float, str)) or (isinstance(v, str) and not self.strings):
                self.bad(f"the constant {v!r}")
        elif isinstance(node, ast.Name):
            self.name(node.id)
        elif isinstance(node, ast.Attribute):
            path = dotted_name(node)
            if not self.dotted or path is None:
                self.bad("attribute access")
            self.name(path)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in BINOPS:
                self.bad(f"the operator {type(node.op).__name__}")
            self.visit(node.left)
            self.visit(node.right)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.UAdd, ast.USub, ast.Not)):
                self.bad(f"the operator {type(node.op).__name__}")
            self.visit(node.operand)
        elif isinstance(node, ast.Compare):
            if not all(type(op) in COMPARE for op in node.ops):
                self.bad("that comparison (in, is)")
            for sub in (node.left, *node.comparators):
                self.visit(sub)
        elif isinstance(node, ast.BoolOp):
            for sub in node.values:
                self.visit(sub)
        elif isinstance(node, ast.IfExp):
            for sub in (node.test, node.body, node.orelse):
                self.visit(sub)
        elif isinstance(node, ast.Call):
            fn = node.func.id if isinstance(node.func, ast.Name) else None
            if fn is None or fn not in self.functions:
                shown = fn if fn is not None else ast.unparse(node.func)
                raise ConfigError(self.where, f"unknown function {shown!r} in {self.text!r}; allowed: "
                                              f"{', '.join(sorted(self.functions)) or 'none'}")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                self.bad("keyword or starred arguments")
            self.calls.append(fn)
            for a in node.args:
                self.visit(a)
        else:
            self.bad(type(node).__name__)


def dotted_name(node) -> str | None:
    """`a.b.c` for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def is_array(v) -> bool:
    """True for numpy arrays (and anything else with ndim > 0): logic and conditionals then work elementwise."""
    return getattr(v, "ndim", 0) > 0


@dataclass(frozen=True)
class Limits:
    """Bounds on one evaluation of scalars: every number on the way (constants, intermediates, the result) within
    +-magnitude, a power refused before it is computed when it would leave that range, and the whole evaluation
    within `seconds`. None: no bound."""

    magnitude: float | None = None
    seconds: float | None = None


class _OutOfBounds(ArithmeticError):
    pass


def evaluate(expr: Expr, lookup: Callable[[str], object], functions: Mapping[str, Callable] = SCALAR_FUNCTIONS,
             where: str = "expression", constants: Mapping[str, float] = CONSTANTS, limits: Limits | None = None):
    """The value of `expr`; lookup(name) resolves free names (as in Expr.names). Failures of the arithmetic
    (a log of a negative scalar, a division by zero, a too-large power) and values beyond `limits` are one-line
    ConfigErrors naming `where`."""
    ev = _Evaluator(expr, lookup, functions, constants, limits)
    try:
        return ev.eval(expr.tree)
    except ConfigError:
        raise
    except _OutOfBounds as e:
        raise ConfigError(where, f"{_short(expr.text)!r} is out of bounds: {e}; check its arithmetic") from None
    except RecursionError:
        raise ConfigError(where, f"{_short(expr.text)!r} nests too deeply; write it flatter") from None
    except (ArithmeticError, ValueError, TypeError) as e:
        raise ConfigError(where, f"{expr.text!r} fails: {e}; check the values it reads") from None


def _magnitude(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return f"about 1e{len(str(abs(v))) - 1}" if abs(v) < 10 ** 4300 else "more than 1e4300"


class _Evaluator:
    def __init__(self, expr, lookup, functions, constants, limits=None):
        self.expr, self.lookup, self.functions, self.constants = expr, lookup, functions, constants
        self.limits = limits
        self.deadline = None
        if limits is not None and limits.seconds is not None:
            self.deadline = time.monotonic() + limits.seconds

    def eval(self, node):
        v = self._value(node)
        if self.limits is not None:
            mag = self.limits.magnitude
            if mag is not None and _number(v) and abs(v) > mag:
                raise _OutOfBounds(f"an intermediate value reaches {_magnitude(v)}, beyond +-{mag:g}")
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise _OutOfBounds(f"evaluation took more than {self.limits.seconds:g} s")
        return v

    def _power_fits(self, a, b) -> bool:
        """Whether a ** b stays within the magnitude bound, decided from logarithms before it is computed."""
        mag = self.limits.magnitude if self.limits is not None else None
        if mag is None or not (_number(a) and _number(b)) or b <= 0 or abs(a) <= 1:
            return True  # a negative exponent shrinks; a non-number fails in the operator itself
        return b * math.log10(abs(a)) <= math.log10(mag)

    def _value(self, node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.expr.quoted:
                return self.lookup(self.expr.quoted[node.id])
            return self.constants[node.id] if node.id in self.constants else self.lookup(node.id)
        if isinstance(node, ast.Attribute):
            return self.lookup(dotted_name(node))
        if isinstance(node, ast.BinOp):
            a, b = self.eval(node.left), self.eval(node.right)
            if isinstance(node.op, ast.Pow) and _number(a) and _number(b):
                if abs(b) > MAX_EXPONENT:
                    raise ValueError(f"exponent {b} is larger than {MAX_EXPONENT} in magnitude")
                if not self._power_fits(a, b):
                    shown = f"({a!r})" if a < 0 else repr(a)
                    raise _OutOfBounds(f"{shown} ** {b!r} is beyond +-{self.limits.magnitude:g}")
            return BINOPS[type(node.op)](a, b)
        if isinstance(node, ast.UnaryOp):
            v = self.eval(node.operand)
            if isinstance(node.op, ast.Not):
                return _not(v)
            return -v if isinstance(node.op, ast.USub) else +v
        if isinstance(node, ast.Compare):
            left, out = self.eval(node.left), True
            for op, comp in zip(node.ops, node.comparators):
                right = self.eval(comp)
                res = COMPARE[type(op)](left, right)
                if not (is_array(res) or is_array(out)):
                    if not res:
                        return False
                    out = True
                else:
                    out = _and(out, res)
                left = right
            return out
        if isinstance(node, ast.BoolOp):
            is_and = isinstance(node.op, ast.And)
            out = None
            for sub in node.values:
                v = self.eval(sub)
                if out is None:
                    out = v if is_array(v) else bool(v)
                else:
                    out = _and(out, v) if is_and else _or(out, v)
                if not is_array(out) and out is (not is_and):  # short-circuit on scalars, as Python does
                    return out
            return out
        if isinstance(node, ast.IfExp):
            test = self.eval(node.test)
            if not is_array(test):
                return self.eval(node.body) if test else self.eval(node.orelse)
            if "where" not in self.functions:
                raise ValueError("a conditional over arrays needs a where(cond, a, b) function")
            return self.functions["where"](test, self.eval(node.body), self.eval(node.orelse))
        if isinstance(node, ast.Call):
            return self.functions[node.func.id](*(self.eval(a) for a in node.args))
        raise TypeError(f"unexpected {type(node).__name__}")  # parse() refused it already


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _truth(v):
    return (v != 0) if is_array(v) else bool(v)


def _not(v):
    return (v == 0) if is_array(v) else not v


def _and(a, b):
    if is_array(a) or is_array(b):
        return _truth(a) & _truth(b)
    return bool(a) and bool(b)


def _or(a, b):
    if is_array(a) or is_array(b):
        return _truth(a) | _truth(b)
    return bool(a) or bool(b)


def split_assignment(text: str, where: str = "--assign") -> tuple[str, str]:
    """'NAME = EXPR' (NAME may be `quoted`) as (NAME, EXPR); `==`, `<=`, `>=` and `!=` are not assignments."""
    m = re.fullmatch(r"\s*(`[^`]+`|[A-Za-z_]\w*)\s*=(?!=)(.*)", text or "", flags=re.S)
    if not m or not m.group(2).strip():
        raise ConfigError(where, f"{text!r} is not NAME = EXPR; write e.g. \"D = `Training FLOP` / (6 * N)\"")
    return m.group(1).strip("`"), m.group(2).strip()
