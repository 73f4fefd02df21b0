"""`plot_fits`: data, fitted law and bootstrap band, one figure for one or several fits (groups).

One variable: one panel, each fit in its own colour. Two variables: one row per fit: y against the first variable
with points coloured by the second and the law drawn at three values of the second (its 10th/50th/90th
percentiles), and observed against predicted. Three or more: one row per fit: a panel per variable (observed y as
dots, the law's prediction at each point as rings, the other variables held at each point's values) and observed
against predicted. An axis is logarithmic where its data are positive and span more than a decade. Parameter names
are printed with Greek letters (alpha -> α). Works for `FitResult`s and `Evaluation`s (--eval-at). Drawn in the
project's one figure style (fitting/style.py: the report's and the studies' figures use it too).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting.style import SEQUENTIAL, colour, new_figure, save_as, style

GREEK = {name: chr(code) for name, code in (
    ("alpha", 0x3B1), ("beta", 0x3B2), ("gamma", 0x3B3), ("delta", 0x3B4), ("epsilon", 0x3B5), ("zeta", 0x3B6),
    ("eta", 0x3B7), ("theta", 0x3B8), ("kappa", 0x3BA), ("lambda", 0x3BB), ("mu", 0x3BC), ("nu", 0x3BD),
    ("xi", 0x3BE), ("rho", 0x3C1), ("sigma", 0x3C3), ("tau", 0x3C4), ("phi", 0x3C6), ("chi", 0x3C7), ("psi", 0x3C8),
    ("omega", 0x3C9))}


def readable(name: str) -> str:
    """alpha -> α, alpha_N -> α_N; other names unchanged."""
    head, sep, tail = name.partition("_")
    return GREEK.get(head, head) + sep + tail


def _log_scale(v) -> bool:
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    return bool(len(v) and v.min() > 0 and v.max() / v.min() > 10.0)


def _params_text(res) -> str:
    return ", ".join(f"{readable(k)}={v:.4g}" for k, v in res.params.items())


def plot_fits(path, items, x_names=None, y_name: str = "loss", title: str | None = None) -> Path:
    """Write a figure to `path` (format from its suffix, e.g. .png).

    items: list of (label, FitResult or Evaluation, X (n, k), y (n,), BootstrapResult or None); all of one law.
    """
    if not items:
        raise CostlawError("plot: nothing to plot")
    with style():
        fig = _draw(items, x_names, y_name, title)
    return save_as(fig, path)


def _draw(items, x_names, y_name: str, title: str | None):
    law = items[0][1].law
    k = len(law.variables)
    names = list(x_names) if x_names is not None else list(law.variables)
    if k == 1:
        fig, (ax,) = new_figure(7, 5)
        xs = np.concatenate([np.asarray(X, float).reshape(len(y), -1)[:, 0] for _, _, X, y, _ in items])
        logx = _log_scale(xs)
        for i, (label, res, X, y, boot) in enumerate(items):
            _one_variable(ax, colour(i), label, res, np.asarray(X, float).reshape(len(y), -1), np.asarray(y),
                          boot, logx)
        ax.set_xscale("log" if logx else "linear")
        if _log_scale(np.concatenate([np.asarray(y) for *_, y, _ in items])):
            ax.set_yscale("log")
        ax.set_xlabel(names[0])
        ax.set_ylabel(y_name)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3, which="both")
    elif k == 2:
        fig, _ = new_figure(12, 4.5 * len(items), ncols=0)
        axes = fig.subplots(len(items), 2, squeeze=False)
        for row, (label, res, X, y, boot) in zip(axes, items):
            _two_variables(fig, row, label, res, np.asarray(X, float), np.asarray(y), boot, names, y_name)
    else:
        fig, _ = new_figure(4.2 * (k + 1), 4.2 * len(items), ncols=0)
        axes = fig.subplots(len(items), k + 1, squeeze=False)
        for row, (label, res, X, y, boot) in zip(axes, items):
            _many_variables(row, label, res, np.asarray(X, float), np.asarray(y), boot, names, y_name)
    res0 = items[0][1]
    what = law.formula if law.name.startswith("formula(") else f"{law.name}: {law.formula}"
    loss = f"huber(δ={res0.delta:g})" if res0.loss == "huber" else res0.loss
    fig.suptitle(title or f"{what}  ({loss} on {getattr(res0, 'residuals', 'log')} residuals)")
    return fig


def _one_variable(ax, colour, label, res, X, y, boot, logx):
    x = X[:, 0]
    grid = np.geomspace(x.min() / 1.25, x.max() * 1.25, 200) if logx else np.linspace(x.min(), x.max(), 200)
    ax.scatter(x, y, s=18, color=colour, zorder=3)
    ax.plot(grid, res.predict(grid), color=colour, label=f"{label + ': ' if label else ''}{_params_text(res)}")
    if boot is not None:
        lo, hi = boot.band(grid)
        ax.fill_between(grid, lo, hi, color=colour, alpha=0.2, linewidth=0)


def _two_variables(fig, row, label, res, X, y, boot, names, y_name):
    from matplotlib.colors import LogNorm

    ax, parity = row
    norm = LogNorm(X[:, 1].min(), X[:, 1].max()) if _log_scale(X[:, 1]) else None
    sc = ax.scatter(X[:, 0], y, c=X[:, 1], s=14, cmap=SEQUENTIAL, norm=norm, zorder=3)
    fig.colorbar(sc, ax=ax, label=names[1])
    logx = _log_scale(X[:, 0])
    grid = (np.geomspace(X[:, 0].min() / 1.25, X[:, 0].max() * 1.25, 200) if logx
            else np.linspace(X[:, 0].min(), X[:, 0].max(), 200))
    for v in np.percentile(X[:, 1], [10, 50, 90]):
        G = np.column_stack([grid, np.full_like(grid, v)])
        colour = sc.cmap(sc.norm(v))
        ax.plot(grid, res.predict(G), color=colour, label=f"{names[1]} = {v:.3g}")
        if boot is not None:
            lo, hi = boot.band(G)
            ax.fill_between(grid, lo, hi, color=colour, alpha=0.2, linewidth=0)
    ax.set_xscale("log" if logx else "linear")
    ax.set_xlabel(names[0])
    ax.set_ylabel(y_name)
    pad = 0.03 * (y.max() - y.min() or abs(y.max()) or 1.0)
    ax.set_ylim(y.min() - pad, y.max() + pad)
    ax.legend(fontsize="small", title=label or None)
    ax.grid(alpha=0.3, which="both")
    _parity(parity, res, X, y, boot, y_name)


def _many_variables(row, label, res, X, y, boot, names, y_name):
    pred = res.predict(X)
    for j, ax in enumerate(row[:-1]):
        ax.scatter(X[:, j], y, s=16, color=colour(0), zorder=3, label="observed")
        ax.scatter(X[:, j], pred, s=28, facecolors="none", edgecolors=colour(3), zorder=4, label="predicted")
        ax.set_xscale("log" if _log_scale(X[:, j]) else "linear")
        ax.set_xlabel(names[j])
        ax.set_ylabel(y_name)
        ax.grid(alpha=0.3, which="both")
        if j == 0:
            ax.legend(fontsize="small", title=label or None)
    _parity(row[-1], res, X, y, boot, y_name)


def _parity(ax, res, X, y, boot, y_name):
    pred = res.predict(X)
    if boot is not None:
        lo, hi = boot.band(X)
        # A percentile band of few resamples need not contain the full-data fit: draw the side it lies beyond as 0.
        ax.errorbar(pred, y, xerr=np.clip([pred - lo, hi - pred], 0, None), fmt="none", ecolor="0.6", linewidth=0.8)
    ax.scatter(pred, y, s=12, color=colour(0), zorder=3)
    ends = [min(pred.min(), y.min()), max(pred.max(), y.max())]
    ax.plot(ends, ends, color="k", linewidth=0.8)
    if _log_scale(np.concatenate([pred, y])):
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(f"predicted {y_name}")
    ax.set_ylabel(f"observed {y_name}")
    ax.set_title(f"R² {res.r2:.4f}, objective {res.objective:.6g}\n{_params_text(res)}", fontsize="small")
    ax.grid(alpha=0.3)
