"""Field checks every config shares, so one rule holds everywhere: whole numbers are ints (or floats with no
fraction, as TOML and formulas write them), never bools; numbers are finite; errors are one line naming the
field (`ConfigError(field, problem)`).

A dataclass states its fields' ranges once, beside the fields: `bounded(default, lo=..., choices=...)` puts
them in the field's metadata, and `conform(obj)` checks every field against its type hint and its range,
storing the converted value (1 -> 1.0 for a float field, a list -> a tuple). Checks that relate fields stay
with the config that owns them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing

from costlaw.costmodel.core.errors import ConfigError

_BOUNDS = "costlaw.bounds"


def bounded(default=dataclasses.MISSING, *, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False,
            choices=None):
    """A dataclass field whose value (each item, for a tuple field) `conform` checks against these bounds."""
    return dataclasses.field(default=default, metadata={_BOUNDS: dict(lo=lo, hi=hi, lo_open=lo_open,
                                                                      hi_open=hi_open, choices=choices)})


def bounds(f: dataclasses.Field) -> dict:
    """The bounds `bounded` gave field `f` (empty for a plain field)."""
    return dict(f.metadata.get(_BOUNDS, {}))


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _range(lo, hi, lo_open: bool, hi_open: bool) -> str | None:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_fmt(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_fmt(hi)}"
    return None


def _check_range(field: str, v, lo, hi, lo_open: bool, hi_open: bool):
    low = lo is not None and (v <= lo if lo_open else v < lo)
    high = hi is not None and (v >= hi if hi_open else v > hi)
    if low or high:
        raise ConfigError(field, f"must be {_range(lo, hi, lo_open, hi_open)}, got {_fmt(v)}")
    return v


def integer(field: str, value, lo=None, hi=None) -> int:
    """A whole number within [lo, hi]; 4.0 is 4, but True, 4.5 and nan are refused."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"must be a whole number, got {value!r}")
    return _check_range(field, value, lo, hi, False, False)


def real(field: str, value, lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite number within the bounds, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(field, f"must be a finite number, got {value!r}")
    return _check_range(field, value, lo, hi, lo_open, hi_open)


def fraction(field: str, value, *, lo_open: bool = False) -> float:
    """A number in [0, 1] (or (0, 1])."""
    return real(field, value, 0, 1, lo_open=lo_open)


def boolean(field: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(field, f"must be true or false, got {value!r}")
    return value


def text(field: str, value) -> str:
    if not isinstance(value, str):
        raise ConfigError(field, f"must be a string, got {type(value).__name__} {value!r}")
    return value


def choice(field: str, value, options):
    """`value` if it is one of `options` (any container; a dict's keys)."""
    try:
        ok = value in options
    except TypeError:  # an unhashable value (a list, a table) against a dict or set
        ok = False
    if not ok:
        raise ConfigError(field, f"{value!r} is not one of {', '.join(map(str, options))}")
    return value


def optional_arm(hint):
    """X for a hint `X | None`, else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(arms) == 1 and len(typing.get_args(hint)) == 2:
            return arms[0]
    return None


SCALARS = (bool, int, float, str)


def plain(hint) -> bool:
    """Whether `check` knows `hint`: a scalar, a tuple of scalars, or either of those or None."""
    hint = optional_arm(hint) or hint
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        return len(args) == 2 and args[1] is Ellipsis and args[0] in SCALARS
    return hint in SCALARS


def check(field: str, value, hint, *, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False,
          choices=None):
    """`value` as type `hint` (a `plain` hint) within the bounds, or ConfigError naming `field`."""
    arm = optional_arm(hint)
    if arm is not None:
        if value is None:
            return None
        hint = arm
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field, f"must be a list, got {type(value).__name__} {value!r}")
        item = typing.get_args(hint)[0]
        out = []
        for i, x in enumerate(value):
            try:
                out.append(check(field, x, item, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, choices=choices))
            except ConfigError as e:
                raise ConfigError(field, f"item {i} {e.problem}") from None
        return tuple(out)
    if hint is bool:
        value = boolean(field, value)
    elif hint is int:
        value = integer(field, value, lo, hi)
    elif hint is float:
        value = real(field, value, lo, hi, lo_open=lo_open, hi_open=hi_open)
    elif hint is str:
        value = text(field, value)
    else:
        raise TypeError(f"check: {field} has type {hint!r}, which is not a plain type")
    if choices is not None:
        choice(field, value, choices)
    return value


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)  # resolving string annotations costs more than the checks themselves


def conform(obj, prefix: str = "") -> None:
    """Check every plain field of dataclass `obj` against its type hint and its `bounded` range, in field order,
    and store the converted values (frozen dataclasses included). Errors name `prefix.field`."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        hint = hints[f.name]
        if not plain(hint):
            continue
        value = getattr(obj, f.name)
        try:
            new = check(f.name, value, hint, **bounds(f))
        except ConfigError as e:
            raise e.under(prefix) from None
        if new is not value:
            object.__setattr__(obj, f.name, new)
