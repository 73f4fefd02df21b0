"""Fitted-law figures: loss vs number of heads at one size (power-plus-constant fit), and L(N; H) per candidate."""

from __future__ import annotations

import numpy as np

from costlaw.analysis.figures.style import colour, marker, new_figure, no_data, save, style
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


def loss_vs_heads(runs, path, size=None) -> list:
    """Loss vs n_h at one (d_model, n_layers) with l(n_h) = a·n_h^b + c fitted (the paper's App. I form), over
    the runs that share a KV rule (n_kv = n_h, or a fixed n_kv); other runs of that shape are drawn hollow.

    runs: a frame with family, d_model, n_layers, n_heads, n_kv_heads, loss (e.g. the store's completed runs
    with loss = val_loss); size: (d_model, n_layers), default the shape with the most head counts.
    """
    from costlaw.fitting import fit, get_law

    d, L, rule, g, shape_runs = pick_series(runs, size)
    if len(g) == 0 or g["n_heads"].nunique() < 3:
        have = 0 if len(g) == 0 else g["n_heads"].nunique()
        no_data("loss-vs-heads", f"at most {have} distinct n_heads among GQA runs of one size and KV rule; the "
                                 "power-plus-constant fit needs 3", "train >= 3 head counts at one size")
    law = get_law("power-plus-constant")
    x, y = g["n_heads"].to_numpy(float), g["loss"].to_numpy(float)
    res = fit(law, x, y, x_names=["n_heads"], y_name="loss")
    p = res.params
    with style():
        fig, (ax,) = new_figure(6.0, 4.0)
        ax.plot(x, y, linestyle="none", marker=marker(0), color=colour(0), label=f"runs with {rule}")
        others = shape_runs.drop(index=g.index, errors="ignore")
        if len(others):
            ax.plot(others["n_heads"], others["loss"], linestyle="none", marker=marker(1), color=colour(1),
                    fillstyle="none", label="other KV heads (not fitted)")
        xs = np.geomspace(x.min() / 1.3, x.max() * 1.3, 200)
        ax.plot(xs, law.predict(p, xs), color="#000000", linestyle="--",
                label=f"fit {p['a']:.3g}·n_h^{p['b']:.3g} + {p['c']:.3g} (R² {res.r2:.3f})")
        ax.set_xscale("log", base=2)
        ticks = sorted(set(x) | set(others["n_heads"].astype(float)))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("query heads n_h (log scale)")
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title(f"Loss vs heads at d_model {d}, {L} layers")
        ax.legend()
        return save(fig, path)


def law_curves(fitset, path) -> list:
    """Each candidate's ladder (points) and fitted L(N) = (a/N)^b + E (line) with its bootstrap 95% band."""
    from costlaw.analysis.recommend import predict_samples
    from costlaw.fitting import get_law

    cands = [c for c in fitset.candidates if not c.base and any("loss" in p for p in c.ladder)]
    if not cands:
        no_data("law-curves", "no candidate has ladder points with a loss", "ingest completed runs or give ladder "
                "points in the fits file")
    all_loss = np.array([p["loss"] for c in cands for p in c.ladder if "loss" in p])
    with style():
        fig, (ax,) = new_figure(7.0, 4.6)
        for i, c in enumerate(cands):
            pts = [p for p in c.ladder if "loss" in p]
            N = np.array([p["N"] for p in pts])
            y = np.array([p["loss"] for p in pts])
            col, mk = colour(i), marker(i)
            name = c.label + ("" if c.fitted else " (unfit)")
            ax.plot(N, y, linestyle="none", marker=mk, color=col, label=name,
                    fillstyle="full" if c.fitted else "none")
            if c.fitted:
                law = get_law(c.law)
                xs = np.geomspace(N.min() / 1.5, max(N.max(), c.n_max or 0) * 3, 200)
                ax.plot(xs, law.predict(c.params, xs), color=col)
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
        ax.set_xlabel("non-embedding parameters N (log scale)")
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title("L(N; H) = (a/N)^b + E per candidate (bands: bootstrap 95%)")
        ax.legend(ncols=2 if len(cands) > 6 else 1)
        return save(fig, path)


def check_frame(df, columns, figure: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CostlawError(f"figure {figure}: the data lack column(s) {', '.join(missing)}; pass a frame with "
                           f"{', '.join(columns)}")
