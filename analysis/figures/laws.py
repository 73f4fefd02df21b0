"""Fitted-law figures: loss vs number of heads at one size (power-plus-constant fit), and L(N; H) per candidate."""

from __future__ import annotations

import numpy as np

from costlaw.analysis.figures.style import (
    DEFAULT_UNIT,
    axis_label,
    colour,
    loss_label,
    loss_unit_of,
    marker,
    new_figure,
    no_data,
    save,
    style,
)
from costlaw.costmodel.core.errors import CostlawError


def pick_series(runs, size=None):
    """GQA runs of one (d_model, n_layers) shape and one KV rule (n_kv = n_h, or one fixed n_kv): the series
    with the most distinct query-head counts (ties: the larger shape). Returns (d, L, rule, series, shape_runs)."""
    gqa = runs[(runs["family"] == "gqa") & runs["loss"].notna()]
    if size is not None:
        gqa = gqa[(gqa["d_model"] == size[0]) & (gqa["n_layers"] == size[1])]
    best = None
    for (d, L), g in gqa.groupby(["d_model", "n_layers"]):
        rules = [("n_kv = n_h", g[g["n_kv_heads"] == g["n_heads"]])]
        rules += [(f"n_kv = {int(k)}", gk) for k, gk in g.groupby("n_kv_heads")]
        for rule, gr in rules:
            key = (gr["n_heads"].nunique(), d * L, rule == "n_kv = n_h")
            if best is None or key > best[0]:
                best = (key, int(d), int(L), rule, gr, g)
    if best is None:
        return None, None, None, gqa.iloc[0:0], gqa.iloc[0:0]
    return best[1:]


def loss_vs_heads(runs, path, size=None, loss_unit: str | None = None) -> list:
    """Loss vs n_h at one (d_model, n_layers) for the runs that share a KV rule (n_kv = n_h, or a fixed n_kv):
    each head count's mean over its runs (seeds) with a ±1 sd bar where it repeats, the runs themselves faint,
    other runs of that shape hollow. l(n_h) = a·n_h^b + c (the paper's App. I form) is fitted to the means and
    drawn only where it is a law by recommend's bar: more head counts than its 3 parameters and R² >= R2_MIN
    (analysis/recommend/guards.py) on the means; otherwise the legend says why there is no line.

    runs: a frame with family, d_model, n_layers, n_heads, n_kv_heads, loss (e.g. the store's completed runs
    with loss = val_loss); size: (d_model, n_layers), default the shape with the most head counts; loss_unit:
    default from the runs' tokenizer (style.loss_unit_of).
    """
    from costlaw.analysis.recommend.guards import R2_MIN
    from costlaw.fitting import fit, get_law

    d, L, rule, g, shape_runs = pick_series(runs, size)
    if len(g) == 0 or g["n_heads"].nunique() < 3:
        have = 0 if len(g) == 0 else g["n_heads"].nunique()
        no_data("loss-vs-heads", f"at most {have} distinct n_heads among GQA runs of one size and KV rule; the "
                                 "figure needs 3", "train >= 3 head counts at one size")
    unit = loss_unit or loss_unit_of(runs)
    law = get_law("power-plus-constant")
    means = g.groupby("n_heads")["loss"].agg(["mean", "std", "count"]).reset_index()
    x, y = means["n_heads"].to_numpy(float), means["mean"].to_numpy(float)
    repeats = bool((means["count"] > 1).any())
    res, why = None, None
    if len(means) <= len(law.params):
        why = f"no fit line: {len(means)} head counts for a {len(law.params)}-parameter curve"
    else:
        res = fit(law, x, y, x_names=["n_heads"], y_name="loss")
        if not res.r2 >= R2_MIN:
            why = f"no fit line: R² {res.r2:.3f} < {R2_MIN}, the bar a law must clear in recommend"
    with style():
        fig, (ax,) = new_figure(6.4, 5.0)
        handles = [ax.errorbar(x, y, yerr=means["std"].fillna(0.0).to_numpy(float) if repeats else None,
                               linestyle="none", marker=marker(0), color=colour(0), capsize=3, zorder=3,
                               label=f"mean of the runs with {rule} (bars: ±1 sd of repeats)" if repeats
                               else f"runs with {rule}")]
        if repeats:
            handles += ax.plot(g["n_heads"], g["loss"], linestyle="none", marker=marker(0), color=colour(0),
                               alpha=0.35, markersize=4, label=f"each run with {rule}")
        others = shape_runs.drop(index=g.index, errors="ignore")
        if len(others):
            handles += ax.plot(others["n_heads"], others["loss"], linestyle="none", marker=marker(1),
                               color=colour(1), fillstyle="none", label="other KV heads (not fitted)")
        if res is not None and why is None:
            p = res.params
            xs = np.geomspace(x.min() / 1.3, x.max() * 1.3, 200)
            handles += ax.plot(xs, law.predict(p, xs), color="#000000", linestyle="--",
                               label=f"fit {p['a']:.3g}·n_h^{p['b']:.3g} + {p['c']:.3g} (R² {res.r2:.3f} on the "
                                     "means)")
        else:
            handles += ax.plot([], [], linestyle="none", label=why)  # a legend line with no mark: why no fit
        ax.set_xscale("log", base=2)
        ticks = sorted(set(x) | set(others["n_heads"].astype(float)))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel(axis_label("n_h", log=True))
        ax.set_ylabel(loss_label("validation", unit))
        ax.set_title(f"Loss vs heads at d_model {d}, {L} layers")
        fig.legend(handles=handles, loc="outside lower center", fontsize=8)
        return save(fig, path)


def law_curves(fitset, path, loss_unit: str = DEFAULT_UNIT) -> list:
    """Each fitted candidate's ladder (points) and L(N) = (a/N)^b + E (line; dashed where the law is weak, so
    recommend does not pick from it) with its bootstrap 95% band; candidates without a law show their points
    hollow. With no fitted law at all there is nothing to draw (a one-line CostlawError says why)."""
    from costlaw.analysis.recommend import predict_samples
    from costlaw.analysis.recommend.candidates import MIN_SIZES
    from costlaw.fitting import get_law

    cands = [c for c in fitset.candidates if not c.base and any("loss" in p for p in c.ladder)]
    if not any(c.fitted for c in cands):
        why = "; ".join(dict.fromkeys(f"{c.label}: {c.reason}" for c in cands if c.reason)) or \
            "no candidate has ladder points with a loss"
        no_data("law-curves", f"no candidate has a fitted law: {why}",
                f"train >= {MIN_SIZES} sizes of a candidate, or give fitted laws with --fits")
    all_loss = np.array([p["loss"] for c in cands for p in c.ladder if "loss" in p])
    with style():
        fig, (ax,) = new_figure(7.0, 4.6)
        for i, c in enumerate(cands):
            pts = [p for p in c.ladder if "loss" in p]
            N = np.array([p["N"] for p in pts])
            y = np.array([p["loss"] for p in pts])
            col, mk = colour(i), marker(i)
            name = c.label + ("" if c.fitted else " (no law)") + (" (weak law)" if c.fitted and c.weak else "")
            ax.plot(N, y, linestyle="none", marker=mk, color=col, label=name,
                    fillstyle="full" if c.fitted else "none")
            if c.fitted:
                law = get_law(c.law)
                xs = np.geomspace(N.min() / 1.5, max(N.max(), c.n_max or 0) * 3, 200)
                ax.plot(xs, law.predict(c.params, xs), color=col, linestyle="--" if c.weak else "-")
                if c.samples is not None:
                    band = np.array([predict_samples(law, c.samples, float(v)) for v in xs])
                    ok = np.isfinite(band).all(axis=0)
                    if ok.sum() >= 2:
                        lo, hi = np.percentile(band[:, ok], [2.5, 97.5], axis=1)
                        ax.fill_between(xs, lo, hi, color=col, alpha=0.15, linewidth=0)
        # the data set the scale: a wild bootstrap draw (a degenerate resample) must not flatten the figure
        span = max(float(np.ptp(all_loss)), 0.05)
        ax.set_ylim(all_loss.min() - 0.35 * span, all_loss.max() + 0.35 * span)
        ax.set_xscale("log")
        ax.set_xlabel(axis_label("N", log=True))
        ax.set_ylabel(loss_label("validation", loss_unit))
        ax.set_title("L(N) = (a/N)^b + E per candidate (bands: bootstrap 95%; dashed: weak law)")
        ax.legend(ncols=2 if len(cands) > 6 else 1)
        return save(fig, path)


def check_frame(df, columns, figure: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CostlawError(f"figure {figure}: the data lack column(s) {', '.join(missing)}; pass a frame with "
                           f"{', '.join(columns)}")
