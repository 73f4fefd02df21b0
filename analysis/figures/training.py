"""Per-run figures: training curves (loss vs tokens) and loss by position in the context, one panel per config
label and one colour per model size, so neither a config nor a size has to be told apart by colour among dozens."""

from __future__ import annotations

import math

from costlaw.analysis.figures.laws import check_frame
from costlaw.analysis.figures.style import (
    AXES,
    DEFAULT_UNIT,
    axis_label,
    loss_label,
    new_figure,
    no_data,
    plain_log_ticks,
    save,
    sequential,
    si_label,
    size_colours,
    style,
)

MAX_PANELS = 12  # more configs than this are too small to read; the title says how many were left out
MAX_LISTED_SIZES = 12  # up to this many sizes each get a legend entry; more get a colour bar


def _labels(df) -> list[str]:
    return sorted(df["label"].unique(), key=str)


def _per_run(df, path, *, x: str, logx: bool, xlabel: str, ylabel: str, title: str) -> list:
    """One panel per label (shared axes), one line per run coloured by its N: a colour per size by rank with a
    legend naming each N, or for many sizes colours by log N with a colour bar."""
    from matplotlib.lines import Line2D

    labels = _labels(df)
    shown = labels[:MAX_PANELS]
    sizes = sorted(set(df["N"].dropna().astype(float)))
    listed = len(sizes) <= MAX_LISTED_SIZES
    if listed:
        colours = size_colours(sizes)
    else:
        from matplotlib.colors import ListedColormap, LogNorm

        norm = LogNorm(min(sizes), max(sizes))
        cmap = ListedColormap(sequential(256))
        colours = {n: cmap(norm(n)) for n in sizes}
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    with style():
        fig, _ = new_figure(3.5 * ncols + 1.8, 2.6 * nrows + 1.0, ncols=0)
        grid = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        for ax, label in zip(grid, shown):
            g = df[df["label"] == label]
            for _, run in sorted(g.groupby("run_id"), key=lambda t: float(t[1]["N"].iloc[0])):
                run = run.sort_values(x)
                ax.plot(run[x], run["loss"], color=colours.get(float(run["N"].iloc[0]), "0.5"), alpha=0.9,
                        linewidth=1.3)
            ax.set_title(f"{label} ({g['run_id'].nunique()} runs)", fontsize=10)
            if logx:
                ax.set_xscale("log")
        for i, ax in enumerate(grid):
            if i >= len(shown):
                ax.set_visible(False)
            elif i + ncols >= len(shown):  # no panel below: this one carries the x tick labels
                ax.xaxis.set_tick_params(labelbottom=True)
        fig.supxlabel(xlabel, fontsize=10)
        fig.supylabel(ylabel, fontsize=10)
        more = f"; {len(labels) - len(shown)} more configs not shown" if len(labels) > len(shown) else ""
        fig.suptitle(f"{title}: one panel per config, one line per run, coloured by its size{more}")
        if listed:
            handles = [Line2D([], [], color=colours[n], linewidth=2.5, label=si_label(n)) for n in sizes]
            fig.legend(handles=handles, loc="outside right upper", title=AXES["N"], title_fontsize=9)
        else:
            from matplotlib.cm import ScalarMappable

            bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(grid[:len(shown)]), label=AXES["N"])
            plain_log_ticks(bar.ax, "y", si=True)
        return save(fig, path)


def training_curves(steps, path, loss_unit: str = DEFAULT_UNIT) -> list:
    """Training loss vs tokens seen: a panel per config label, a line per run coloured by its size.
    steps: a frame with run_id, label, N (non-embedding parameters), tokens, loss (the store's steps joined with
    each run's label and size; analysis.report.data.steps_frame)."""
    check_frame(steps, ("run_id", "label", "N", "tokens", "loss"), "training-curves")
    steps = steps[steps["loss"].notna() & (steps["tokens"] > 0)]
    if not len(steps):
        no_data("training-curves", "no logged steps with a loss", "ingest runs that wrote metrics.jsonl")
    return _per_run(steps, path, x="tokens", logx=True,
                    xlabel=axis_label("tokens", log=True), ylabel=loss_label("training", loss_unit),
                    title="Training curves")


def position_loss(df, path, loss_unit: str = DEFAULT_UNIT) -> list:
    """Validation loss by position bucket (bucket midpoint in tokens): a panel per config label, a line per run
    coloured by its size. df: the store's position_loss view with label and N (label, N, run_id, start_pos,
    end_pos, loss; analysis.report.data.position_frame)."""
    check_frame(df, ("run_id", "label", "N", "start_pos", "end_pos", "loss"), "position-loss")
    df = df[df["loss"].notna()]
    if not len(df):
        no_data("position-loss", "no position_loss evals", "evaluate with eval.position_buckets >= 1")
    df = df.assign(mid=(df["start_pos"] + df["end_pos"]) / 2)
    return _per_run(df, path, x="mid", logx=False, xlabel=axis_label("position"),
                    ylabel=loss_label("validation", loss_unit), title="Loss by position")
