"""The cheapest config that reaches a target loss at a context length: the GQA paper's search (§4.1),
generalised across families.

1. **Candidates.** GQA head configs (n_h, n_kv) (the paper's 21 pairs n_h, n_kv in {1..32}, n_kv <= n_h, or
   whatever the data cover); hybrid layouts (n_h, n_kv, sparse pattern; the share of full layers is the
   median of its runs', so fit an ablation over that share one sweep at a time with --sweep); compressed
   caches (a dense candidate + a KV policy at a keep ratio).
2. **Laws.** Each GQA or hybrid candidate has its own L(N) = (a/N)^b + E, N = non-embedding parameters,
   fitted to the config means of the store's completed runs (one point per config, its seeds averaged; why in
   fromstore.py) through the group-fit pipeline (analysis/fits: `fitting.fit`, Huber in log space; bootstrap
   over configs, seeds together), or taken from the store's fits table when it holds a fit of the same runs,
   options and fitter, or read from a fits file. The runs also give the run-to-run noise (noise.py: seed
   spread plus lack of fit). A candidate with runs at fewer than 4 sizes is listed, unfit.
   A compressed candidate has no law of its own: its loss is its dense base's law plus the ΔNLL its policy
   measured at that keep ratio (the store's kv_policy evals or the fits file's `kv_policies`), so its N*
   solves L(N) = L* − ΔNLL.
3. **Size to config.** N* = law.inverse(L*); `analysis.shape` turns N* into a ModelConfig with N >= N*
   (aspect ratio from the candidate's ladder, else the paper's anchors; d a multiple of 64), inside the depths
   and d/L the candidate was trained at whenever a config there reaches N* (its envelope).
4. **Guards.** A weak law (guards.py: E at its bound, parameters the configs do not pin down, R² < 0.98) or a
   config outside the envelope is evaluated and shown but does not win unless the user allows it
   (--allow-weak-laws, --allow-outside-envelope); with nothing left, there is no winner and the output says why.
5. **Price and pick.** `costmodel.costs` at each context; `analysis.objective` gives Z and the budgets; the
   lowest Z within every budget wins, per context. The loss is predicted at the rounded config's N with two
   intervals at --level (intervals.py): the law's mean (fit uncertainty) and a new run (plus run-to-run noise);
   the extrapolation distance is N* over the largest trained N.

Modules: candidates (candidates, labels, selection), fitsfile (the --fits schema), fromstore (fits from
the store's runs, stored and reused), noise (run-to-run noise), intervals (the two intervals), guards (weak
laws), search (size, price, pick), render (text and TOML output), specout (recommendations -> a sweep spec).
"""

from costlaw.analysis.recommend.candidates import FAMILIES, PAPER_PAIRS, Candidate, FitSet, select
from costlaw.analysis.recommend.fitsfile import load_fits
from costlaw.analysis.recommend.fromstore import fit_runs, fit_store, kv_policy_rows, load_runs
from costlaw.analysis.recommend.render import candidate_rows, render_text, toml_text, write_tomls
from costlaw.analysis.recommend.search import Evaluated, Recommendation, predict_samples, recommend

__all__ = ["FAMILIES", "PAPER_PAIRS", "Candidate", "FitSet", "select", "load_fits", "fit_runs", "fit_store",
           "kv_policy_rows", "load_runs", "candidate_rows", "render_text", "toml_text", "write_tomls", "Evaluated",
           "Recommendation", "predict_samples", "recommend"]
