"""`plot_fits`: data, fitted curve and bootstrap band, one figure for one or several fits (groups).

One-variable laws: one panel, x on a log axis, each fit in its own colour. Two-variable laws: one row per
fit: y against the first variable with points coloured by the second and the law drawn at three values of
the second (its 10th/50th/90th percentiles), and observed against predicted. Uses the Agg canvas directly
(no pyplot state, no display needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import atomic_file


def plot_fits(path, items, x_names=None, y_name: str = "loss", title: str | None = None) -> Path:
    """Write a figure to `path` (format from its suffix, e.g. .png).

    items: list of (label, FitResult, X (n, k), y (n,), BootstrapResult or None); all of one law.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not items:
        raise CostlawError("plot: nothing to plot")
    law = items[0][1].law
    names = list(x_names) if x_names is not None else list(law.variables)
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if len(law.variables) == 1:
        fig = Figure(figsize=(7, 5), layout="constrained")
        ax = fig.add_subplot()
        for i, (label, res, X, y, boot) in enumerate(items):
            _one_variable(ax, f"C{i % 10}", label, res, np.asarray(X, float).reshape(len(y), -1), np.asarray(y),
                          boot)
        ax.set_xscale("log")
        ax.set_xlabel(names[0])
        ax.set_ylabel(y_name)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3, which="both")
    else:
        fig = Figure(figsize=(12, 4.5 * len(items)), layout="constrained")
        axes = fig.subplots(len(items), 2, squeeze=False)
        for row, (label, res, X, y, boot) in zip(axes, items):
            _two_variables(fig, row, label, res, np.asarray(X, float), np.asarray(y), boot, names, y_name)
    fig.suptitle(title or f"{law.name}: {law.formula} ({items[0][1].loss} on log residuals)")
    FigureCanvasAgg(fig)
    with atomic_file(path) as f:
        fig.savefig(f, format=fmt, dpi=120)
    return path


def _one_variable(ax, colour, label, res, X, y, boot):
    x = X[:, 0]
    grid = np.geomspace(x.min() / 1.25, x.max() * 1.25, 200)
    ax.scatter(x, y, s=18, color=colour, zorder=3)
    params = ", ".join(f"{k}={v:.4g}" for k, v in res.params.items())
    ax.plot(grid, res.predict(grid), color=colour, label=f"{label + ': ' if label else ''}{params}")
    if boot is not None:
        lo, hi = boot.band(grid)
        ax.fill_between(grid, lo, hi, color=colour, alpha=0.2, linewidth=0)


def _two_variables(fig, row, label, res, X, y, boot, names, y_name):
    from matplotlib.colors import LogNorm

    ax, parity = row
    norm = LogNorm(X[:, 1].min(), X[:, 1].max()) if X[:, 1].min() > 0 else None
    sc = ax.scatter(X[:, 0], y, c=X[:, 1], s=14, cmap="viridis", norm=norm, zorder=3)
    fig.colorbar(sc, ax=ax, label=names[1])
    grid = np.geomspace(X[:, 0].min() / 1.25, X[:, 0].max() * 1.25, 200)
    for v in np.percentile(X[:, 1], [10, 50, 90]):
        G = np.column_stack([grid, np.full_like(grid, v)])
        colour = sc.cmap(sc.norm(v))
        ax.plot(grid, res.predict(G), color=colour, label=f"{names[1]} = {v:.3g}")
        if boot is not None:
            lo, hi = boot.band(G)
            ax.fill_between(grid, lo, hi, color=colour, alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel(names[0])
    ax.set_ylabel(y_name)
    ax.set_ylim(y.min() * 0.97, y.max() * 1.03)
    ax.legend(fontsize="small", title=label or None)
    ax.grid(alpha=0.3, which="both")
    pred = res.predict(X)
    if boot is not None:
        lo, hi = boot.band(X)
        # A percentile band of few resamples need not contain the full-data fit: draw the side it lies beyond as 0.
        parity.errorbar(pred, y, xerr=np.clip([pred - lo, hi - pred], 0, None), fmt="none", ecolor="0.6",
                        linewidth=0.8)
    parity.scatter(pred, y, s=12, color="C0", zorder=3)
    ends = [min(pred.min(), y.min()), max(pred.max(), y.max())]
    parity.plot(ends, ends, color="k", linewidth=0.8)
    parity.set_xlabel(f"predicted {y_name}")
    parity.set_ylabel(f"observed {y_name}")
    parity.set_title(f"R² {res.r2:.4f}, objective {res.objective:.6g}", fontsize="small")
    parity.grid(alpha=0.3)
