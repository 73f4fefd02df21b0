"""`--where EXPR`: the part of a sweep a round submits (a study on one GPU runs its sizes over several rounds).

EXPR is costlaw's one expression language (costmodel/core/expr.py; `costlaw fit --where` reads the same) with a
sweep formula's names and functions (sweeps.formula), read against each run's own config, e.g.
`model.d_model <= 320`, `N < 5e6 and model.n_kv_heads == 1` or `model.kv_policy.method == 'snapkv'`. A selected
run brings its parent stages along, because a child cannot start from a parent that never ran.
"""

from __future__ import annotations

from costlaw.costmodel import ConfigError
from costlaw.sweeps.expand import lookup
from costlaw.sweeps.formula import compile_formula, evaluate

WHERE = "--where"


def select(runs, expr: str) -> set[str]:
    """Run ids of `runs` (PlannedRuns) whose config satisfies `expr`, plus their ancestors."""
    f = compile_formula(expr, WHERE, strings=True)
    by_id = {r.run_id: r for r in runs}
    chosen: set[str] = set()
    for r in runs:
        d = r.config.to_dict()
        if evaluate(f, lambda name, d=d: lookup(d, name, WHERE, {}, text=True), WHERE):
            rid = r.run_id
            while rid is not None and rid not in chosen:
                chosen.add(rid)
                rid = by_id[rid].parent_id
    if not chosen:
        raise ConfigError(WHERE, f"{expr!r} selects none of the {len(runs)} runs; loosen it or check field names "
                                 "with `costlaw sweep plan --json`")
    return chosen


def largest_first(runs) -> list:
    """`runs` ordered by training FLOPs, largest first (stable): packed on a GPU, the longest runs start
    first so the small ones fill in around them instead of a big one running alone at the end."""
    from costlaw.costmodel import c_train

    return sorted(runs, key=lambda r: -c_train(r.config.model, r.config.data.seq_len) * r.config.total_tokens)
