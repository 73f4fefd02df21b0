"""Parameter specs on the command line, parsed into natural-unit values (one-line errors naming the flag):

    --fix E=1.69            --fix E=1.69,alpha=0.34      (repeatable; commas separate)  -> {"E": 1.69, ...}
    --init A=400            --eval-at A=406.4,B=410.7,E=1.69,alpha=0.34,beta=0.28
    --tie beta=alpha        (beta takes alpha's value)                                  -> {"beta": "alpha"}
    --bounds alpha=0:1      --bounds E=1.5:  (open above)  --bounds A=:1e4              -> {"alpha": (0.0, 1.0)}
    --start-box alpha=0.1:1 (both ends needed)
"""

from __future__ import annotations

import math
import re

from costlaw.costmodel.core.errors import CostlawError

_NAME = re.compile(r"[A-Za-z_]\w*")


def _items(specs, flag: str, example: str):
    for spec in specs or []:
        for item in str(spec).split(","):
            item = item.strip()
            name, eq, value = item.partition("=")
            name, value = name.strip(), value.strip()
            if not item or not eq or not _NAME.fullmatch(name) or not value:
                raise CostlawError(f"{flag}: {item!r} is not {example}; write e.g. {flag} {example}")
            yield name, value


def _number(text: str, flag: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise CostlawError(f"{flag}: {name}={text!r} is not a number; write e.g. {flag} {name}=0.34") from None
    if not math.isfinite(v):
        raise CostlawError(f"{flag}: {name}={text} is not finite; give a finite number")
    return v


def _once(out: dict, name: str, flag: str):
    if name in out:
        raise CostlawError(f"{flag}: {name} is given twice; give each parameter once")


def values(specs, flag: str) -> dict[str, float]:
    """NAME=VALUE items (--fix, --init, --eval-at)."""
    out: dict[str, float] = {}
    for name, value in _items(specs, flag, "NAME=VALUE"):
        _once(out, name, flag)
        out[name] = _number(value, flag, name)
    return out


def ties(specs, flag: str = "--tie") -> dict[str, str]:
    """NAME=OTHER items: NAME takes OTHER's value."""
    out: dict[str, str] = {}
    for name, other in _items(specs, flag, "NAME=OTHER"):
        _once(out, name, flag)
        if not _NAME.fullmatch(other):
            raise CostlawError(f"{flag}: {name}={other!r}: name a parameter on the right, e.g. {flag} beta=alpha")
        out[name] = other
    return out


def ranges(specs, flag: str, open_ends: bool = True) -> dict[str, tuple[float | None, float | None]]:
    """NAME=LO:HI items; with open_ends an end may be empty (no bound on that side)."""
    out: dict[str, tuple[float | None, float | None]] = {}
    for name, value in _items(specs, flag, "NAME=LO:HI"):
        _once(out, name, flag)
        lo, colon, hi = value.partition(":")
        if not colon or (not open_ends and not (lo.strip() and hi.strip())):
            need = "LO:HI (an end may be empty: 0: or :1)" if open_ends else "LO:HI with both ends"
            raise CostlawError(f"{flag}: {name}={value!r} is not {need}; write e.g. {flag} {name}=0:1")
        a = _number(lo, flag, name) if lo.strip() else None
        b = _number(hi, flag, name) if hi.strip() else None
        if a is None and b is None:
            raise CostlawError(f"{flag}: {name}=: bounds nothing; give LO, HI or both")
        if a is not None and b is not None and not a < b:
            raise CostlawError(f"{flag}: {name}={value} is empty; give LO < HI")
        out[name] = (a, b)
    return out
