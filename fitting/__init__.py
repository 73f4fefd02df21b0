"""Scaling laws and robust fitting (numpy + scipy; never torch).

Fit in log space (residuals log y - log ŷ; or raw residuals y - ŷ) with the log-sum-exp parameterisation, a Huber
loss (delta = 1e-3) summed over points (optionally weighted), a vectorised grid of starts of which the best
distinct ones are refined with L-BFGS-B (analytic gradient, tolerances that do not stall on small objectives),
then bootstrap by resampling runs (or groups of rows) and check extrapolation by leaving the largest runs out.

    from costlaw.fitting import get_law, fit, bootstrap, holdout_largest
    law = get_law("gqa-size")                  # L(N) = (a/N)^b + E; also power-plus-constant, chinchilla, compute
    law = formula_law("E + A/N**alpha + B/D**beta", ("N", "D"))   # any law from a formula (fitting/formula.py)
    res = fit(law, N, L)                       # N (n,) or (n, 1), L (n,) losses
    res = fit(law, X, L, residuals="raw", weights=1/sigma**2, fix={"E": 1.69}, tie={"beta": "alpha"},
              bounds={"alpha": (0, 1)}, init={"A": 400.0}, start_box={"alpha": (0.1, 1)}, random_starts=50)
    res.params, res.objective, res.definition, res.grad_norm, res.r2, res.n_starts, res.n_at_best, res.success,
    res.reason, res.at_bounds, res.not_identified, res.to_dict()
    res.r2_ceiling                             # the most R² any law reaches where N repeats (seeds); else None
    boot = bootstrap(law, N, L, res, n=1000, seed=0, groups=run_ids)  # .samples, .stderr, .ci95, .warnings
    n_star = law.inverse(boot.param_samples(), 2.8, strict=False)   # N* per resample (inf: unreachable)
    lo, hi = boot.band(N_grid)                                      # 95% band of the prediction
    ho = holdout_largest(law, N, L, k=2)       # .rows (x, y_true, y_pred, rel_error), .max_abs_rel_error
    ho = holdout_rows(law, N, L, mask)         # any rows held out
    ev = evaluate_at(law, X, L, {"A": 406.4, ...})  # objective, R², predictions at given parameters
    vp = varpro_fit("chinchilla", X, L)        # variable projection: the exponents searched, coefficients profiled

Modules: law.py (Law, the registry), lse.py (LSELaw: sums of power terms in LSE form), forms.py (the
built-in laws: power-plus-constant, gqa-size, chinchilla, compute, linear), formula.py and dual.py (laws from
formulas, exact derivatives), lawfile.py (laws from a Python file), objective.py (huber / l2 / l1, log or raw
residuals, weights), constraints.py (fixed, tied, bounded parameters), starts.py, minimise.py (one L-BFGS-B
refinement), fit.py, diagnose.py (convergence, bounds, identification), bootstrap.py, holdout.py, evaluate.py,
varpro.py, isoflop.py (Chinchilla's Approach 2 from loss-at-budget tables), plot.py (plot_fits), data.py.

Refinement runs under threadpoolctl's one-BLAS-thread limit: L-BFGS-B calls BLAS thousands of times on
tiny matrices, and on a loaded 2-core machine OpenBLAS's spinning threads made 100 Chinchilla refits take
46 s instead of 2.3 s.

A law: `law.name`, `law.variables`, `law.params` (natural names), `law.theta_names` (fit space), `law.scales`,
`law.predict(params, X)`, `law.inverse(params, y, strict=True)`, `law.derived`. Add a form with
`register_law(Law(...))` (example in fitting/law.py), `register_law(LSELaw(...))` or `formula_law(text, vars)`.
"""

from costlaw.fitting.bootstrap import BootstrapResult, bootstrap
from costlaw.fitting.evaluate import Evaluation, evaluate_at
from costlaw.fitting.fit import FitResult, fit
from costlaw.fitting.forms import CHINCHILLA_GRID, chinchilla_optimal
from costlaw.fitting.formula import formula_law
from costlaw.fitting.holdout import HoldoutResult, holdout_largest, holdout_rows
from costlaw.fitting.law import Law, get_law, laws, register_law, unregister_law
from costlaw.fitting.lse import LSELaw, power_grid
from costlaw.fitting.objective import LOSSES, RESIDUALS
from costlaw.fitting.plot import plot_fits
from costlaw.fitting.varpro import varpro_fit

__all__ = ["BootstrapResult", "bootstrap", "FitResult", "fit", "HoldoutResult", "holdout_largest", "holdout_rows",
           "Law", "get_law", "laws", "register_law", "unregister_law", "CHINCHILLA_GRID", "chinchilla_optimal",
           "LSELaw", "power_grid", "LOSSES", "RESIDUALS", "plot_fits", "Evaluation", "evaluate_at", "formula_law",
           "varpro_fit"]
