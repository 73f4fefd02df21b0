"""The one fits format, "costlaw-fits/1": what `costlaw fit` prints and writes, what `costlaw recommend --fits`
reads and `--fits-out` writes, and what each row of the store's fits table holds in its `doc` column.

    {"format": "costlaw-fits/1", "law": "gqa-size", "formula": "L(N) = (a/N)^b + E",
     "x": ["params_non_embedding"], "y": "loss", "options": {FitOptions.to_json()},
     "source": "where the rows came from", "notes": [...],
     "candidates": [ENTRY, ...]}              # one entry per group; recommend's fields: analysis/recommend/fitsfile.py

An ENTRY is the group's identity (`group`: the grouping columns' values; recommend adds label, family, n_heads,
... ladder) and the fit the pipeline made of it, ENTRY_FIELDS:
    n_points, params, objective, grad_norm, r2, r2_ceiling, n_starts, n_refined, n_at_best, success, message,
    derived              the law's and the caller's derived quantities at the fit
    bootstrap            {param: [one value per resample]}, then n_bootstrap, n_failed, stderr, ci95
    holdout              the leave-largest-out refit (fitting.HoldoutResult.to_dict) and the ranking column
    data_fingerprint     analysis/fits/fingerprint.py: the store's key for this fit
or, for a group that was not fitted, `reason`.
"""

from __future__ import annotations

FITS_FORMAT = "costlaw-fits/1"
ENTRY_FIELDS = ("n_points", "params", "objective", "grad_norm", "r2", "r2_ceiling", "n_starts", "n_refined",
                "n_at_best", "success", "message", "derived", "bootstrap", "n_bootstrap", "n_failed", "stderr", "ci95",
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
