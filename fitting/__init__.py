"""Scaling laws and robust fitting (numpy + scipy; never torch).

Fit in log space (residuals log y - log ŷ) with the log-sum-exp parameterisation, a Huber loss (delta = 1e-3)
summed over points, a vectorised grid of starts of which the best distinct ones are refined with L-BFGS-B
(analytic gradient, tolerances that do not stall on small objectives), then bootstrap by resampling runs
and check extrapolation by leaving the largest runs out.

    from costlaw.fitting import get_law, fit, bootstrap, holdout_largest
    law = get_law("gqa-size")                  # L(N) = (a/N)^b + E; also power-plus-constant, chinchilla, compute
    res = fit(law, N, L)                       # N (n,) or (n, 1), L (n,) losses
    res.params, res.objective, res.grad_norm, res.r2, res.n_starts, res.n_at_best, res.success, res.to_dict()
    res.r2_ceiling                             # the most R² any law reaches where N repeats (seeds); else None
    boot = bootstrap(law, N, L, res, n=1000, seed=0)                # .samples, .stderr, .ci95, .to_dict()
    n_star = law.inverse(boot.param_samples(), 2.8, strict=False)   # N* per resample (inf: unreachable)
    lo, hi = boot.band(N_grid)                                      # 95% band of the prediction
    ho = holdout_largest(law, N, L, k=2)       # .rows (x, y_true, y_pred, rel_error), .max_abs_rel_error

Modules: law.py (Law, the registry), lse.py (LSELaw: sums of power terms in LSE form), forms.py (the
built-in laws: power-plus-constant, gqa-size, chinchilla, compute, linear), objective.py (huber / l2 / l1),
fit.py, bootstrap.py, holdout.py, plot.py (plot_fits), data.py (input checks).

Refinement runs under threadpoolctl's one-BLAS-thread limit: L-BFGS-B calls BLAS thousands of times on
tiny matrices, and on a loaded 2-core machine OpenBLAS's spinning threads made 100 Chinchilla refits take
46 s instead of 2.3 s.

A law: `law.name`, `law.variables`, `law.params` (natural names), `law.theta_names` (fit space),
`law.predict(params, X)`, `law.inverse(params, y, strict=True)`, `law.derived`. Add a form with
`register_law(Law(...))` (example in fitting/law.py) or `register_law(LSELaw(...))`.
"""

from costlaw.fitting.bootstrap import BootstrapResult, bootstrap
from costlaw.fitting.fit import FitResult, fit
from costlaw.fitting.forms import CHINCHILLA_GRID, chinchilla_optimal
from costlaw.fitting.holdout import HoldoutResult, holdout_largest
from costlaw.fitting.law import Law, get_law, laws, register_law, unregister_law
from costlaw.fitting.lse import LSELaw, power_grid
from costlaw.fitting.objective import LOSSES
from costlaw.fitting.plot import plot_fits

__all__ = ["BootstrapResult", "bootstrap", "FitResult", "fit", "HoldoutResult", "holdout_largest", "Law",
           "get_law", "laws", "register_law", "unregister_law", "CHINCHILLA_GRID", "chinchilla_optimal", "LSELaw",
           "power_grid", "LOSSES", "plot_fits"]
