"""The calibration figure: memory and decode time against the context, measured next to analytic."""

from __future__ import annotations

from pathlib import Path

from costlaw.analysis.calibration.render import ctx_label, table


def figure(rows, fits: dict, path, gpu: str | None = None) -> list[Path]:
    """KV cache and total memory (measured points, analytic lines) and decode ms/token (measured points,
    roofline dashed, calibrated solid) against T, per family (one colour and marker each). PNG and SVG."""
    from matplotlib.lines import Line2D

    from costlaw.analysis.figures.style import AXES, colour, marker, new_figure, plain_log_ticks, save, style

    tab = table(rows, fits, gpu)
    families = list(dict.fromkeys(t["family"] for t in tab))
    contexts = sorted({t["context"] for t in tab})
    with style():
        fig, (ak, am, ad) = new_figure(13.5, 4.4, ncols=3)
        for i, fam in enumerate(families):
            ts = [t for t in tab if t["family"] == fam]
            T = [t["context"] for t in ts]
            c, m = colour(i), marker(i)
            ak.plot(T, [t["kv_bytes_analytic"] / 2**20 for t in ts], color=c)
            ak.plot(T, [t["kv_bytes_measured"] / 2**20 for t in ts], m, color=c, fillstyle="none")
            am.plot(T, [t["m_infer_bytes_analytic"] / 2**20 for t in ts], color=c)
            peak = [t for t in ts if t["peak_bytes"]]
            am.plot([t["context"] for t in peak], [t["peak_bytes"] / 2**20 for t in peak], m, color=c,
                    fillstyle="none")
            ad.plot(T, [t["decode_s_per_token"] * 1e3 for t in ts], m, color=c, fillstyle="none")
            if ts[0]["decode_s_roofline"] is not None:
                ad.plot(T, [t["decode_s_roofline"] * 1e3 for t in ts], "--", color=c)
            if "decode_s_calibrated" in ts[0]:
                ad.plot(T, [t["decode_s_calibrated"] * 1e3 for t in ts], color=c)
        fam_keys = [Line2D([], [], color=colour(i), marker=marker(i), fillstyle="none", label=f)
                    for i, f in enumerate(families)]

        def kind(label, **kw):
            return Line2D([], [], color="0.35", label=label, **kw)

        measured = kind("measured", marker="o", linestyle="none", fillstyle="none")
        has_roof = tab[0]["decode_s_roofline"] is not None
        panels = ((ak, "KV cache", "MiB", [measured, kind("analytic")]),
                  (am, "memory: peak vs M_infer", "MiB", [kind("peak measured", marker="o", linestyle="none",
                                                                fillstyle="none"), kind("M_infer analytic")]),
                  (ad, "batch-1 decode", "ms per token",
                   [measured] + ([kind("roofline", linestyle="--")] if has_roof else [])
                   + ([kind("calibrated")] if "decode_s_calibrated" in tab[0] else [])))
        for ax, title, ylab, kinds in panels:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(contexts)
            ax.set_xticklabels([ctx_label(T) for T in contexts])
            plain_log_ticks(ax, "y")
            ax.set_xlabel(AXES["T"])
            ax.set_ylabel(ylab)
            ax.set_title(title)
            ax.legend(handles=fam_keys + kinds, loc="best")
        return save(fig, path)
