"""The comparison's figure: per pair, loss by position, its difference, and measured vs ideal speedups."""

from __future__ import annotations

from pathlib import Path

from costlaw.analysis.hybrid.render import ctx_label


def _speed_bars(p: dict) -> list[tuple[str, float | None, float | None, float | None]]:
    """(label, measured, ideal by FLOPs, ideal by bytes) per bar group."""
    bars = [(f"train\n{ctx_label(p['seq_len'])}", p["train"]["measured"], p["train"]["ideal"], None)]
    bars += [(f"prefill\n{ctx_label(i['context'])}", i["prefill"]["measured"], i["prefill"]["ideal"], None)
             for i in p["inference"]]
    bars += [(f"decode\n{ctx_label(i['context'])}", i["decode"]["measured"], i["decode"]["ideal_flops"],
              i["decode"]["ideal_bytes"]) for i in p["inference"]]
    return bars


def figure(result: dict, path) -> list[Path]:
    """Per pair: loss by position (dense vs hybrid), its difference, and measured vs ideal speedups.
    Writes PNG and SVG (analysis.figures.style.save); returns both paths. The loss is in nats per token, the
    name true of every tokenizer: the comparison's result does not record which one the runs used."""
    from costlaw.analysis.figures.style import (
        AXES,
        DEFAULT_UNIT,
        colour,
        loss_label,
        marker,
        new_figure,
        no_data,
        save,
        style,
    )

    pairs = result["pairs"]
    if not pairs:
        no_data("hybrid", "no dense/hybrid pair", "ingest a dense and a hybrid extension of one run")
    with style():
        fig, _ = new_figure(13.0, 4.2 * len(pairs), ncols=0)
        for row, p in enumerate(pairs):
            a_pos, a_delta, a_speed = (fig.add_subplot(len(pairs), 3, 3 * row + k + 1) for k in range(3))
            tag = f" ({p['hybrid']['run_id'][:8]})" if len(pairs) > 1 else ""
            buckets = [b for b in p["position_loss"] if None not in (b["dense"], b["hybrid"], b["start"], b["end"])]
            mids = [(b["start"] + b["end"]) / 2 for b in buckets]
            width = (buckets[0]["end"] - buckets[0]["start"]) * 0.8 if buckets else 1.0
            for i, name in enumerate(("dense", "hybrid")):
                a_pos.plot(mids, [b[name] for b in buckets], color=colour(i), marker=marker(i),
                           label=f"{name}: {p[name]['label']}")
            a_pos.set_xlabel(AXES["position"])
            a_pos.set_ylabel(loss_label("validation", DEFAULT_UNIT))
            a_pos.set_title(f"Loss by position, T = {ctx_label(p['seq_len'])}{tag}")
            a_pos.legend(fontsize=8)
            a_delta.bar(mids, [b["delta"] for b in buckets], width=width, color=colour(1))
            a_delta.axhline(0, color="black", linewidth=0.8)
            if buckets:
                edges = [b["start"] for b in buckets] + [buckets[-1]["end"]]
                edges = edges[:: max(1, len(edges) // 9)]
                for ax in (a_pos, a_delta):
                    ax.set_xticks(edges)
                    ax.set_xticklabels([ctx_label(int(e)) for e in edges])
            a_delta.set_xlabel(AXES["position"])
            a_delta.set_ylabel(f"hybrid − dense validation loss ({DEFAULT_UNIT})")
            a_delta.set_title("Loss difference by position")

            bars = _speed_bars(p)
            w = 0.27
            for k, (name, hatch) in enumerate((("measured", None), ("ideal: FLOPs", "//"), ("ideal: bytes", ".."))):
                xs = [j + (k - 1) * w for j, b in enumerate(bars) if b[k + 1] is not None]
                ys = [b[k + 1] for b in bars if b[k + 1] is not None]
                rects = a_speed.bar(xs, ys, width=w, color=colour(k), hatch=hatch, edgecolor="white",
                                    label=name)
                a_speed.bar_label(rects, labels=[f"{y:.2f}" for y in ys], fontsize=7, padding=1)
            a_speed.axhline(1, color="black", linewidth=0.8)
            a_speed.set_xticks(range(len(bars)))
            a_speed.set_xticklabels([b[0] for b in bars])
            a_speed.set_ylabel("hybrid speedup over dense (×)")
            a_speed.set_title("Measured vs ideal speedup")
            a_speed.legend(fontsize=8)
        return save(fig, path)


