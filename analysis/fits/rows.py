"""Row operations before a fit, in the one expression language (costmodel/core/expr.py) over a table's columns:
`--assign NAME=EXPR` adds a column, `--where EXPR` keeps rows, `--holdout-where EXPR` marks rows to predict,
`--best-of COL --by A,B` keeps the row with the least COL per group.

Expressions see each column as a numpy array (quote a name with spaces: `` `Training FLOP` ``), compare strings
(`status == 'completed'`), combine with and/or/not elementwise, and may call FUNCTIONS: exp, log, log2, log10, sqrt,
abs, minimum, maximum, where(cond, a, b), and two whole-column functions: largest(x, k), the k-th largest value of x
(NaN ignored, ties counted, as `sorted(x)[-k]`), and smallest(x, k). So Epoch's Chinchilla selection, which drops
the five largest losses, is `--where 'loss < largest(loss, 5)'`.
"""

from __future__ import annotations

import numpy as np

from costlaw.costmodel.core import expr as E
from costlaw.costmodel.core.errors import CostlawError


def _kth(x, k, largest: bool):
    x = np.asarray(x, dtype=float)
    x = np.sort(x[~np.isnan(x)])
    if not (float(k).is_integer() and 1 <= k <= len(x)):
        raise ValueError(f"k must be a whole number from 1 to {len(x)} (the values there are), got {k}")
    return x[-int(k)] if largest else x[int(k) - 1]


FUNCTIONS = {
    "exp": np.exp, "log": np.log, "log2": np.log2, "log10": np.log10, "sqrt": np.sqrt, "abs": np.abs,
    "minimum": np.minimum, "maximum": np.maximum, "where": np.where,
    "largest": lambda x, k: _kth(x, k, True), "smallest": lambda x, k: _kth(x, k, False),
}


def _columns(df) -> str:
    return ", ".join(map(str, df.columns))


def evaluate(df, text: str, where: str):
    """The value of `text` over df's columns: an array of len(df) (a scalar is broadcast)."""
    cols = set(map(str, df.columns))

    def check(name):
        return None if name in cols else f"unknown column {name!r}; columns are {_columns(df)}"

    e = E.parse(text, where, functions=FUNCTIONS, names=check, strings=True)
    with np.errstate(all="ignore"):
        v = E.evaluate(e, lambda name: df[name].to_numpy(), FUNCTIONS, where)
    v = np.asarray(v)
    if v.ndim == 0:
        v = np.broadcast_to(v, (len(df),))
    if v.shape != (len(df),):
        raise CostlawError(f"{where}: {text!r} gives shape {v.shape}, not one value per row; use elementwise "
                           "arithmetic")
    return v


def mask(df, text: str, where: str) -> np.ndarray:
    """A boolean row mask from a condition."""
    v = evaluate(df, text, where)
    if v.dtype != bool:
        raise CostlawError(f"{where}: {text!r} gives {v.dtype} values, not true/false; write a condition such as "
                           "'loss < 4 and status == \"completed\"'")
    return v


def assign(df, text: str, where: str = "--assign"):
    name, body = E.split_assignment(text, where)
    v = evaluate(df, body, where)
    return df.assign(**{name: v})


def keep(df, text: str, where: str = "--where"):
    out = df[mask(df, text, where)]
    if out.empty:
        raise CostlawError(f"{where}: {text!r} keeps no rows; loosen the filter")
    return out


def best_of(df, col: str, by: list[str]):
    """(rows: for each group of equal `by` values the row with the least `col`, notes). Rows where col is NaN are
    never chosen. Ties are broken once, the same way whatever order the rows came in: among rows tying on col, the
    first by every other column's value (as text, in column order)."""
    for c in [col, *by]:
        if c not in df.columns:
            flag = "--best-of" if c == col else "--by"
            raise CostlawError(f"{flag}: unknown column {c!r}; columns are {_columns(df)}")
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(df[col]):
        raise CostlawError(f"--best-of: column {col!r} is not numeric ({df[col].dtype}); pick a numeric column")
    valid = df[df[col].notna()]
    dropped = len(df.groupby(by, dropna=False)) - len(valid.groupby(by, dropna=False)) if len(valid) else 0
    if valid.empty:
        raise CostlawError(f"--best-of: column {col!r} is NaN in every row; pick another column")
    others = [c for c in valid.columns if c not in (col, *by)]
    tiekey = valid[others].astype(str).agg("\x1f".join, axis=1) if others else pd.Series("", index=valid.index)
    ranked = valid.assign(_tie=tiekey).sort_values([col, "_tie"], kind="stable")
    best = ranked.drop_duplicates(by, keep="first")
    mins = valid.groupby(by, dropna=False)[col].transform("min")
    tied = int((valid[valid[col] == mins].groupby(by, dropna=False).size() > 1).sum())
    notes = [f"--best-of {col} --by {','.join(by)}: {len(best)} of {len(df)} rows kept"
             + (f"; {tied} group(s) tied on {col}, broken by the other columns' values" if tied else "")
             + (f"; {dropped} group(s) with {col} NaN throughout dropped" if dropped else "")]
    return best.drop(columns="_tie").sort_index(), notes
