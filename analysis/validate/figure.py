"""The cross-validation figure: each left-out run's measured loss against its prediction, with the new-run
interval as an error bar, one colour and marker per candidate; points off the diagonal's band missed."""

from __future__ import annotations

import numpy as np

from costlaw.analysis.figures.style import DEFAULT_UNIT, colour, marker, new_figure, no_data, save, style


def validation_figure(v, path, loss_unit: str = DEFAULT_UNIT) -> list:
    """loss_unit: the runs' (analysis.figures.style.loss_unit_of)."""
    if not v.predictions:
        no_data("validate", "no left-out run was predicted", "cross-validate a store with >= 5 sizes per candidate")
    with style():
        fig, (ax,) = new_figure(6.4, 5.0)
        for i, c in enumerate(v.candidates()):
            ps = [p for p in v.predictions if p.candidate == c]
            if not ps:
                continue
            x = np.array([p.predicted for p in ps])
            y = np.array([p.measured for p in ps])
            lo = np.array([p.predicted - p.lo if p.lo is not None else 0.0 for p in ps])
            hi = np.array([p.hi - p.predicted if p.hi is not None else 0.0 for p in ps])
            inside = [p.inside for p in ps]
            cov = np.mean([b for b in inside if b is not None]) if any(b is not None for b in inside) else None
            label = f"{c}" + (f" ({100 * cov:.0f}% inside)" if cov is not None else "")
            ax.errorbar(x, y, xerr=np.vstack([lo, hi]), linestyle="none", marker=marker(i), color=colour(i),
                        elinewidth=0.8, capsize=2, alpha=0.85, label=label)
        allv = [x for p in v.predictions for x in (p.measured, p.predicted, p.lo, p.hi) if x is not None]
        lim = (min(allv) * 0.97, max(allv) * 1.03)  # linear: losses span a factor of ~3, and read as numbers
        ax.plot(lim, lim, color="#000000", linewidth=0.8, linestyle="--", label="measured = predicted")
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        ax.set_xlabel(f"predicted validation loss ({loss_unit}; bar: {100 * v.level:g}% interval for a new run)")
        ax.set_ylabel(f"measured validation loss of the left-out run ({loss_unit})")
        ax.set_aspect("equal")
        o = v.overall()
        ax.set_title(f"left out: {'each config' if v.mode == 'config' else 'the largest size'}; "
                     f"{100 * o['coverage']:.0f}% of {o['runs']} runs inside")
        ax.legend(loc="upper left", fontsize=8)
        return save(fig, path)
