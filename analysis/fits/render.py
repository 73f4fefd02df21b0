"""One entry of a fits document as text: what `costlaw fit` prints without --json.

The objective is printed with its definition (the sum it is: Huber with its delta, half the sum of squares, or
the sum of |r|, on log or raw residuals, weighted or not), a fit is called NOT CONVERGED only when it did not
converge and then with the reason, and parameters on a bound or not identified are named.
"""

from __future__ import annotations

from costlaw.costmodel.core.units import table


def fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def render(r: dict, doc: dict) -> str:
    from costlaw.analysis.fits.pipeline import label_of

    lines = []
    if r.get("group"):
        lines.append(f"group {label_of(r['group'])}")
    if "reason" in r and "params" not in r:
        lines.append(f"not fitted: {r['reason']}")
        return "\n".join(lines)
    formula = f"  {doc['formula']}" if doc.get("formula") and doc["formula"] not in doc["law"] else ""
    lines.append(f"law {doc['law']}{formula}  x {','.join(doc['x'])}  y {doc['y']}")
    if r.get("evaluated_at") is not None:
        return "\n".join(lines + _evaluation(r))
    state = "converged" if r["success"] else f"NOT CONVERGED ({r.get('reason') or r['message']})"
    # Repeated x (seeds) cap R² below 1 whatever the law: show the cap so R² is read against it.
    ceiling = f" (ceiling {fmt(r['r2_ceiling'])} from repeated x)" if r.get("r2_ceiling") is not None else ""
    lines.append(f"objective {fmt(r['objective'])} = {r.get('objective_definition', '')}")
    lines.append(f"points {r['n_points']}  |grad| {r['grad_norm']:.2g}  R² {fmt(r['r2'])}{ceiling}  starts "
                 f"{r['n_starts']} ({r['n_refined']} refined, {r['n_at_best']} at best)  {state}")
    if r.get("fixed"):
        lines.append("fixed: " + ", ".join(f"{k} = {fmt(v)}" for k, v in r["fixed"].items()))
    if r.get("tied"):
        lines.append("tied: " + ", ".join(f"{k} = {v}" for k, v in r["tied"].items()))
    for b in r.get("at_bounds") or []:
        lines.append(f"AT BOUND: {b['param']} sits on its {b['side']} bound {fmt(b['bound'])}; the optimum may lie "
                     "beyond it (widen the bound, or report it as a limit)")
    if r.get("not_identified"):
        lines.append(f"NOT IDENTIFIED: {', '.join(r['not_identified'])}: the data cannot separate "
                     f"{'them' if len(r['not_identified']) > 1 else 'it'} (condition {fmt(r.get('condition'))}); "
                     "fix or tie parameters, or add runs that vary them")
    rows = []
    values = {**r["params"], **r.get("derived", {})}
    fixed = set(r.get("fixed") or {}) | set(r.get("tied") or {})
    for k, v in values.items():
        row = {"": k + (" (fixed)" if k in (r.get("fixed") or {}) else " (tied)" if k in fixed else ""),
               "value": fmt(v) if v is not None else "inf/undefined"}
        if "stderr" in r:
            lo, hi = r["ci95"][k]
            row.update({"stderr": fmt(r["stderr"][k]), "ci95 lo": fmt(lo), "ci95 hi": fmt(hi)})
        rows.append(row)
    lines.append(table(rows))
    opts = doc["options"]
    if "stderr" in r:
        unit = (f"groups of rows by {r['bootstrap_by']['column']} ({r['bootstrap_by']['n_groups']} groups)"
                if r.get("bootstrap_by") else "the runs")
        left = r.get("n_failed", 0) + r.get("n_unidentified", 0)
        used = (f"; intervals over {r['n_used']}: {r.get('n_unidentified', 0)} could not identify the law, "
                f"{r.get('n_failed', 0)} did not converge" if left else "")
        lines.append(f"bootstrap: {r['n_bootstrap']} resamples of {unit}, seed {opts['seed']}{used}; 95% percentile "
                     "intervals")
        for w in r.get("bootstrap_warnings") or []:
            lines.append(f"WARNING: {w}")
    if "holdout" in r:
        h = r["holdout"]
        sel = (f"predicting the {h['n_heldout']} rows where {h['where']}" if h.get("where") else
               f"with {h['by']} < {h['threshold']:g}, predicting the {h['n_heldout']} largest")
        lines.append(f"holdout: fitted on {h['n_train']} runs {sel}: max |rel error| "
                     f"{100 * h['max_abs_rel_error']:.3g}%, mean {100 * h['mean_abs_rel_error']:.3g}%")
        lines.append(table([{**{c: fmt(v) for c, v in row["x"].items()}, doc["y"]: fmt(row["y_true"]),
                             "predicted": fmt(row["y_pred"]), "rel error %": f"{100 * row['rel_error']:+.3f}",
                             "x / max train": f"{row['extrapolation']:.3g}"} for row in h["rows"]]))
    return "\n".join(lines)


def _evaluation(r: dict) -> list[str]:
    ceiling = f" (ceiling {fmt(r['r2_ceiling'])} from repeated x)" if r.get("r2_ceiling") is not None else ""
    preds = r.get("predictions") or []
    errs = [abs(p["y_pred"] / p["y_true"] - 1) for p in preds if p["y_true"]]
    out = [f"evaluated at {', '.join(f'{k}={fmt(v)}' for k, v in r['evaluated_at'].items())} (not fitted)",
           f"objective {fmt(r['objective'])} = {r['objective_definition']}",
           f"points {r['n_points']}  |grad| {r['grad_norm']:.2g} (0 at an optimum of these data)  R² {fmt(r['r2'])}"
           f"{ceiling}"]
    if errs:
        out.append(f"predictions: max |rel error| {100 * max(errs):.3g}%, mean {100 * sum(errs) / len(errs):.3g}% "
                   "(each row's prediction: --json)")
    return out
