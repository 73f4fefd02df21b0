"""A cross-validation as text (tables per candidate and overall) and as report blocks."""

from __future__ import annotations

from costlaw.costmodel.core.units import si, table


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _err(x) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def summary_rows(v) -> list[dict]:
    """One row per candidate, then the usable laws' and every law's totals."""
    pct = f"{100 * v.level:g}%"
    rows = []
    for r in v.per_candidate():
        rows.append({"candidate": r["candidate"], "configs": r.get("configs", 0), "runs": r["runs"],
                     f"inside {pct} new-run": _pct(r["coverage"]), "inside mean": _pct(r["coverage_mean"]),
                     "mean error": _err(r["mean_error"]), "mean |error|": _err(r["mean_abs_error"]).lstrip("+"),
                     "worst error": _err(r["worst_error"]),
                     "median width": _pct(r["median_width"]) if r["median_width"] is not None else "-",
                     "law": "weak: " + "; ".join(r["weak_law"]) if r["weak_law"] else "passes the guards"})
    for name, s in (("usable laws", v.overall_usable()), ("all", v.overall())):
        rows.append({"candidate": name, "configs": s.get("configs", 0), "runs": s["runs"],
                     f"inside {pct} new-run": _pct(s["coverage"]), "inside mean": _pct(s["coverage_mean"]),
                     "mean error": _err(s["mean_error"]), "mean |error|": _err(s["mean_abs_error"]).lstrip("+"),
                     "worst error": _err(s["worst_error"]),
                     "median width": _pct(s["median_width"]) if s["median_width"] is not None else "-", "law": ""})
    return rows


def render_text(v) -> str:
    o = v.overall()
    lines = [f"costlaw validate: {v.source}",
             f"mode {v.mode}, law {v.law}, noise {v.noise}, bootstrap {v.n_boot}, level {v.level:g}",
             v.to_json()["covers"],
             f"coverage {_pct(o['coverage'])} of {o['runs']} left-out runs inside their {100 * v.level:g}% new-run "
             f"interval ({_pct(o['coverage_mean'])} inside the mean's); mean error {_err(o['mean_error'])}, worst "
             f"{_err(o['worst_error'])}"]
    lines += [f"note: {n}" for n in v.notes]
    lines += ["", table(summary_rows(v))]
    if v.skipped:
        lines += ["", "skipped folds:"] + [f"  {s['candidate']} {s['fold']}: {s['why']}" for s in v.skipped]
    return "\n".join(lines)


def prediction_rows(v, limit: int | None = None) -> list[dict]:
    rows = []
    for p in sorted(v.predictions, key=lambda p: (p.candidate, p.N, p.seed if p.seed is not None else -1)):
        rows.append({"candidate": p.candidate, "left out": p.fold, "N": si(p.N), "seed": p.seed,
                     "measured": f"{p.measured:.4g}", "predicted": f"{p.predicted:.4g}",
                     "new run": f"{p.lo:.4g}-{p.hi:.4g}" if p.lo is not None else "-",
                     "inside": "yes" if p.inside else "no" if p.inside is not None else "-",
                     "error": _err(p.error)})
    return rows[:limit] if limit else rows
