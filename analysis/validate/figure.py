"""The cross-validation figure: each left-out run's measured loss against its prediction, with the new-run
interval as an error bar, one colour and marker per candidate; points off the diagonal's band missed. And the
context check's (`--mode context`): each candidate's gap to the reference after extension against before it; a
point off the diagonal is a gap the extension changed."""

from __future__ import annotations

import numpy as np

from costlaw.analysis.figures.style import (
    DEFAULT_UNIT,
    colour,
    marker,
    new_figure,
    no_data,
    save,
    style,
)
from costlaw.analysis.figures.style import loss_unit as unit_of


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


def context_figure(c, path, loss_unit: str | None = None) -> list:
    """c: a ContextCheck (analysis.validate.context). Each paired extension's gap to the reference at the long
    context (y) against the short (x), bars: the val sets' +-1 se of the change (y - x), as the text's `val se`;
    loss_unit: default from the paired runs' tokenizers."""
    from costlaw.analysis.validate.context import verdict

    if not c.shifts:
        no_data("validate-context", "no extension paired with its pretraining run and the reference",
                "train an extend stage of the reference and a candidate at one width and `costlaw ingest` it")
    unit = loss_unit or unit_of(c.tokenizers)
    shorts, longs = (", ".join(str(t) for t in sorted({getattr(s, k) for s in c.shifts})) for k in ("short", "long"))
    with style():
        fig, (ax,) = new_figure(6.4, 6.2)
        per = c.summary()["candidates"]
        for i, (cand, ss) in enumerate(c.by_candidate().items()):
            p, widths = per[cand], ", ".join(dict.fromkeys(str(s.d_model) for s in ss))
            ax.errorbar([s.gap_short for s in ss], [s.gap_long for s in ss],
                        yerr=[s.se if s.se is not None else 0.0 for s in ss], linestyle="none", marker=marker(i),
                        color=colour(i), elinewidth=0.8, capsize=2,
                        label=f"{cand} (d {widths}): change {p['mean']:+.4f}, widened {p['widened']}/{p['n']}")
        allv = [v for s in c.shifts for v in (s.gap_short, s.gap_long - (s.se or 0), s.gap_long + (s.se or 0))]
        pad = 0.08 * ((max(allv) - min(allv)) or 0.1)
        lim = (min(allv) - pad, max(allv) + pad)
        ax.plot(lim, lim, color="#000000", linewidth=0.8, linestyle="--", label="y = x: gap unchanged")
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        ax.set_aspect("equal")
        ax.set_xlabel(f"gap to {c.reference} at the pretraining context {shorts} ({unit})")
        ax.set_ylabel(f"gap to {c.reference} after extension to {longs} ({unit})")
        o = c.summary()["overall"]
        se = "-" if o["se_mean"] is None else f"{o['se_mean']:.4f}"
        bars = "; bars: ±1 val-set se of gap long − gap short" if any(s.se is not None for s in c.shifts) else ""
        ax.set_title(f"gap = loss − loss of {c.reference} at the same width and seed\nwidened in {o['widened']} of "
                     f"{o['n']} pairs (sign test p {o['sign_test_p']:.3g}), by {o['mean']:+.4f} on average (se {se})"
                     f"\ninvariance {verdict(o)}{bars}", fontsize=9)
        ax.legend(loc="best", fontsize=8)
        return save(fig, path)


def rerun_figure(r, path, loss_unit: str = DEFAULT_UNIT) -> list:
    """r: a Rerun (analysis.validate.rerun). Each run's training-loss difference (rerun - first, mean over the
    window) against the share of its steps, one line per run (extensions dashed), the threshold as a band."""
    runs = [p for p in r.pairs if p.curve]
    if not runs:
        no_data("validate-rerun", "no run has logged training losses in both stores",
                "ingest run directories whose metrics hold step losses")
    with style():
        fig, (ax,) = new_figure(7.2, 4.4 + 0.09 * len(runs))
        for i, p in enumerate(runs):
            x, y = zip(*p.curve)
            ax.plot(x, y, color=colour(i), linewidth=1.0, linestyle="-" if p.stage == "pretrain" else "--",
                    label=f"{p.label}: val {p.diff:+.4f}")
        ax.axhspan(-r.threshold, r.threshold, color="#cccccc", alpha=0.5, linewidth=0,
                   label=f"within ±{r.threshold:g}")
        ax.axhline(0, color="#000000", linewidth=0.6)
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of the run's steps")
        ax.set_ylabel(f"training loss, rerun − first ({loss_unit})")
        o = r.summary()["overall"]
        noise = "-" if o["run_noise_sd"] is None else f"{o['run_noise_sd']:.4f}"
        ax.set_title(f"the same {o['n']} runs trained twice (mean over {r.window} logged steps)\none run's noise sd "
                     f"{noise} in val loss; {o['parted']} of {o['n']} parted by > {r.threshold:g}", fontsize=9)
        fig.legend(loc="outside lower center", ncols=2, fontsize=6)
        return save(fig, path)
