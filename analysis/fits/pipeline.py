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

_FIT_KEYS = ("n_points", "params", "objective", "objective_definition", "grad_norm", "r2", "r2_ceiling", "n_starts",
             "n_refined", "n_at_best", "success", "message", "reason", "residuals", "weighted", "fixed", "tied",
             "bounds", "at_bounds", "not_identified", "condition")


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
    w: np.ndarray | None = None  # options.weights' values
    cluster: np.ndarray | None = None  # options.bootstrap_by's values, as codes
    test: np.ndarray | None = None  # the rows options.holdout_where selects
    rows: object | None = None  # the group's table rows in canonical order (labels of --eval-at's predictions)


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
    from costlaw.fitting.constraints import Space
    from costlaw.fitting.data import check_weights, prepare

    law = get_law(options.law)
    n_free = len(Space(law, dict(options.fix), dict(options.tie), dict(options.bounds)).free)
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
            X, y = prepare(law, sub[xcols].to_numpy(float), sub[options.y].to_numpy(float), xcols, options.y,
                           options.residuals, n_params=n_free)
            k = options.holdout_largest
            if k and len(y) - k < n_free:
                raise CostlawError(f"--holdout-largest: {k} of {len(y)} runs leaves fewer than the "
                                   f"{n_free} free parameters of {law.name} to fit; use a smaller K")
            w = check_weights(sub[options.weights].to_numpy(float), len(y), f"--weights {options.weights}") \
                if options.weights else None
            test = None
            if options.holdout_where:
                from costlaw.analysis.fits.rows import mask

                test = mask(sub, options.holdout_where, "--holdout-where")
                if not test.any() or test.all():
                    raise CostlawError(f"--holdout-where: {options.holdout_where!r} selects {int(test.sum())} of "
                                       f"{len(y)} rows; select some rows to predict and leave some to fit")
                if len(y) - int(test.sum()) < n_free:
                    raise CostlawError(f"--holdout-where: leaves {len(y) - int(test.sum())} rows for the {n_free} "
                                       f"free parameters of {law.name}; hold out fewer rows")
        except CostlawError as e:
            raise (CostlawError(f"group {label}: {e}") if key else e) from None
        cluster = None
        if options.bootstrap_by:
            cluster = np.unique(sub[options.bootstrap_by].astype(str).to_numpy(), return_inverse=True)[1].ravel()
        tiebreak = [a for a in (cluster, w) if a is not None]
        order = np.lexsort((*tiebreak, y, *X.T[::-1]))
        rank = None
        if options.holdout_column and options.holdout_column not in xcols:
            rank = sub[options.holdout_column].to_numpy(float)[order]
        pairs = None
        if runs is not None:
            pairs = [(r, runs.get(r)) for r in sub["run_id"]]
        X, y = X[order], y[order]
        w, cluster, test = (None if a is None else a[order] for a in (w, cluster, test))
        extra = {k: v.tolist() for k, v in (("weights", w), ("bootstrap_groups", cluster), ("holdout", test))
                 if v is not None}
        out.append(Group(label, key, len(y), X, y, rank, data_fingerprint(options, X, y, pairs, extra or None),
                         w=w, cluster=cluster, test=test, rows=sub.iloc[order]))
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
        kw = options.fit_kwargs()
        if options.method == "varpro":
            from costlaw.fitting.varpro import varpro_fit

            res = varpro_fit(law, g.X, g.y, loss=options.loss, delta=options.delta, residuals=options.residuals,
                             weights=g.w, refine=min(options.refine, 5), seed=options.seed, x_names=xcols,
                             y_name=options.y)
        else:
            res = fitting.fit(law, g.X, g.y, x_names=xcols, y_name=options.y, weights=g.w, **kw)
        d = res.to_dict()
        entry = {"group": g.key, **{k: d[k] for k in _FIT_KEYS}}
        est = {k: fn(res.params) for k, fn in {**law.derived, **derived}.items()}
        if est:
            entry["derived"] = est
        boot = None
        if options.bootstrap:
            boot = fitting.bootstrap(law, g.X, g.y, res, n=options.bootstrap, seed=options.seed, derived=derived,
                                     x_names=xcols, y_name=options.y, weights=g.w, groups=g.cluster,
                                     progress=(lambda _done, _n: tick()) if tick else None)
            b = boot.to_dict()
            entry.update({k: b[k] for k in ("n_bootstrap", "n_used", "n_failed", "n_unidentified")})
            if boot.n_used >= 2:
                entry["bootstrap"] = boot.param_samples()
                entry.update({k: b[k] for k in ("stderr", "ci95")})
            else:  # no spread to report: readers see no interval rather than one from a single resample
                boot = None
            if options.bootstrap_by:
                entry["bootstrap_by"] = {"column": options.bootstrap_by, "n_groups": b["n_groups"]}
            if b["warnings"]:
                entry["bootstrap_warnings"] = b["warnings"]
        if options.holdout_largest or options.holdout_where:
            by = options.holdout_column
            rank = by if by in xcols else g.rank
            if options.holdout_where:
                ho = fitting.holdout_rows(law, g.X, g.y, g.test, by=rank, x_names=xcols, y_name=options.y,
                                          label=options.holdout_where, weights=g.w, **kw)
            else:
                ho = fitting.holdout_largest(law, g.X, g.y, k=options.holdout_largest, by=rank, x_names=xcols,
                                             y_name=options.y, weights=g.w, **kw)
            entry["holdout"] = {**ho.to_dict(), "by": by}
            if options.holdout_where:
                entry["holdout"]["where"] = options.holdout_where
        entry["data_fingerprint"] = g.fingerprint
        out.append(GroupFit(g, clean_json(entry), result=res, boot=boot))
    return out


def evaluate_groups(groups: list[Group], options: FitOptions, params: Mapping[str, float]) -> list[GroupFit]:
    """--eval-at: each group's objective, R² and predictions at `params` (natural units), without fitting; an entry
    per group as `fit_groups` makes, with `evaluated_at` instead of a fit and `predictions` (one per row: the row's
    x, y and predicted y, in canonical order). Not stored: no fit was made."""
    from costlaw import fitting

    law = fitting.get_law(options.law)
    xcols = list(options.x)
    out = []
    for g in groups:
        if g.reason is not None:
            out.append(GroupFit(g, {"group": g.key, "n_points": g.n_rows, "reason": g.reason}))
            continue
        ev = fitting.evaluate_at(law, g.X, g.y, params, loss=options.loss, delta=options.delta,
                                 residuals=options.residuals, weights=g.w, x_names=xcols, y_name=options.y)
        entry = {"group": g.key, **ev.to_dict()}
        for k in ("law", "formula"):
            entry.pop(k)
        entry["predictions"] = [{"x": dict(zip(xcols, map(float, x))), "y_true": float(yt), "y_pred": float(yp)}
                                for x, yt, yp in zip(g.X, g.y, ev.y_pred)]
        out.append(GroupFit(g, clean_json(entry), result=ev))
    return out
