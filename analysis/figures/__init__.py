"""Figures drawn from the store or from fits (matplotlib, Agg canvas), each written as PNG + SVG in the one style
(style.py, which re-exports fitting/style.py: the study scripts and `costlaw fit --plot` draw with it too).

Each function takes data frames or fits and an output path (its suffix is replaced by .png and .svg) and
returns the two paths; with no data it raises a one-line CostlawError instead of drawing an empty plot. The
loss's axis names its unit: nats per byte for byte-level runs, else nats per token (style.loss_unit_of(runs)).

  loss_vs_heads(runs, path, size=None)         loss vs n_h at one size: means ±1 sd of seeds, the fit only
                                               where it clears recommend's R² bar
  law_curves(fitset, path, loss_unit)          L(N; H) per candidate: ladder points, fitted law, bootstrap band
  cost_bars(bars_frame(rec), path)             the GQA paper's Figure-1 bars: standard vs recommended, 8K -> 128K
  frontier(points, path, context, loss_unit)   loss vs M_infer and C_infer per family with Pareto sets
  training_curves(steps, path, loss_unit)      loss vs tokens: a panel per config, a colour per size N
  position_loss(df, path, loss_unit)           loss by position: a panel per config, a colour per size N
"""

from costlaw.analysis.figures.costs import bars_frame, cost_bars, frontier
from costlaw.analysis.figures.laws import law_curves, loss_vs_heads
from costlaw.analysis.figures.style import PALETTE, outputs
from costlaw.analysis.figures.training import position_loss, training_curves

__all__ = ["bars_frame", "cost_bars", "frontier", "law_curves", "loss_vs_heads", "PALETTE", "outputs",
           "position_loss", "training_curves"]
