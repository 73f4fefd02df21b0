"""The one group-fit pipeline: rows -> groups -> fit each -> bootstrap -> holdout -> entries of the fits format.

`costlaw fit` (any law, any columns, --group-by) and `costlaw recommend --db` / `costlaw report` (one gqa-size
law per candidate) all run it:

    groups = make_groups(split(df, ["n_heads", "n_kv_heads"]), options, runs={run_id: ingest fingerprint})
    fits = fit_groups(groups, options, stored=lookup(db, [g.fingerprint for g in groups]))
    [f.entry for f in fits]   # entries of the fits format (analysis/fits/doc.py); f.reused: from the store

Rows are put in one canonical order (by x, then y) before anything is fitted, so the same rows give the same fit,
bootstrap resamples included, whatever order a query returned them in: that is what makes a stored fit equal to
the refit it stands for. costlaw.fitting is imported when a group is checked or fitted (scipy is slow to import),
and `fit` is looked up on the package at each call, so a test can count the fits made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from costlaw.analysis.fits.doc import fit_fields
from costlaw.analysis.fits.fingerprint import data_fingerprint
from costlaw.analysis.fits.options import FitOptions
from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import clean_json

_FIT_KEYS = ("n_points", "params", "objective", "grad_norm", "r2", "r2_ceiling", "n_starts", "n_refined", "n_at_best",
             "success", "message")


@dataclass
class Group:
    """One group's rows as the fitter sees them: X (n, k) and y (n,) in canonical order, or why it is not fitted."""

    label: str  # how messages name it: "n_heads=4,n_kv_heads=1", a candidate label, "" for all rows
    key: dict  # the grouping columns' values, JSON-ready
    n_rows: int
    X: np.ndarray | None = None
    y: np.ndarray | None = None
    rank: np.ndarray | None = None  # the holdout ranking column, when it is not one of x
    fingerprint: str | None = None
    reason: str | None = None


@dataclass
class GroupFit:
    group: Group
    entry: dict  # the group's entry of the fits format
    reused: bool = False  # taken from the store's fits table instead of fitted
    result: object | None = None  # fitting.FitResult / BootstrapResult when fitted now (plots need them)
    boot: object | None = None

    @property
    def fitted(self) -> bool:
        return "params" in self.entry


def label_of(key: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in key.items())


def split(df, by: list[str] | None) -> list[tuple[dict, object]]:
    """(group values, rows) per distinct value of the `by` columns, sorted; one group of every row without `by`."""
    if not by:
        return [({}, df)]
    return [(dict(zip(by, k if isinstance(k, tuple) else (k,))), sub)
            for k, sub in df.groupby(list(by), sort=True, dropna=False)]


def make_groups(parts, options: FitOptions, *, labels: list[str] | None = None, runs: Mapping | None = None,
                min_sizes: int = 0) -> list[Group]:
    """Check and order each part's points and fingerprint them; every problem is one line naming the group.

    parts: (group values, pandas rows) pairs, e.g. from `split`; labels: names for messages (default
    "col=value,..."); runs: run_id -> ingest fingerprint when the rows are store runs (they then need a run_id
    column), None otherwise; min_sizes: a group whose first x takes fewer distinct values is listed, not fitted.
    """
    from costlaw.fitting import get_law
    from costlaw.fitting.data import prepare

    law = get_law(options.law)
    xcols = list(options.x)
    out = []
    for i, (key, sub) in enumerate(parts):
        key = clean_json(key)
        label = labels[i] if labels else label_of(key)
        sizes = int(sub[xcols[0]].nunique())
        if sizes < min_sizes:
            out.append(Group(label, key, len(sub), reason=f"runs at {sizes} size(s); a fit needs >= {min_sizes}"))
            continue
        try:
            X, y = prepare(law, sub[xcols].to_numpy(float), sub[options.y].to_numpy(float), xcols, options.y)
            k = options.holdout_largest
            if k and len(y) - k < len(law.params):
                raise CostlawError(f"--holdout-largest: {k} of {len(y)} runs leaves fewer than the "
                                   f"{len(law.params)} parameters of {law.name} to fit; use a smaller K")
        except CostlawError as e:
            raise (CostlawError(f"group {label}: {e}") if key else e) from None
        order = np.lexsort((y, *X.T[::-1]))
        rank = None
        if options.holdout_column and options.holdout_column not in xcols:
            rank = sub[options.holdout_column].to_numpy(float)[order]
        pairs = None
        if runs is not None:
            pairs = [(r, runs.get(r)) for r in sub["run_id"]]
        X, y = X[order], y[order]
        out.append(Group(label, key, len(y), X, y, rank, data_fingerprint(options, X, y, pairs)))
    return out


def fit_groups(groups: list[Group], options: FitOptions, *, stored: Mapping[str, dict] | None = None,
               derived: Mapping[str, Callable] | None = None, say: Callable[[str], None] | None = None,
               tick: Callable[[], None] | None = None) -> list[GroupFit]:
    """Fit every group that has points, unless `stored` (data_fingerprint -> entry, see stored.lookup) holds it.

    derived: name -> fn(params) for options.derived, estimated at the fit and bootstrapped; say: one line per
    group fitted; tick: called after each bootstrap refit (progress bars).
    """
    from costlaw import fitting

    derived = dict(derived or {})
    if tuple(derived) != options.derived:
        raise ValueError(f"derived {tuple(derived)} differ from options.derived {options.derived}")
    law = fitting.get_law(options.law)
    xcols = list(options.x)
    out = []
    for g in groups:
        if g.reason is not None:
            out.append(GroupFit(g, {"group": g.key, "n_points": g.n_rows, "reason": g.reason}))
            continue
        hit = (stored or {}).get(g.fingerprint)
        if hit is not None:
            out.append(GroupFit(g, {"group": g.key, **fit_fields(hit)}, reused=True))
            continue
        if say:
            say(f"fitting {g.label or 'all rows'}: {len(g.y)} points"
                + (f", bootstrap {options.bootstrap}" if options.bootstrap else ""))
        res = fitting.fit(law, g.X, g.y, loss=options.loss, delta=options.delta, starts=options.starts,
                          seed=options.seed, refine=options.refine, x_names=xcols, y_name=options.y)
        d = res.to_dict()
        entry = {"group": g.key, **{k: d[k] for k in _FIT_KEYS}}
        est = {k: fn(res.params) for k, fn in {**law.derived, **derived}.items()}
        if est:
            entry["derived"] = est
        boot = None
        if options.bootstrap:
            boot = fitting.bootstrap(law, g.X, g.y, res, n=options.bootstrap, seed=options.seed, derived=derived,
                                     x_names=xcols, y_name=options.y,
                                     progress=(lambda _done, _n: tick()) if tick else None)
            b = boot.to_dict()
            entry["bootstrap"] = boot.param_samples()
            entry.update({k: b[k] for k in ("n_bootstrap", "n_failed", "stderr", "ci95")})
        if options.holdout_largest:
            by = options.holdout_column
            ho = fitting.holdout_largest(law, g.X, g.y, k=options.holdout_largest,
                                         by=by if by in xcols else g.rank, loss=options.loss, delta=options.delta,
                                         starts=options.starts, seed=options.seed, refine=options.refine,
                                         x_names=xcols, y_name=options.y)
            entry["holdout"] = {**ho.to_dict(), "by": by}
        entry["data_fingerprint"] = g.fingerprint
        out.append(GroupFit(g, clean_json(entry), result=res, boot=boot))
    return out
