"""The cheapest config that reaches a target loss at a context length: the GQA paper's search (§4.1),
generalised across families.

1. **Candidates.** GQA head configs (n_h, n_kv) (the paper's 21 pairs n_h, n_kv in {1..32}, n_kv <= n_h, or
   whatever the data cover); hybrid layouts (n_h, n_kv, sparse pattern; the share of full layers is the
   median of its runs', so fit an ablation over that share one sweep at a time with --sweep); compressed
   caches (a dense candidate + a KV policy at a keep ratio).
2. **Laws.** Each GQA or hybrid candidate has its own L(N) = (a/N)^b + E, N = non-embedding parameters,
   fitted to the store's completed runs through the group-fit pipeline (analysis/fits: `fitting.fit`, Huber in
   log space; bootstrap over runs for intervals), or taken from the store's fits table when it holds a fit of
   the same runs, options and fitter, or read from a fits file. A candidate with runs at fewer than 4 sizes
   is listed, unfit.
   A compressed candidate has no law of its own: its loss is its dense base's law plus the ΔNLL its policy
   measured at that keep ratio (the store's kv_policy evals or the fits file's `kv_policies`), so its N*
   solves L(N) = L* − ΔNLL.
3. **Size to config.** N* = law.inverse(L*); `analysis.shape` turns N* into a ModelConfig with N >= N*
   (aspect ratio from the candidate's ladder, else the paper's anchors; d a multiple of 64).
4. **Price and pick.** `costmodel.costs` at each context; `analysis.objective` gives Z and the budgets; the
   lowest Z within every budget wins, per context. The loss is predicted (with a bootstrap 95% interval) at
   the rounded config's N, and the extrapolation distance is N* over the largest trained N.

Modules: candidates (candidates, labels, selection), fitsfile (the --fits schema), fromstore (fits from
the store's runs, stored and reused), search (size, price, pick), render (text and TOML output).
"""

from costlaw.analysis.recommend.candidates import FAMILIES, PAPER_PAIRS, Candidate, FitSet, select
from costlaw.analysis.recommend.fitsfile import load_fits
from costlaw.analysis.recommend.fromstore import fit_runs, fit_store, kv_policy_rows, load_runs
from costlaw.analysis.recommend.render import candidate_rows, render_text, toml_text, write_tomls
from costlaw.analysis.recommend.search import Evaluated, Recommendation, predict_samples, recommend

__all__ = ["FAMILIES", "PAPER_PAIRS", "Candidate", "FitSet", "select", "load_fits", "fit_runs", "fit_store",
           "kv_policy_rows", "load_runs", "candidate_rows", "render_text", "toml_text", "write_tomls", "Evaluated",
           "Recommendation", "predict_samples", "recommend"]
