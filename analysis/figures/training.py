"""Per-run figures: training curves (loss vs tokens) and loss by position in the context."""

from __future__ import annotations

from costlaw.analysis.figures.laws import check_frame
from costlaw.analysis.figures.style import colour, marker, new_figure, no_data, save, style


def _series(df):
    """(label, frame) per distinct label, in a stable order; colours follow labels, not runs."""
    return sorted(df.groupby("label"), key=lambda t: str(t[0]))


def training_curves(steps, path) -> list:
    """Training loss vs tokens seen, one line per run, coloured by its config label.
    steps: a frame with run_id, label, tokens, loss (the store's steps joined with a label per run)."""
    check_frame(steps, ("run_id", "label", "tokens", "loss"), "training-curves")
    steps = steps[steps["loss"].notna() & (steps["tokens"] > 0)]
    if not len(steps):
        no_data("training-curves", "no logged steps with a loss", "ingest runs that wrote metrics.jsonl")
    with style():
        fig, (ax,) = new_figure(7.0, 4.4)
        for i, (label, g) in enumerate(_series(steps)):
            for j, (_, run) in enumerate(g.groupby("run_id")):
                run = run.sort_values("tokens")
                ax.plot(run["tokens"], run["loss"], color=colour(i), alpha=0.85,
                        label=label if j == 0 else None, marker=marker(i), markevery=max(1, len(run) // 4),
                        markersize=4)
        ax.set_xscale("log")
        ax.set_xlabel("training tokens seen (log scale)")
        ax.set_ylabel("training loss (nats/token)")
        ax.set_title("Training curves (one line per run)")
        ax.legend(ncols=2 if steps["label"].nunique() > 6 else 1)
        return save(fig, path)


def position_loss(df, path) -> list:
    """Validation loss by position bucket (bucket midpoint in tokens), one line per run.
    df: the store's position_loss view with a label column (label, run_id, start_pos, end_pos, loss)."""
    check_frame(df, ("run_id", "label", "start_pos", "end_pos", "loss"), "position-loss")
    df = df[df["loss"].notna()]
    if not len(df):
        no_data("position-loss", "no position_loss evals", "evaluate with eval.position_buckets >= 1")
    with style():
        fig, (ax,) = new_figure(7.0, 4.4)
        for i, (label, g) in enumerate(_series(df)):
            for j, (_, run) in enumerate(g.groupby("run_id")):
                run = run.sort_values("start_pos")
                mid = (run["start_pos"] + run["end_pos"]) / 2
                ax.plot(mid, run["loss"], color=colour(i), marker=marker(i), alpha=0.85,
                        label=label if j == 0 else None)
        ax.set_xlabel("position in the context (tokens, bucket midpoint)")
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title("Loss by position")
        ax.legend(ncols=2 if df["label"].nunique() > 6 else 1)
        return save(fig, path)
