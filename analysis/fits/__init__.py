"""Fitted laws, made once: the one group-fit pipeline, the one fits format, and fits kept in the store.

| module | holds |
|---|---|
| options.py | `FitOptions`: every setting that changes a fit (law, columns, loss, weights, constraints, ...) |
| rows.py | --assign, --where, --holdout-where (the one expression language over columns) and --best-of |
| pipeline.py | rows -> groups -> fit -> bootstrap -> holdout -> entries (`split`, `make_groups`, `fit_groups`) |
| render.py | an entry as text; specs.py: --fix/--tie/--bounds/--init/--eval-at values |
| doc.py | the fits format "costlaw-fits/1" (`header`, ENTRY_FIELDS) |
| fingerprint.py | `data_fingerprint`: runs + points + options + fitter, the key of a stored fit |
| stored.py | the store's fits table: `lookup` by fingerprint (read-only), `store` under the write lock |

`costlaw fit` runs the pipeline on any table (--data, or --db with --sql) and, with --db, stores its fits;
`costlaw recommend --db` and `costlaw report` run it on each candidate's runs, take every group whose
fingerprint the fits table holds from there, fit the others and store them (`--refit` fits them all).
"""

from costlaw.analysis.fits.doc import ENTRY_FIELDS, FITS_FORMAT, fit_fields, header
from costlaw.analysis.fits.fingerprint import data_fingerprint, fitter_sha256
from costlaw.analysis.fits.options import FitOptions
from costlaw.analysis.fits.pipeline import Group, GroupFit, evaluate_groups, fit_groups, label_of, make_groups, split
from costlaw.analysis.fits.stored import lookup, store, store_rows

__all__ = ["ENTRY_FIELDS", "FITS_FORMAT", "fit_fields", "header", "data_fingerprint", "fitter_sha256", "FitOptions",
           "Group", "GroupFit", "evaluate_groups", "fit_groups", "label_of", "make_groups", "split", "lookup", "store",
           "store_rows"]
