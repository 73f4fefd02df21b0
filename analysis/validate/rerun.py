"""The same runs trained twice: how far one run's loss moves when nothing in its config changes.

Two stores holding runs of one run id (the same config, seed, data order and code: a sweep submitted again, on the
same GPU model or another) measure the recipe's noise at a fixed seed, which a second seed mixes with the seed's
own effect. Per run the val losses' difference; over runs, one run's noise sd = sd(differences) / sqrt 2 (the
two trainings are alike and independent) against the val sets' sampling error, and the mean difference (a
shift common to every run: another GPU, torch or kernel). The logged training losses say *when* the two runs
parted: the first step where their difference, averaged over `window` logged steps, exceeds `threshold` nats,
and the difference at fixed shares of training.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from costlaw.costmodel.core.errors import CostlawError

RUNS = ("SELECT run_id, stage, family, d_model, n_layers, n_heads, n_kv_heads, seed, seq_len, steps, val_loss, "
        "(SELECT max(e.value) FROM evals e WHERE e.run_id = r.run_id AND e.eval = 'val_loss' "
        "AND e.metric = 'loss_se') AS loss_se FROM runs r WHERE status = 'completed' AND val_loss IS NOT NULL")
STEPS = "SELECT run_id, step, loss FROM steps WHERE loss IS NOT NULL ORDER BY run_id, step"
SHARES = (0.25, 0.5, 0.75, 1.0)


@dataclass
class Pair:
    """One run id completed in both stores."""

    run_id: str
    label: str  # e.g. "pretrain gqa (8,2) d 160 L 3 T 2048 seed 0"
    stage: str
    steps: int
    loss_a: float
    loss_b: float
    se: float | None  # the val sets' error of the difference (both losses' errors, root sum of squares)
    parted_at: int | None  # first logged step where the smoothed training losses differ by > threshold
    at_share: dict[float, float | None] = field(default_factory=dict)  # share of training -> |smoothed diff|
    curve: list[tuple[float, float]] = field(default_factory=list, repr=False)  # (share, smoothed b - a) per step

    @property
    def diff(self) -> float:
        return self.loss_b - self.loss_a

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "label": self.label, "stage": self.stage, "steps": self.steps,
                "loss_a": self.loss_a, "loss_b": self.loss_b, "diff": self.diff, "se": self.se,
                "parted_at": self.parted_at, "train_diff_at_share": {str(k): v for k, v in self.at_share.items()}}


@dataclass
class Rerun:
    stores: tuple[str, str]
    pairs: list[Pair]
    threshold: float
    window: int
    only_a: int = 0  # completed run ids in one store only
    only_b: int = 0

    def summary(self) -> dict:
        def one(ps: list[Pair]) -> dict:
            d = [p.diff for p in ps]
            n = len(d)
            mean = sum(d) / n
            sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else None
            med = _median([p.se for p in ps if p.se is not None])
            val_se = None if med is None else med / math.sqrt(2)  # one loss's, the median run's
            noise = None if sd is None else sd / math.sqrt(2)
            big = max(ps, key=lambda p: abs(p.diff))
            parted = [p.parted_at / p.steps for p in ps if p.parted_at is not None and p.steps]
            return {"n": n, "mean_diff": mean, "se_mean_diff": None if sd is None else sd / math.sqrt(n),
                    "sd_diff": sd, "run_noise_sd": noise, "median_abs_diff": _median([abs(x) for x in d]),
                    "max_abs_diff": abs(big.diff), "max_run": big.label, "val_se": val_se,
                    "noise_over_val_se": None if noise is None or not val_se else noise / val_se,
                    "parted": len(parted), "median_parted_share": _median(parted),
                    "median_train_diff_at_share": {str(s): _median([p.at_share[s] for p in ps
                                                                    if p.at_share.get(s) is not None])
                                                   for s in SHARES}}

        stages: dict[str, list[Pair]] = {}
        for p in self.pairs:
            stages.setdefault(p.stage, []).append(p)
        return {"stores": list(self.stores), "threshold": self.threshold, "window": self.window,
                "only_a": self.only_a, "only_b": self.only_b, "overall": one(self.pairs),
                "stages": {k: one(v) for k, v in sorted(stages.items())}}

    def to_json(self) -> dict:
        return {**self.summary(), "pairs": [p.to_json() for p in self.pairs]}


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _label(r) -> str:
    shape = f"({int(r['n_heads'])},{int(r['n_kv_heads'])})" if r["family"] != "compressed" else ""
    return (f"{r['stage']} {r['family']} {shape} d {int(r['d_model'])} L {int(r['n_layers'])} "
            f"T {int(r['seq_len'])} seed {int(r['seed'])}").replace("  ", " ")


def _num(v) -> float | None:
    return None if v is None or v != v else float(v)


def parting(steps_a, steps_b, threshold: float, window: int, steps: int):
    """(first step where the windowed mean of the two runs' training-loss difference exceeds `threshold`, or None;
    that |mean difference| at each share of SHARES of the steps both logged; the signed mean difference at each
    logged step as (step / steps, difference)). The runs read the same batches, so a batch's own noise cancels."""
    m = steps_a.merge(steps_b, on="step", suffixes=("_a", "_b")).sort_values("step")
    if not len(m):
        return None, {s: None for s in SHARES}, []
    signed = (m["loss_b"] - m["loss_a"]).rolling(window, center=True, min_periods=1).mean()
    smooth = signed.abs()
    over = m["step"][smooth > threshold]
    last = len(m) - 1
    at = {s: float(smooth.iloc[min(last, round(s * last))]) for s in SHARES}
    total = steps or int(m["step"].iloc[-1]) or 1
    curve = [(int(a) / total, float(b)) for a, b in zip(m["step"], signed)]
    return (int(over.iloc[0]) if len(over) else None), at, curve


def rerun_pairs(runs_a, runs_b, steps_a, steps_b, stores=("a", "b"), threshold: float = 0.02,
                window: int = 5) -> Rerun:
    """Pair the run ids completed in both frames (RUNS' columns) and compare them (steps_*: STEPS' columns)."""
    if not threshold > 0:
        raise CostlawError(f"--threshold: {threshold} must be > 0 nats (e.g. 0.02)")
    if window < 1:
        raise CostlawError(f"--window: {window} must be >= 1 logged steps (e.g. 5)")
    b = runs_b.set_index("run_id")
    common = [r for _, r in runs_a.iterrows() if r["run_id"] in b.index]
    if not common:
        raise CostlawError(f"--db: {stores[0]} and {stores[1]} share no completed run id; --mode rerun compares "
                           "the same runs trained twice (one spec, seed and root submitted again)")
    by_a = dict(tuple(steps_a.groupby("run_id"))) if len(steps_a) else {}
    by_b = dict(tuple(steps_b.groupby("run_id"))) if len(steps_b) else {}
    pairs = []
    for r in common:
        rb = b.loc[r["run_id"]]
        se_a, se_b = _num(r["loss_se"]), _num(rb["loss_se"])
        steps = int(_num(r["steps"]) or 0)
        parted, at, curve = None, {s: None for s in SHARES}, []
        if r["run_id"] in by_a and r["run_id"] in by_b:
            parted, at, curve = parting(by_a[r["run_id"]][["step", "loss"]], by_b[r["run_id"]][["step", "loss"]],
                                        threshold, window, steps)
        pairs.append(Pair(r["run_id"], _label(r), r["stage"], steps, float(r["val_loss"]), float(rb["val_loss"]),
                          None if se_a is None or se_b is None else math.hypot(se_a, se_b), parted, at, curve))
    pairs.sort(key=lambda p: (p.stage != "pretrain", p.label))
    ids_a, ids_b = set(runs_a["run_id"]), set(b.index)
    return Rerun(tuple(stores), pairs, threshold, window, len(ids_a - ids_b), len(ids_b - ids_a))


def check_rerun(dbs, threshold: float = 0.02, window: int = 5) -> Rerun:
    from costlaw.analysis.store.frames import query_df
    from costlaw.analysis.store.union import as_list

    dbs = as_list(dbs)
    if len(dbs) != 2:
        raise CostlawError(f"--db: --mode rerun compares two results files, got {len(dbs)}; give --db FIRST "
                           "--db RERUN")
    frames = [(query_df(db, RUNS, engine="pandas"), query_df(db, STEPS, engine="pandas")) for db in dbs]
    return rerun_pairs(frames[0][0], frames[1][0], frames[0][1], frames[1][1], tuple(dbs), threshold, window)


def render_text(r: Rerun) -> str:
    from costlaw.costmodel.core.units import table

    s = r.summary()
    rows = [{"run": p.label, "first": f"{p.loss_a:.4f}", "rerun": f"{p.loss_b:.4f}", "difference": f"{p.diff:+.4f}",
             "se of difference": _f(p.se), "parted at": "-" if p.parted_at is None else f"{p.parted_at} of {p.steps}"}
            for p in r.pairs]
    per = [{"stage": k, "runs": v["n"], "mean diff": f"{v['mean_diff']:+.4f}", "run noise sd": _f(v["run_noise_sd"]),
            "median |diff|": _f(v["median_abs_diff"]), "max |diff|": _f(v["max_abs_diff"]),
            "/ val se": _f(v["noise_over_val_se"], 1), "parted": f"{v['parted']}/{v['n']}"}
           for k, v in [("all", s["overall"]), *s["stages"].items()]]
    o = s["overall"]
    share = ", ".join(f"{float(k):.0%} {_f(v)}" for k, v in o["median_train_diff_at_share"].items())
    lines = [f"the same run ids in {r.stores[0]} (first) and {r.stores[1]} (rerun); val loss, nats:", "",
             table(rows), "", table(per), "",
             f"one run's noise at a fixed seed: sd {_f(o['run_noise_sd'])} nats (sd of the differences / sqrt 2), "
             f"{_f(o['noise_over_val_se'], 1)}x the val set's error; mean shift {o['mean_diff']:+.4f} "
             f"(se {_f(o['se_mean_diff'])})",
             f"training losses (mean over {r.window} logged steps) parted by > {r.threshold} nats in {o['parted']} of "
             f"{o['n']} runs, at {_f(o['median_parted_share'], 2)} of their steps in the median; median |difference| "
             f"at each share of training: {share}"]
    if r.only_a or r.only_b:
        lines.append(f"not compared: {r.only_a} completed runs only in the first, {r.only_b} only in the rerun")
    return "\n".join(lines)


def _f(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
