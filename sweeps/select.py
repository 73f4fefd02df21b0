"""`--where EXPR`: the part of a sweep a round submits (a study on one GPU runs its sizes over several rounds).

EXPR is costlaw's one expression language (costmodel/core/expr.py; `costlaw fit --where` reads the same) with a
sweep formula's names and functions (sweeps.formula), read against each run's own config, e.g.
`model.d_model <= 320`, `N < 5e6 and model.n_kv_heads == 1`, `model.kv_policy.method == 'snapkv'` or
`stage != 'compress' or sparse == 'none'` (compress only the dense parents; names: sweeps.formula). A selected
run brings its parent stages along, because a child cannot start from a parent that never ran.
"""

from __future__ import annotations

from costlaw.costmodel import ConfigError
from costlaw.sweeps.expand import lookup
from costlaw.sweeps.formula import compile_formula, evaluate

WHERE = "--where"


def select(runs, expr: str, where: str = WHERE) -> set[str]:
    """Run ids of `runs` (PlannedRuns) whose config satisfies `expr`, plus their ancestors; `where` names the flag
    or key the expression came from in errors."""
    f = compile_formula(expr, where, strings=True)
    by_id = {r.run_id: r for r in runs}
    chosen: set[str] = set()
    for r in runs:
        d = r.config.to_dict()
        if evaluate(f, lambda name, d=d: lookup(d, name, where, {}, text=True), where):
            rid = r.run_id
            while rid is not None and rid not in chosen:
                chosen.add(rid)
                rid = by_id[rid].parent_id
    if not chosen:
        raise ConfigError(where, f"{expr!r} selects none of the {len(runs)} runs; loosen it or check field names "
                                 "with `costlaw sweep plan --json`")
    return chosen


def largest_first(runs, root=None) -> list:
    """`runs` (PlannedRuns or fused groups) ordered by the expected GPU time of the longest chain each one starts
    (its own time plus its longest line of later-stage runs among `runs`), longest first (stable): packed on a
    GPU, the longest work starts first so the small runs fill in around it instead of a big one running alone at
    the end, and a pretraining run whose extensions and compressions take long starts before an equal run with
    nothing after it. Expected time is training FLOPs over the FLOP/s that runs already finished under `root`
    reached at their size (`throughput`: small models reach a far smaller share of the GPU, so FLOPs alone rank
    them too short); FLOPs alone where fewer than two sizes have finished. A fused group trains its members side
    by side, so it takes as long as one of them."""
    from costlaw.costmodel import c_train, params_non_embedding
    from costlaw.sweeps.fuse import members

    rate = throughput(root) if root is not None else None

    def seconds(unit) -> float:
        r = members(unit)[0]
        flops = c_train(r.config.model, r.config.data.seq_len) * r.config.total_tokens
        return flops / rate(params_non_embedding(r.config.model)) if rate else flops

    unit_of = {m.run_id: u for u in runs for m in members(u)}
    after: dict[int, list] = {}
    for u in runs:
        parents = {id(p): p for m in members(u) if (p := unit_of.get(m.parent_id)) is not None and p is not u}
        for key in parents:
            after.setdefault(key, []).append(u)
    chain: dict[int, float] = {}

    def longest(u) -> float:  # recursion as deep as the spec has stages
        if id(u) not in chain:
            chain[id(u)] = seconds(u) + max((longest(c) for c in after.get(id(u), ())), default=0.0)
        return chain[id(u)]

    return sorted(runs, key=lambda u: -longest(u))


ORDERS = ("longest", "chains")


def start_order(pending: list, order: str, later: set) -> list:
    """`pending` (in largest_first's order) as the local executor tries them when a slot frees. `longest` keeps
    it. `chains` puts first, in that order, the runs of a later stage whose parent is not among `later` (this
    submission's runs not yet completed): a submission cut short (a GPU lent for minutes) then leaves whole
    chains of pretraining, extension and compression rather than many pretraining runs whose later stages never
    started."""
    if order == "longest":
        return list(pending)
    if order != "chains":
        raise ValueError(f"order {order!r}: one of {', '.join(ORDERS)}")
    return sorted(pending, key=lambda r: r.parent_id is None or r.parent_id in later)


def throughput(root):
    """N -> the training FLOP/s a run of N non-embedding parameters reached under `root` (log FLOP/s linear in
    log N, least squares over the completed runs' summaries), or None with fewer than two sizes finished."""
    import json
    import math
    from pathlib import Path

    pts = []
    for p in Path(root).glob("runs/*/summary.json"):
        try:
            s = json.loads(p.read_text())
            n, tps = s["costs"]["params_non_embedding"], s["tokens_per_s"]
            f = s["costs"]["c_train_flops_per_token"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a run still writing, or one from before these fields: it only misses from the estimate
        if s.get("status") == "completed" and n and tps and f and tps > 0:
            pts.append((math.log(n), math.log(tps * f)))
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    b = min(max(b, 0.0), 2.0)  # larger models never reach fewer FLOP/s; a wild slope from two noisy points is cut
    return lambda n: math.exp(my + b * (math.log(n) - mx))
