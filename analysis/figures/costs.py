"""Cost figures: the GQA paper's Figure-1 bars (standard vs recommended across contexts) and the frontier."""

from __future__ import annotations

import numpy as np

from costlaw.analysis.figures.laws import check_frame
from costlaw.analysis.figures.style import (
    AXES,
    DEFAULT_UNIT,
    axis_label,
    bytes_unit,
    colour,
    loss_label,
    marker,
    new_figure,
    no_data,
    plain_log_ticks,
    save,
    style,
)

BAR_COLUMNS = ("context", "which", "label", "m_invariant_bytes", "kv_cache_bytes", "c_invariant_flops",
               "c_attention_flops")


def bars_frame(rec):
    """Rows for `cost_bars` from a Recommendation: the standard and each context's winner, split into the
    time-invariant part (weights; 2N FLOPs) and the part that grows with context (KV cache; attention)."""
    import pandas as pd

    rows = []
    for T in rec.contexts:
        w = rec.winner(T)
        for which, ev in (("standard", rec.standard), ("recommended", w)):
            if ev is None:
                continue
            p = ev.prices[T]
            rows.append({"context": T, "which": which, "label": ev.label,
                         "m_invariant_bytes": p["m_invariant_bytes"], "kv_cache_bytes": p["kv_cache_bytes"],
                         "c_invariant_flops": p["c_invariant_flops"], "c_attention_flops": p["c_attention_flops"]})
    return pd.DataFrame(rows, columns=list(BAR_COLUMNS))


def _ctx(T: int) -> str:
    return f"{T // 1024}K" if T % 1024 == 0 and T >= 1024 else str(T)


def cost_bars(df, path, dtype: str = "bf16") -> list:
    """Memory and FLOPs per token of the standard vs the recommended config at each context, stacked:
    time-invariant part (weights / 2N) below, context-dependent part (KV cache / attention) above. Bars carry
    a key letter (S: the standard; A, B, ...: the recommended configs) explained under the panels."""
    from matplotlib.ticker import FuncFormatter

    from costlaw.analysis.figures.style import si_label

    check_frame(df, BAR_COLUMNS, "cost-bars")
    if not len(df) or set(df["which"]) != {"standard", "recommended"}:
        no_data("cost-bars", "needs a standard and a recommended config", "give --standard a fitted candidate")
    contexts = sorted(df["context"].unique())
    rec_labels = list(dict.fromkeys(df[df["which"] == "recommended"].sort_values("context")["label"]))
    keys = {lab: chr(ord("A") + i) for i, lab in enumerate(rec_labels)}
    std_label = ", ".join(dict.fromkeys(df[df["which"] == "standard"]["label"]))
    div, unit = bytes_unit(float((df["m_invariant_bytes"] + df["kv_cache_bytes"]).max()))
    x = np.arange(len(contexts))
    width = 0.38
    with style():
        fig, (axm, axc) = new_figure(10.0, 4.8, ncols=2)
        for k, which in enumerate(("standard", "recommended")):
            sub = df[df["which"] == which].set_index("context").reindex(contexts)
            pos = x + (k - 0.5) * width
            base_c, top_c = (colour(0), colour(5)) if k == 0 else (colour(1), colour(3))
            hatch = ".." if k == 0 else "//"
            m0, m1 = sub["m_invariant_bytes"] / div, sub["kv_cache_bytes"] / div
            c0, c1 = sub["c_invariant_flops"], sub["c_attention_flops"]
            axm.bar(pos, m0, width, color=base_c, label=f"{which}: weights / 2N")
            axm.bar(pos, m1, width, bottom=m0, color=top_c, hatch=hatch, edgecolor="white",
                    label=f"{which}: KV cache / attention")
            axc.bar(pos, c0, width, color=base_c)
            axc.bar(pos, c1, width, bottom=c0, color=top_c, hatch=hatch, edgecolor="white")
            for ax, tops in ((axm, m0 + m1), (axc, c0 + c1)):
                for xp, top, lab in zip(pos, tops, sub["label"]):
                    if lab == lab:
                        ax.annotate("S" if k == 0 else keys[lab], (xp, top), xytext=(0, 2),
                                    textcoords="offset points", ha="center", va="bottom", fontsize=9)
        for ax in (axm, axc):
            ax.set_xticks(x, [_ctx(int(T)) for T in contexts])
            ax.set_xlabel(AXES["T"])
            ax.margins(y=0.12)
        axc.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: si_label(v)))
        axm.set_ylabel(axis_label("M", unit=f"{unit}, {dtype}"))
        axc.set_ylabel(AXES["C"])
        axm.set_title("Memory: weights + KV cache")
        axc.set_title("FLOPs per token: 2N + attention")
        handles, labels = axm.get_legend_handles_labels()
        key = "; ".join([f"S = standard {std_label}"] + [f"{v} = {k}" for k, v in keys.items()])
        fig.legend(handles, labels, loc="outside lower center", ncols=2, title=key, title_fontsize=9)
        return save(fig, path)


def frontier(df, path, context: int | None = None, loss_unit: str = DEFAULT_UNIT) -> list:
    """Loss vs M_infer and vs C_infer at one context: every point by family, each family's Pareto set joined
    by a step line, points on the cross-family Pareto set ringed in black. df: `analysis.frontier.points`
    rows (one context); loss_unit: the runs' (style.loss_unit_of)."""
    check_frame(df, ("family", "loss", "m_infer_bytes", "c_infer_flops_per_token", "pareto_memory",
                     "pareto_flops", "pareto_memory_all", "pareto_flops_all"), "frontier")
    if context is not None and "context" in df.columns:
        df = df[df["context"] == context]
    if not len(df):
        no_data("frontier", f"no points at context {context}", "price runs at that context (costlaw frontier)")
    with style():
        fig, axes = new_figure(10.0, 4.4, ncols=2)
        div_m, unit_m = bytes_unit(float(df["m_infer_bytes"].max()))
        for ax, (name, col, unit) in zip(axes, (("memory", "m_infer_bytes", "M_infer"),
                                                 ("flops", "c_infer_flops_per_token", "C_infer"))):
            div = div_m if name == "memory" else 1.0
            for i, (fam, g) in enumerate(sorted(df.groupby("family"), key=lambda t: t[0])):
                ax.plot(g[col] / div, g["loss"], linestyle="none", marker=marker(i), color=colour(i), alpha=0.8,
                        label=fam)
                front = g[g[f"pareto_{name}"]].sort_values(col)
                ax.step(front[col] / div, front["loss"], where="post", color=colour(i), linewidth=1.2)
            allp = df[df[f"pareto_{name}_all"]]
            ax.plot(allp[col] / div, allp["loss"], linestyle="none", marker="o", markersize=11,
                    markerfacecolor="none", markeredgecolor="#000000", label="Pareto, all families")
            ax.set_xscale("log")
            ax.set_ylabel(loss_label("validation", loss_unit))
            if name == "memory":
                plain_log_ticks(ax)
                ax.set_xlabel(axis_label("M", log=True, unit=unit_m))
            else:
                plain_log_ticks(ax, si=True)
                ax.set_xlabel(axis_label("C", log=True))
            ax.set_title(f"Loss vs {unit}" + (f" at T = {context}" if context else ""))
        axes[0].legend()
        return save(fig, path)
