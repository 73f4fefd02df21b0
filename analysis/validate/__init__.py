"""Cross-validation of a store's laws (`costlaw validate`): how often a left-out run lands inside the interval
`costlaw recommend` would have given it. The number a user reads before trusting a store's recommendations.

| module | holds |
|---|---|
| crossval.py | folds (leave one config out; leave the largest size out), refits, predictions, summaries |
| render.py | text tables and report rows |
| figure.py | measured vs predicted with the new-run intervals |
| shapelaw.py | L(N, d/L) = (a/N)^b (d/L)^g + E, the shape-aware law recommend was measured against |
"""

from costlaw.analysis.validate.crossval import LAWS, MODES, Prediction, Validation, validate, validate_stores

__all__ = ["LAWS", "MODES", "Prediction", "Validation", "validate", "validate_stores"]
