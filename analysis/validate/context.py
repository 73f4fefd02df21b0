"""Does a candidate's loss relative to the default carry over from the pretraining context to a longer one?

A law fitted on losses at one context and reused at another (the GQA paper's section 5.7, which `costlaw recommend`
relies on when a store has no law at the asked context) assumes it does. A store that holds a model at both
contexts (a pretraining run and its extension, `base_run_id`, same architecture) measures it: per width and seed,

    gap(T) = loss(candidate, T) - loss(reference, T),  change = gap(T_long) - gap(T_short),

where the reference is the multi-head default at the same width (n_kv = n_h; `reference` picks another pair).
The invariance holds where the changes are zero within their noise. Their noise is the val sets' sampling error
(four losses; an upper bound, since one val set scores all of them) and, with several seeds, the spread of one
config's change over seeds, which includes the extension's own noise. Candidates at one width and seed share the
reference's two runs, whose own noise moves all their changes together; the overall test counts those clusters
too (`ContextCheck.summary`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from costlaw.costmodel.core.errors import CostlawError

SQL = ("SELECT run_id, base_run_id, sweep, stage, seed, seq_len, family, d_model, n_layers, n_heads, n_kv_heads, "
       "head_dim, layout, params_non_embedding, tokenizer, val_loss, "
       "(SELECT max(e.value) FROM evals e WHERE e.run_id = r.run_id AND e.eval = 'val_loss' "
       "AND e.metric = 'loss_se') AS loss_se FROM runs r WHERE status = 'completed' AND val_loss IS NOT NULL")
ARCH = ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "layout")


@dataclass
class Shift:
    """One candidate at one width and seed, at both contexts, against the reference trained alike."""

    candidate: str  # "n_h,n_kv"
    d_model: int
    n_layers: int
    seed: int
    short: int  # the pretraining context
    long: int  # the extension's
    loss_short: float
    loss_long: float
    ref_short: float
    ref_long: float
    se: float | None  # the val sets' error of `change` (root sum of squares of the four)
    ref_key: tuple = ()  # the reference runs' (d_model, n_layers, head_dim, seed, short, long): pairs sharing it

    @property
    def gap_short(self) -> float:
        return self.loss_short - self.ref_short

    @property
    def gap_long(self) -> float:
        return self.loss_long - self.ref_long

    @property
    def change(self) -> float:
        return self.gap_long - self.gap_short

    def to_json(self) -> dict:
        return {"candidate": self.candidate, "d_model": self.d_model, "n_layers": self.n_layers, "seed": self.seed,
                "short": self.short, "long": self.long, "loss_short": self.loss_short, "loss_long": self.loss_long,
                "ref_short": self.ref_short, "ref_long": self.ref_long, "gap_short": self.gap_short,
                "gap_long": self.gap_long, "change": self.change, "se": self.se}


@dataclass
class ContextCheck:
    reference: str
    shifts: list[Shift]
    skipped: list[str] = field(default_factory=list)  # why some extension runs could not be paired
    tokenizers: tuple = ()  # the paired runs' (their losses' unit: analysis.figures.style.loss_unit)

    def by_candidate(self) -> dict[str, list[Shift]]:
        out: dict[str, list[Shift]] = {}
        for s in self.shifts:
            out.setdefault(s.candidate, []).append(s)
        return dict(sorted(out.items(), key=lambda kv: _pair(kv[0])))

    def seed_sd(self) -> float | None:
        """The pooled sd over seeds of one config's change (None with one seed per config)."""
        groups: dict[tuple, list[float]] = {}
        for s in self.shifts:
            groups.setdefault((s.candidate, s.d_model, s.n_layers, s.short, s.long), []).append(s.change)
        ss = sum(sum((x - sum(v) / len(v)) ** 2 for x in v) for v in groups.values() if len(v) > 1)
        dof = sum(len(v) - 1 for v in groups.values() if len(v) > 1)
        return math.sqrt(ss / dof) if dof else None

    def summary(self) -> dict:
        """Overall and per candidate. A candidate's mean change says which way its gap moved; across candidates the
        moves are compared as widening, change * sign(gap short) (> 0: the gap grew away from zero), whose mean is
        tested against zero, and how many gaps widened against the even odds of a two-sided sign test. A standard
        error is the larger of the changes' spread over pairs (sd / sqrt n) and the val sets' error of the mean,
        because a few widths of one candidate cannot estimate a spread alone.

        Overall, pairs at one width and seed share the reference's two runs, so that reference's luck moves all
        their changes together: they are one cluster. The overall line also counts clusters (`clusters`, those
        whose mean widened, a sign test over them) and takes the cluster-robust standard error (CR1) into the
        larger of the above; with one pair per cluster it equals the spread's."""
        from scipy import stats

        def one(shifts: list[Shift], values: list[float]) -> dict:
            n = len(values)
            mean = sum(values) / n
            sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1)) if n > 1 else None
            ses = [s.se for s in shifts if s.se is not None]
            val_se = math.sqrt(sum(e * e for e in ses)) / len(ses) if len(ses) == n else None
            parts = [x for x in (None if sd is None else sd / math.sqrt(n), val_se) if x is not None]
            widened = sum(_widening(s) > 0 for s in shifts)
            return {"n": n, "mean": mean, "sd": sd, "se_mean": max(parts) if parts else None, "val_se_mean": val_se,
                    "min": min(values), "max": max(values), "widened": widened,
                    "sign_test_p": float(stats.binomtest(widened, n, 0.5).pvalue)}

        overall = one(self.shifts, [_widening(s) for s in self.shifts])
        overall.update(self._clustered(overall["mean"]))
        if overall["se_mean_clustered"] is not None:
            overall["se_mean"] = max(overall["se_mean"] or 0.0, overall["se_mean_clustered"])
        se = overall["se_mean"]
        overall["holds"] = None if se is None else bool(abs(overall["mean"]) <= 2 * se)
        overall["seed_sd_change"] = self.seed_sd()
        return {"reference": self.reference, "overall": overall,
                "candidates": {k: one(v, [s.change for s in v]) for k, v in self.by_candidate().items()}}

    def _clustered(self, mean: float) -> dict:
        """The overall widening's clusters (pairs sharing a reference): how many, how many widened on average, the
        sign test over them, and the cluster-robust standard error of the mean (None with one cluster)."""
        from scipy import stats

        groups: dict[tuple, list[float]] = {}
        for s in self.shifts:
            groups.setdefault(s.ref_key, []).append(_widening(s))
        g, n = len(groups), len(self.shifts)
        widened = sum(sum(v) > 0 for v in groups.values())
        se = (math.sqrt(g / (g - 1) * sum(sum(x - mean for x in v) ** 2 for v in groups.values())) / n
              if g > 1 else None)
        return {"clusters": g, "clusters_widened": widened,
                "cluster_sign_test_p": float(stats.binomtest(widened, g, 0.5).pvalue), "se_mean_clustered": se}

    def to_json(self) -> dict:
        return {**self.summary(), "shifts": [s.to_json() for s in self.shifts], "skipped": self.skipped}


def _widening(s: Shift) -> float:
    return s.change if s.gap_short >= 0 else -s.change


def _pair(label: str) -> tuple[int, int]:
    h, k = label.split(",")
    return -int(h), -int(k)


def check_reference(reference: str | None) -> tuple[int, int] | None:
    if reference is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", reference)
    if not m or int(m.group(2)) == 0 or int(m.group(1)) % int(m.group(2)):
        raise CostlawError(f"--reference: {reference!r} is not a GQA pair 'n_h,n_kv' (n_kv dividing n_h); "
                           "e.g. --reference 8,8")
    return int(m.group(1)), int(m.group(2))


def context_shifts(runs, reference: str | None = None) -> ContextCheck:
    """Pair every same-architecture extension in `runs` (a frame of `SQL`'s columns) with its pretraining run,
    and each candidate with the reference at the same width, seed and pair of contexts."""
    ref_pair = check_reference(reference)
    by_id = runs.set_index("run_id")
    rows, skipped, used = [], [], set()
    for _, x in runs[runs["base_run_id"].notna() & (runs["family"] == "gqa")].iterrows():
        if x["base_run_id"] not in by_id.index:
            skipped.append(f"{x['run_id']}: its pretraining run {x['base_run_id']} is not in the store")
            continue
        p = by_id.loc[x["base_run_id"]]
        if any(p[k] != x[k] for k in ARCH) or not int(x["seq_len"]) > int(p["seq_len"]):
            continue  # another architecture (a hybrid, a compressed policy) or not a longer context
        rows.append({"pair": (int(x["n_heads"]), int(x["n_kv_heads"])), "d_model": int(x["d_model"]),
                     "n_layers": int(x["n_layers"]), "head_dim": int(x["head_dim"]), "seed": int(x["seed"]),
                     "short": int(p["seq_len"]), "long": int(x["seq_len"]), "loss_short": float(p["val_loss"]),
                     "loss_long": float(x["val_loss"]), "se_short": _num(p["loss_se"]),
                     "se_long": _num(x["loss_se"])})
        used |= {x["run_id"], x["base_run_id"]}
    if not rows:
        raise CostlawError("--db: no pretraining run with a same-architecture extension to a longer "
                           "context (base_run_id); train an extend stage and `costlaw ingest` it first")
    if ref_pair is None:
        mha: dict[tuple, int] = {}
        for r in rows:
            if r["pair"][0] == r["pair"][1]:
                mha[r["pair"]] = mha.get(r["pair"], 0) + 1
        if not mha:
            raise CostlawError("--reference: no multi-head (n_kv = n_h) extension to compare with; pass "
                               "--reference n_h,n_kv")
        ref_pair = max(mha, key=lambda k: (mha[k], k[0]))
    ref = {(r["d_model"], r["n_layers"], r["head_dim"], r["seed"], r["short"], r["long"]): r
           for r in rows if r["pair"] == ref_pair}
    if not ref:
        raise CostlawError(f"--reference: no extension pair of {ref_pair[0]},{ref_pair[1]} in the store")
    shifts = []
    for r in rows:
        if r["pair"] == ref_pair:
            continue
        key = (r["d_model"], r["n_layers"], r["head_dim"], r["seed"], r["short"], r["long"])
        d = ref.get(key)
        if d is None:
            skipped.append(f"{r['pair'][0]},{r['pair'][1]} d {r['d_model']} L {r['n_layers']} seed {r['seed']}: "
                           "no reference run at that width, seed and contexts")
            continue
        ses = [r["se_short"], r["se_long"], d["se_short"], d["se_long"]]
        shifts.append(Shift(f"{r['pair'][0]},{r['pair'][1]}", r["d_model"], r["n_layers"], r["seed"], r["short"],
                            r["long"], r["loss_short"], r["loss_long"], d["loss_short"], d["loss_long"],
                            None if None in ses else math.sqrt(sum(e * e for e in ses)), key))
    if not shifts:
        raise CostlawError(f"--db: only the reference {ref_pair[0]},{ref_pair[1]} has extensions at a width and seed; "
                           "train others")
    shifts.sort(key=lambda s: (_pair(s.candidate), s.d_model, s.n_layers, s.seed))
    toks = runs.loc[runs["run_id"].isin(used), "tokenizer"].dropna() if "tokenizer" in runs.columns else ()
    return ContextCheck(f"{ref_pair[0]},{ref_pair[1]}", shifts, skipped, tuple(sorted(set(toks))))


def _num(v) -> float | None:
    return None if v is None or v != v else float(v)


def check_stores(db, sweep: str | None = None, reference: str | None = None) -> ContextCheck:
    from costlaw.analysis.recommend.fromstore import runs_sql
    from costlaw.analysis.store.union import as_list, query_stores

    runs_sql(sweep)  # checks the sweep name before it goes into SQL
    df = query_stores(as_list(db), SQL + (f" AND sweep = '{sweep}'" if sweep else ""))
    if not len(df):
        raise CostlawError("--db: no completed run with a val loss" + (f" in sweep {sweep!r}" if sweep else ""))
    return context_shifts(df, reference)


def context_evidence(db, sweep: str | None = None) -> str:
    """What a store's own extension pairs say of the assumption recommend makes when it uses laws at a longer
    context than they were fitted at; a clause of its note."""
    try:
        c = check_stores(db, sweep)
    except CostlawError:
        return "no extension pair in this store tests it (costlaw validate --mode context)"
    o = c.summary()["overall"]
    verdict = "within noise" if o["holds"] else "beyond noise" if o["holds"] is not None else "noise unknown"
    return (f"this store's extensions measured it up to seq_len {max(s.long for s in c.shifts)}: against "
            f"{c.reference}, the gap widened in {o['widened']} of {o['n']} pairs ({o['clusters_widened']} of the "
            f"{o['clusters']} reference runs they share), by {o['mean']:+.4f} nats on average (se {_f(o['se_mean'])}, "
            f"{verdict}; costlaw validate --mode context)")


def render_text(c: ContextCheck) -> str:
    from costlaw.costmodel.core.units import table

    s = c.summary()
    o = s["overall"]
    rows = [{"candidate": x.candidate, "width": f"d {x.d_model} L {x.n_layers}", "seed": x.seed,
             "context": f"{x.short} -> {x.long}", "gap short": f"{x.gap_short:+.4f}", "gap long": f"{x.gap_long:+.4f}",
             "change": f"{x.change:+.4f}", "val se": _f(x.se)} for x in c.shifts]
    per = [{"candidate": k, "pairs": v["n"], "mean change": f"{v['mean']:+.4f}", "se": _f(v["se_mean"]),
            "min": f"{v['min']:+.4f}", "max": f"{v['max']:+.4f}", "gap widened": f"{v['widened']}/{v['n']}"}
           for k, v in s["candidates"].items()]
    lines = [f"the gap to {c.reference} at the pretraining context and after extension, per width and seed "
             "(change = gap long - gap short, nats):", "", table(rows), "", "per candidate:", "", table(per), "",
             f"overall: {o['n']} pairs; the gap widened (grew away from zero) in {o['widened']} (sign test p "
             f"{o['sign_test_p']:.3g}), by {o['mean']:+.4f} on average (se {_f(o['se_mean'])}); {clusters(o)}; "
             f"seed sd of a change {_f(o['seed_sd_change'])}; invariance {verdict(o)}"]
    lines += [f"skipped: {w}" for w in c.skipped]
    return "\n".join(lines)


def clusters(overall: dict) -> str:
    """The overall line's clause on the references its pairs share."""
    return (f"the pairs share {overall['clusters']} reference runs, whose pairs widened on average in "
            f"{overall['clusters_widened']} (sign test p {overall['cluster_sign_test_p']:.3g}; cluster-robust se "
            f"{_f(overall['se_mean_clustered'])})")


def verdict(overall: dict) -> str:
    """summary()["overall"]'s verdict on the invariance, as the text and the figure say it."""
    return ("cannot say (one pair and no val-set error)" if overall["holds"] is None else
            "holds within 2 se" if overall["holds"] else "does not hold within 2 se")


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"
