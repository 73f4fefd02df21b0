"""Figures drawn from the store or from fits (matplotlib, Agg canvas), each written as PNG + SVG.

Each function takes data frames or fits and an output path (its suffix is replaced by .png and .svg) and
returns the two paths; with no data it raises a one-line CostlawError instead of drawing an empty plot.

  loss_vs_heads(runs, path, size=None)   loss vs n_h at one size with the power-plus-constant fit
  law_curves(fitset, path)               L(N; H) per candidate: ladder points, fitted law, bootstrap band
  cost_bars(bars_frame(rec), path)       the GQA paper's Figure-1 bars: standard vs recommended, 8K -> 128K
  frontier(points, path, context)        loss vs M_infer and C_infer per family with Pareto sets
  training_curves(steps, path)           loss vs tokens per run
  position_loss(df, path)                loss by position per run
"""

from costlaw.analysis.figures.costs import bars_frame, cost_bars, frontier
from costlaw.analysis.figures.laws import law_curves, loss_vs_heads
from costlaw.analysis.figures.style import PALETTE, outputs
from costlaw.analysis.figures.training import position_loss, training_curves

__all__ = ["bars_frame", "cost_bars", "frontier", "law_curves", "loss_vs_heads", "PALETTE", "outputs",
           "position_loss", "training_curves"]
