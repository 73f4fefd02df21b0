"""The one fits format, "costlaw-fits/1": what `costlaw fit` prints and writes, what `costlaw recommend --fits`
reads and `--fits-out` writes, and what each row of the store's fits table holds in its `doc` column.

    {"format": "costlaw-fits/1", "law": "gqa-size", "formula": "L(N) = (a/N)^b + E",
     "x": ["params_non_embedding"], "y": "loss", "options": {FitOptions.to_json()},
     "source": "where the rows came from", "notes": [...],
     "candidates": [ENTRY, ...]}              # one entry per group; recommend's fields: analysis/recommend/fitsfile.py

An ENTRY is the group's identity (`group`: the grouping columns' values; recommend adds label, family, n_heads,
... ladder) and the fit the pipeline made of it, ENTRY_FIELDS:
    n_points, params (natural units, fixed and tied ones included), objective, objective_definition (the sum it
    is, in words), grad_norm, r2, r2_ceiling, n_starts, n_refined, n_at_best, success, message, reason (why it did
    not converge; null when it did), residuals ("log" or "raw"), weighted, fixed, tied, bounds, at_bounds
    (parameters on a bound), not_identified (parameters the data cannot pin down), condition,
    derived              the law's and the caller's derived quantities at the fit
    bootstrap            {param: [one value per resample used]}, then n_bootstrap, n_used, n_failed, n_unidentified,
                         stderr, ci95, bootstrap_by ({column, n_groups}), bootstrap_warnings
    holdout              the held-out refit (fitting.HoldoutResult.to_dict: each held-out row's x, y_true, y_pred)
                         and the ranking column
    data_fingerprint     analysis/fits/fingerprint.py: the store's key for this fit
or, for a group that was not fitted, `reason` alone. `costlaw fit --eval-at` prints entries of the same document
with `evaluated_at` (the parameters given), objective, r2 and `predictions` instead of a fit; they are not stored.
"""

from __future__ import annotations

FITS_FORMAT = "costlaw-fits/1"
ENTRY_FIELDS = ("n_points", "params", "objective", "objective_definition", "grad_norm", "r2", "r2_ceiling",
                "n_starts", "n_refined", "n_at_best", "success", "message", "reason", "residuals", "weighted", "fixed",
                "tied", "bounds", "at_bounds", "not_identified", "condition", "derived", "bootstrap", "n_bootstrap",
                "n_used", "n_failed", "n_unidentified", "stderr", "ci95", "bootstrap_by", "bootstrap_warnings",
                "holdout", "data_fingerprint")


def header(options, source: str) -> dict:
    """The document's fields before its candidates."""
    from costlaw.fitting import get_law

    law = get_law(options.law)
    return {"format": FITS_FORMAT, "law": law.name, "formula": law.formula, "x": list(options.x), "y": options.y,
            "options": options.to_json(), "source": source}


def fit_fields(entry: dict) -> dict:
    """The part of an entry the pipeline made (ENTRY_FIELDS): what a stored fit lends to a new group."""
    return {k: entry[k] for k in ENTRY_FIELDS if k in entry}
