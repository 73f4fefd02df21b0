"""`data_fingerprint`: the key under which the store's fits table keeps a fit, so a fit is reused only for the
same data, the same options and the same fitter.

sha256 of the canonical JSON of
  runs     sorted [run_id, runs.fingerprint] of the rows fitted (the ingest fingerprint changes whenever a run's
           config, summary, DONE or metrics change), when the rows come from the store;
  points   the fitted (x..., y) values in the pipeline's canonical order (by x, then y): which column holds the
           loss (val_loss or final_loss) and which rows a filter kept are in these numbers;
  extra    when used, each row's weight, bootstrap group and whether --holdout-where holds it out;
  options  `FitOptions.key()`: law (a formula's text is in its name; a law file's content hash beside it), x and
           y column names, loss, delta, residuals, weights column, fixed/tied/bounded parameters, starts, init,
           refine, seed, method, bootstrap count and grouping, holdout, best-of, derived quantities;
  fitter   a hash of the fitting package's and this package's source, so a changed fitter refits.
How the rows were selected and grouped (SQL, --sweep, --train-context, families, group columns) is not hashed on
its own: it matters only through the runs and points it yields, so `costlaw fit --sql` and `costlaw recommend`
share a stored fit whenever they fit the same runs the same way.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

FINGERPRINT_VERSION = 1


@functools.cache
def fitter_sha256() -> str:
    """sha256 over (relative path, bytes) of the .py files of costlaw.fitting and costlaw.analysis.fits."""
    import costlaw.fitting

    h = hashlib.sha256()
    for folder in (Path(costlaw.fitting.__file__).parent, Path(__file__).parent):
        for p in sorted(folder.rglob("*.py")):
            if "__pycache__" not in p.parts:
                data = p.read_bytes()
                h.update(f"{folder.name}/{p.relative_to(folder).as_posix()}\0{len(data)}\0".encode() + data)
    return h.hexdigest()


def data_fingerprint(options, X: np.ndarray, y: np.ndarray, runs=None, extra: dict | None = None) -> str:
    """The fingerprint (module doc) of fitting `options` to X (n, k), y (n,) in canonical order; `runs`: the
    (run_id, ingest fingerprint) pairs of the rows, or None for rows that are not store runs (a CSV); `extra`:
    per-row values beside the points that change the fit (weights, bootstrap groups, the held-out rows)."""
    doc = {"version": FINGERPRINT_VERSION, "fitter": fitter_sha256(), "options": options.key(),
           "points": np.column_stack([X, y]).tolist(),
           "runs": sorted(([str(r), None if f is None else str(f)] for r, f in runs), key=lambda p: (p[0], p[1] or ""))
           if runs is not None else None}
    if extra:
        doc["extra"] = extra
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
