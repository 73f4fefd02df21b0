"""A small TOML writer for costlaw's own configs (tables of scalars, lists and sub-tables).

The standard library reads TOML (tomllib) but does not write it; configs only ever hold strings,
numbers, booleans, lists of those and nested tables, which is all this handles.
"""

from __future__ import annotations

import json
import math


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "-_" for c in k) else json.dumps(k)


def dumps(data: dict, _prefix: str = "") -> str:
    lines, tables = [], []
    for k, v in data.items():
        if v is None:
            continue
        # small flat tables stay inline (`kv_policy = {method = "snapkv", keep = 0.1}`); others get a header
        if isinstance(v, dict) and (len(v) > 3 or any(isinstance(x, dict) for x in v.values())):
            tables.append((k, v))
        else:
            lines.append(f"{_key(k)} = {_scalar(v)}")
    out = "\n".join(lines)
    for k, v in tables:
        name = f"{_prefix}{_key(k)}"
        body = dumps(v, name + ".")
        out += ("\n\n" if out else "") + f"[{name}]" + ("\n" + body if body else "")
    return out + ("\n" if not _prefix and out and not out.endswith("\n") else "")
