"""`build_report(db, out)`: fits, recommendation, cross-validation, figures, frontier, runs and environment of a
results file (or of several read as one), written as `out/index.html` (self-contained) and `out/report.md`
(figures under `out/figures/`), plus the fits as `out/fits.json` (reusable with `costlaw recommend --fits`) and
the winners' TOML under `out/`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import write_atomic
from costlaw.costmodel.core.units import binary_bytes, si

PAPER_CONTEXTS = (8192, 16384, 32768, 65536, 131072)


@dataclass
class ReportResult:
    out: Path
    html: Path
    markdown: Path
    fits: Path | None
    figures: list[Path] = field(default_factory=list)  # PNGs drawn (each with an SVG beside it)
    skipped: list[str] = field(default_factory=list)  # figures not drawn, with why
    recommendation: object | None = None
    target: float | None = None
    target_note: str = ""
    tomls: list[Path] = field(default_factory=list)
    fit_status: dict = field(default_factory=dict)  # laws reused from the store's fits table or fitted (FitSet)
    validation: object | None = None  # analysis.validate.Validation (leave one config out), when it ran
    validation_note: str | None = None  # why it did not
    context_check: object | None = None  # analysis.validate.context.ContextCheck, when the store has extensions


def default_target(fs) -> tuple[float | None, str]:
    """The lowest loss that every fitted GQA/hybrid candidate reached in its own ladder, rounded up to 3 decimals,
    so each reaches it inside its trained range (candidates whose fitted floor E lies above their own best run,
    a law that cannot reproduce its data's best, are left out of the choice; they show as unreachable)."""
    import math

    reached = []
    for c in fs.candidates:
        losses = [p["loss"] for p in c.ladder if "loss" in p]
        if c.fitted and not c.base and losses and c.params.get("E", -math.inf) < min(losses):
            reached.append(min(losses))
    # the laws a recommendation may use set the target when there are any: a weak law's own best run is no bar
    strong = [min(p["loss"] for p in c.ladder if "loss" in p) for c in fs.candidates
              if c.fitted and not c.base and not c.weak and any("loss" in p for p in c.ladder)
              and c.params.get("E", -math.inf) < min(p["loss"] for p in c.ladder if "loss" in p)]
    reached = strong or reached
    if not any(c.fitted and not c.base for c in fs.candidates):
        why = "; ".join(f"{c.label}: {c.reason}" for c in fs.candidates if not c.base and c.reason)
        return None, "no candidate has a fitted law" + (f" ({why})" if why else "") + ", so no target loss could " \
                     "be chosen and nothing recommended"
    if not reached:
        return None, "no fitted candidate's law reaches its own best run, so no target loss could be chosen; pass " \
                     "--target-loss"
    t = math.ceil(max(reached) * 1000) / 1000
    return t, (f"target loss {t:g} chosen automatically: the lowest loss that every fitted candidate reached in "
               "its own ladder (pass --target-loss to choose)")


def build_report(db, out, *, target: float | None = None, contexts=None, fits=None, objective=None,
                 standard: str = "d/d_h,8", n_boot: int = 200, seed: int = 0, candidates: str = "all",
                 progress: Callable[[str], None] | None = None, sweep: str | None = None,
                 refit: bool = False, level: float = 0.9, allow_weak: bool = False, allow_outside: bool = False,
                 validate: bool = True) -> ReportResult:
    """See the module doc. `db`: a results file or a list of them (read as one). `fits`: a FitSet to use instead of
    fitting the store (the quickstart passes the one it printed its recommendation from). Otherwise each law the
    store's fits table holds for the same runs and options is reused and the others are fitted and stored there
    (`refit`: all fitted again), as by `costlaw recommend --db`. `sweep`: only that sweep's runs (a results file
    that also holds other studies'). `level`, `allow_weak`, `allow_outside`: as recommend's --level,
    --allow-weak-laws, --allow-outside-envelope. `validate`: leave each config out and report the coverage of
    the intervals (`costlaw validate`), with its figure."""
    from costlaw.analysis import figures as F
    from costlaw.analysis.figures.style import loss_unit_of
    from costlaw.analysis.frontier import pareto_sets, points_from
    from costlaw.analysis.objective import Objective
    from costlaw.analysis.recommend import fit_store, kv_policy_rows, load_runs, recommend
    from costlaw.analysis.recommend.candidates import fit_status_line
    from costlaw.analysis.recommend.fromstore import stores_text
    from costlaw.analysis.recommend.guards import R2_MIN
    from costlaw.analysis.report.data import environment, labelled_runs, position_frame, steps_frame
    from costlaw.analysis.report.render import to_html, to_markdown
    from costlaw.analysis.store.union import as_list

    say = progress or (lambda _m: None)
    out = Path(out)
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    contexts = list(contexts or PAPER_CONTEXTS)
    objective = objective or Objective()
    dbs = as_list(db)
    runs = load_runs(dbs, sweep)
    if not len(runs):
        raise CostlawError(f"--db: {', '.join(dbs)} {'has' if len(dbs) == 1 else 'have'} no completed runs"
                           + (f" in sweep {sweep!r}" if sweep else "")
                           + "; run a sweep and `costlaw ingest` its root first")
    runs = labelled_runs(runs)
    say(f"{len(runs)} completed runs")
    notes: list[str] = []
    if fits is None:
        try:
            say(f"laws (bootstrap {n_boot})")
            fits = fit_store(dbs, n_boot=n_boot, seed=seed, progress=say, sweep=sweep, refit=refit,
                             context=max(contexts))
        except CostlawError as e:
            notes.append(f"no laws fitted: {e}")
    res = ReportResult(out, out / "index.html", out / "report.md", None)
    if fits is not None:
        res.fits = fits.save(out / "fits.json")
        res.fit_status = dict(fits.fit_status)
    rec = None
    if fits is not None:
        if target is None:
            target, res.target_note = default_target(fits)
        else:
            res.target_note = f"target loss {target:g} (given)"
        if target is not None:
            try:
                rec = recommend(fits, target, contexts, objective, candidates=candidates, standard=standard,
                                level=level, allow_weak=allow_weak, allow_outside=allow_outside)
            except CostlawError as e:
                if res.target_note.endswith("(given)"):
                    raise
                notes.append(f"no recommendation: {e}")
    res.recommendation, res.target = rec, target

    unit = loss_unit_of(runs)

    def skip(name: str, why: str):
        """A figure with nothing to draw: its place in the report says why instead."""
        res.skipped.append(f"{name}: {why}")
        return ("p", f"Figure {name} not drawn: {why}.")

    def figure(name: str, caption: str, fn, *a, **kw):
        try:
            png, _svg = fn(*a, path=figdir / name, **kw)
        except CostlawError as e:
            return skip(name, str(e).removeprefix(f"figure {name}: "))
        res.figures.append(png)
        say(f"figure {png.name}")
        return ("figure", str(png), caption)

    if validate and n_boot >= 2:
        from costlaw.analysis.validate import validate as cross_validate

        try:
            say("cross-validation: leave each config out")
            res.validation = cross_validate(runs, level=level, n_boot=n_boot, seed=seed, source=stores_text(dbs),
                                            progress=say)
        except CostlawError as e:
            res.validation_note = str(e).removeprefix("--db: ")
    elif validate:
        res.validation_note = "not run: --bootstrap 0 gives no intervals to check"
    else:
        res.validation_note = "not run (--no-validate)"
    if validate:
        import contextlib

        from costlaw.analysis.validate.context import check_stores

        with contextlib.suppress(CostlawError):  # no extension pairs: nothing to say of a law at another context
            res.context_check = check_stores(dbs, sweep)

    figs = []
    if fits is not None:
        figs.append(figure("law-curves", "Loss vs non-embedding parameters per candidate: ladder runs (points), "
                           "fitted L(N) = (a/N)^b + E (lines; dashed: a weak law, which may not win) and bootstrap "
                           "95% bands.", F.law_curves, fits, loss_unit=unit))
    else:
        figs.append(skip("law-curves", "no laws were fitted, so there are none to draw"))
    figs.append(figure("loss-vs-heads", "Loss vs query heads at one model shape: each head count's mean over its "
                       "runs (bars: ±1 sd where seeds repeat). The power-plus-constant fit a*n_h^b + c (the GQA "
                       f"paper's App. I form) to the means is drawn only where it is a law by recommend's bar: more "
                       f"head counts than its 3 parameters and R² >= {R2_MIN}.", F.loss_vs_heads, runs,
                       loss_unit=unit))
    if rec is not None and any(rec.winner(T) is not None for T in rec.contexts):
        figs.append(figure("cost-bars", f"Inference memory and FLOPs per token at target loss {target:g}: the "
                           "standard config vs each context's recommended config, split into the time-invariant "
                           "part (weights, 2N) and the part growing with context (KV cache, attention).",
                           F.cost_bars, F.bars_frame(rec), dtype=objective.dtype))
    else:
        figs.append(skip("cost-bars", "no context has a recommended config to compare with the standard (see "
                                      "Recommendation)"))
    kv = kv_policy_rows(dbs, sweep)
    pts = points_from(runs, kv, sorted({contexts[0], contexts[-1]}), objective.dtype)
    for T in sorted(pts["context"].unique()):
        figs.append(figure(f"frontier-{T}", f"Loss vs inference memory and FLOPs per token at context {T}, every "
                           "run (and its measured KV policies) by family; lines: each family's Pareto set; rings: "
                           "the Pareto set across families.", F.frontier, pts, context=int(T), loss_unit=unit))
    if res.validation is not None:
        from costlaw.analysis.validate.figure import validation_figure

        figs.append(figure("validation", f"Each config left out in turn and predicted by the law refitted without "
                           f"it: measured vs predicted loss of every left-out run, bars: its {100 * level:g}% interval "
                           "for a new run.", validation_figure, res.validation, loss_unit=unit))
    else:
        figs.append(skip("validation", f"cross-validation {res.validation_note}"))
    steps = steps_frame(dbs, runs)
    figs.append(figure("training-curves", "Training loss vs tokens seen: one panel per config, one line per run, "
                       "coloured by its size N (non-embedding parameters).", F.training_curves, steps,
                       loss_unit=unit))
    pos = position_frame(dbs, runs)
    figs.append(figure("position-loss", "Validation loss by position in the context (bucket midpoints): one panel "
                       "per config, one line per run, coloured by its size N.", F.position_loss, pos,
                       loss_unit=unit))

    sections = []
    summary = [("p", f"{len(runs)} completed runs from {', '.join(dbs)}; "
                     f"{', '.join(f'{k} {v}' for k, v in runs['family'].value_counts().items())}; trained at seq_len "
                     f"{', '.join(str(int(x)) for x in sorted(runs['seq_len'].unique()))}; losses in {unit}."),]
    if fits is not None:
        summary.append(("p", f"Laws: {fits.source}."))
        if fit_status_line(fits.fit_status):
            summary.append(("p", fit_status_line(fits.fit_status).replace("fits: ", "Fits: ", 1) + "."))
    summary += [("list", notes + fits.notes if fits is not None else notes)] if (notes or (fits and fits.notes)) \
        else []
    sections.append(("Summary", summary))
    if rec is not None:
        sections.append(("Recommendation", _recommendation_blocks(rec, res)))
        res.tomls = _write_tomls(rec, out)
    else:
        sections.append(("Recommendation", _no_recommendation_blocks(fits, res, notes)))
    sections.append(("Validation", _validation_blocks(res)))
    sections.append(("Figures", figs))
    if fits is not None:
        sections.append(("Fits", _fit_blocks(fits)))
    sections.append(("Frontier", _frontier_blocks(pareto_sets(pts))))
    sections.append(("Runs", [("table", _run_rows(runs), ["run_id", "sweep", "label", "family", "N", "L x d",
                                                          "d_h", "layout", "seq_len", "tokens", "loss"])]))
    env = environment(dbs)
    sections.append(("Environment", [("table", [{"field": k, "values": "; ".join(
        f"{v['value']} ({v['runs']})" for v in vals)} for k, vals in env.items()], ["field", "values"]),
        ("p", "Each value is followed by the number of ingested runs that recorded it.")]))
    title = f"costlaw report: {', '.join(Path(d).name for d in dbs)}"
    from importlib.metadata import version

    subtitle = (f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, costlaw {version('costlaw')}, "
                f"{len(runs)} runs, {len(res.figures)} figures")
    write_atomic(res.html, to_html(title, subtitle, sections))
    write_atomic(res.markdown, to_markdown(title, subtitle, sections, out))
    return res


def _recommendation_blocks(rec, res) -> list:
    """The recommendation in two narrow tables (per context: the winner and its costs; per winner: its config,
    loss and intervals), so it reads at a laptop's width; then why any context has none, the warnings once each,
    the winners' TOML and every candidate at the longest context."""
    from costlaw.analysis.recommend import candidate_rows, toml_text

    obj = rec.objective.describe()
    doc = rec.to_json()
    blocks = []
    reasons = _grouped(rec.contexts, {T: rec.no_winner_reason(T) for T in rec.contexts})
    none = all(rec.winner(T) is None for T in rec.contexts)
    if none:
        blocks.append(("p", "No recommendation at any context: " + (reasons[0][0] if len(reasons) == 1 else "; ".join(
            f"{_context_text(Ts, rec.contexts)}: {why}" for why, Ts in reasons)) + "."))
    blocks.append(("p", res.target_note))
    pct = f"{100 * rec.level:g}%"
    per_context, winners = [], {}
    for T in rec.contexts:
        w, ru, s = rec.winner(T), rec.runner_up(T), rec.savings(T)
        if w is None:
            per_context.append({"context": T, "winner": "none (below)"})
            continue
        p = w.prices[T]
        per_context.append({"context": T, "winner": w.label, "runner-up": ru.label if ru else "-",
                            "M_infer": binary_bytes(p["m_infer_bytes"]),
                            "C_infer (FLOP/token)": si(p["c_infer_flops_per_token"]),
                            "memory vs standard": f"{-100 * s['memory']:+.1f}%" if s else "-",
                            "FLOPs vs standard": f"{-100 * s['flops']:+.1f}%" if s else "-"})
        key = (w.label, w.shape.config.config_id)
        if key not in winners:
            iv = w.interval
            winners[key] = {"winner": w.label, "contexts": [], "L x d": f"{w.shape.config.n_layers}x"
                            f"{w.shape.config.d_model}", "N": si(w.shape.n_params),
                            "N*/largest run": f"{w.extrapolation:.2f}x" if w.extrapolation else "-",
                            "predicted loss": f"{w.predicted:.4g}",
                            f"{pct} new run": f"{iv.lo:.4g}-{iv.hi:.4g}" if iv.lo is not None else "-",
                            f"{pct} mean": f"{iv.mean_lo:.4g}-{iv.mean_hi:.4g}" if iv.mean_lo is not None else "-"}
        winners[key]["contexts"].append(T)
    if not none:
        blocks.append(("p", "Per context: the winner (cheapest by the objective among the laws that pass the "
                            "guards), the runner-up, the winner's inference costs and its saving over the standard "
                            "config."))
        blocks.append(("table", per_context, ["context", "winner", "runner-up", "M_infer", "C_infer (FLOP/token)",
                                              "memory vs standard", "FLOPs vs standard"], "recommendation"))
    if not none and any(why for why, _ in reasons):
        blocks.append(("list", [f"no winner at {_context_text(Ts, rec.contexts)}: {why}" for why, Ts in reasons
                                if why]))
    if winners:
        for row in winners.values():
            row["contexts"] = ", ".join(str(T) for T in row["contexts"])
        blocks.append(("p", f"Per winner: its config, size (N*/largest run: how far the law is extrapolated), "
                            f"predicted loss and {pct} intervals for a new training run and for the law's mean."))
        blocks.append(("table", list(winners.values()), ["winner", "contexts", "L x d", "N", "N*/largest run",
                                                          "predicted loss", f"{pct} new run", f"{pct} mean"],
                       "recommendation-winners"))
    if rec.excluded():
        blocks.append(("p", "Not allowed to win (listed with why; --allow-weak-laws / --allow-outside-envelope "
                            "would let them):"))
        blocks.append(("list", [f"{r.label}: {r.blocked(rec.allow_weak, rec.allow_outside)}" for r in rec.excluded()]))
    warnings = merged_warnings(rec)
    if warnings:
        blocks.append(("list", [f"warning: {w}" for w in warnings]))
    # how the winners were chosen: after the answer, which is what a reader comes for
    blocks += [("p", f"Objective: {obj['z']} (M = {obj['M']}, C = {obj['C']})."), ("p", doc["shape_rule"] + "."),
               ("p", doc["intervals"] + "."), ("p", "Guards: " + doc["guards"] + "."), ("p", rec.standard_note + ".")]
    own = [n for n in rec.notes if n not in res_notes(rec)]
    if own:
        blocks.append(("list", [f"note: {n}" for n in own]))
    if any(r.cand.base and r.status == "ok" for r in rec.rows):
        blocks.append(("p", "Compressed candidates: predicted loss = the dense candidate's law + the ΔNLL its KV "
                            "policy measured at that keep ratio."))
    seen = set()
    for T in rec.contexts:
        w = rec.winner(T)
        if w is not None and w.shape.config.config_id not in seen:
            seen.add(w.shape.config.config_id)
            blocks.append(("pre", toml_text(rec, T)))
    T = rec.contexts[-1]
    blocks.append(("p", f"All candidates at context {T} (cheapest first; excluded, unfit and unreachable ones last, "
                        "with why):"))
    cand_rows = candidate_rows(rec, T)
    blocks.append(("table", cand_rows, list(cand_rows[0]), "candidates"))
    return blocks


def _no_recommendation_blocks(fits, res, notes: list[str]) -> list:
    """Why there is no recommendation at all (no laws, no target, or recommend refused), and each law's verdict."""
    why = [n.removeprefix("no recommendation: ") for n in notes if n.startswith(("no laws fitted", "no recommend"))]
    if fits is not None and res.target is None:
        why.append(res.target_note)
    blocks = [("p", "No recommendation: " + ("; ".join(why) if why else "no laws were fitted") + ".")]
    if fits is not None:
        verdicts = []
        for c in fits.candidates:
            if c.base:
                continue
            if not c.fitted:
                verdicts.append(f"{c.label}: no law ({c.reason})")
            elif c.weak:
                verdicts.append(f"{c.label}: weak law, may not win without --allow-weak-laws ({'; '.join(c.weak)})")
            else:
                verdicts.append(f"{c.label}: passes the guards")
        if verdicts:
            blocks += [("p", "The candidates' laws:"), ("list", verdicts)]
    return blocks


def merged_warnings(rec) -> list[str]:
    """rec.warnings() with each text once: a warning that holds at several contexts (the same winner at each)
    names them all instead of repeating per context. No-winner reasons are left out: the section says them once,
    beside the tables."""
    import re

    texts: dict[str, list[int]] = {}
    for w in rec.warnings():
        m = re.fullmatch(r"context (\d+): (.*)", w, flags=re.S)
        T, text = (int(m.group(1)), m.group(2)) if m else (None, w)
        if text.startswith("no winner: "):
            continue
        texts.setdefault(text, [])
        if T is not None:
            texts[text].append(T)
    return [f"{_context_text(Ts, rec.contexts)}: {text}" if Ts else text for text, Ts in texts.items()]


def _grouped(contexts, by_context: dict) -> list[tuple]:
    """[(value, [contexts with it]), ...] in first-seen order."""
    out: dict = {}
    for T in contexts:
        out.setdefault(by_context[T], []).append(T)
    return list(out.items())


def _context_text(Ts, contexts) -> str:
    if len(Ts) > 1 and list(Ts) == list(contexts):
        return f"every context ({', '.join(str(T) for T in Ts)})"
    return ("contexts " if len(Ts) > 1 else "context ") + ", ".join(str(T) for T in Ts)


def _validation_blocks(res) -> list:
    from costlaw.analysis.validate.render import summary_rows

    v = res.validation
    if v is None:
        return [("p", f"Cross-validation: {res.validation_note}.")] + _context_blocks(res.context_check)
    o, u = v.overall(), v.overall_usable()
    head = (f"Each config of each candidate left out in turn and its runs predicted by the law refitted without it, "
            f"exactly as the recommendation fits: {100 * o['coverage']:.0f}% of {o['runs']} left-out runs landed "
            f"inside their {100 * v.level:g}% interval for a new run")
    if u["runs"] and u["runs"] < o["runs"]:
        head += f" ({100 * u['coverage']:.0f}% of {u['runs']} for the laws that pass the guards)"
    blocks = [("p", head + f"; mean error {100 * o['mean_error']:+.1f}%, worst {100 * o['worst_error']:+.1f}%. "
                      "A calibrated interval holds about its level; far below it, do not trust the intervals."),
              ("p", v.to_json()["covers"] + "."),
              ("table", summary_rows(v), list(summary_rows(v)[0]))]
    if v.skipped:
        blocks.append(("list", [f"skipped {s['candidate']} {s['fold']}: {s['why']}" for s in v.skipped]))
    blocks.append(("p", "costlaw validate --db FILE --mode largest leaves each candidate's largest size out instead "
                        "(the extrapolation test)."))
    return blocks + _context_blocks(res.context_check)


def _context_blocks(c) -> list:
    """The store's extension pairs: does each candidate's gap to the default carry over to the longer context?"""
    if c is None:
        return []
    s = c.summary()
    o = s["overall"]
    verdict = ("the invariance holds within two standard errors" if o["holds"] else
               "the invariance does not hold within two standard errors" if o["holds"] is not None else
               "its noise is unknown (one pair, no val-set error)")
    rows = [{"candidate": k, "pairs": v["n"], "mean change": f"{v['mean']:+.4f}", "se": f"{v['se_mean']:.4f}"
             if v["se_mean"] is not None else "-", "gap widened": f"{v['widened']}/{v['n']}"}
            for k, v in s["candidates"].items()]
    return [("p", f"Context: each candidate's loss minus {c.reference}'s at the same width and seed, at the "
                  f"pretraining context and after extension to {max(x.long for x in c.shifts)} tokens (a law "
                  f"reused at a longer context assumes it does not change). The gap widened in {o['widened']} of "
                  f"{o['n']} pairs ({o['clusters_widened']} of the {o['clusters']} reference runs they share), "
                  f"by {o['mean']:+.4f} on average (se {o['se_mean']:.4f}): {verdict}. "
                  "costlaw validate --db FILE --mode context lists every pair."),
            ("table", rows, list(rows[0]))]


def res_notes(rec) -> list[str]:
    """The notes the Summary already shows (the fits' own)."""
    return [n for n in rec.notes if not n.startswith("the laws were fitted to runs trained at")]


def _write_tomls(rec, out: Path) -> list[Path]:
    from costlaw.analysis.recommend import write_tomls

    return write_tomls(rec, out / "recommended" / "model.toml")


def _fit_blocks(fits) -> list:
    rows = []
    for c in fits.candidates:
        if c.base:
            continue
        row = {"candidate": c.label, "family": c.family, "runs": c.n_runs if c.n_runs is not None else "-",
               "configs": c.n_points, "sizes": len({p["N"] for p in c.ladder}) if c.ladder else "-",
               "largest N": si(c.n_max) if c.n_max else "-"}
        if c.fitted:
            for k, v in c.params.items():
                ci = c.ci95.get(k) if c.ci95 else None
                row[k] = f"{v:.4g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")
            row["R²"] = f"{c.r2:.4f}" if c.r2 is not None else "-"
            cap = c.fit_extra.get("r2_ceiling")
            row["R² ceiling"] = f"{cap:.4f}" if cap is not None else "-"
            row["noise sd"] = f"{c.noise.sd(c.n_max or 1.0):.3g}" if c.noise is not None else "-"
            row["note"] = ("weak: " + "; ".join(c.weak)) if c.weak else "passes the guards"
        else:
            row["note"] = c.reason
        rows.append(row)
    law_params = [k for k in ("a", "b", "E") if any(k in r for r in rows)]
    blocks = [("p", "L(N) = (a/N)^b + E per candidate, N = non-embedding parameters, fitted to the config means "
                    "(one point per config, its seeds averaged); brackets: bootstrap 95% intervals (configs resampled "
                    "with their seeds). R²: on the config means. R² ceiling: the most R² any curve of N reaches "
                    "on the points fitted; '-' where no size has more than one config. Noise sd: a new run's "
                    "run-to-run spread in log loss at the largest N (seed spread plus lack of fit). Note: whether the "
                    "law passes recommend's guards (a weak law does not win without --allow-weak-laws)."),
              ("table", rows, ["candidate", "family", "runs", "configs", "sizes", "largest N", *law_params, "R²",
                               "R² ceiling", "noise sd", "note"])]
    pol = [c for c in fits.candidates if c.base]
    if pol:
        blocks.append(("table", [{"candidate": c.label, "base": c.base, "ΔNLL": f"{c.delta_nll:+.4g}",
                                  "source": c.delta_source} for c in pol], ["candidate", "base", "ΔNLL", "source"]))
    return blocks


def _frontier_blocks(sets) -> list:
    rows = []
    for s in sets:
        if s["family"] != "all":
            continue
        for p in s["points"]:
            cost = p.get("m_infer_bytes", p.get("c_infer_flops_per_token"))
            rows.append({"context": s["context"], "cost": "M_infer" if s["cost"] == "memory" else "C_infer",
                         "config": p["label"], "family": p["family"], "N": si(p["n_params"]),
                         "loss": f"{p['loss']:.4g}",
                         "value": binary_bytes(cost) if s["cost"] == "memory" else si(cost) + "FLOP/tok",
                         "run": p["run_id"]})
    return [("p", "Pareto sets across families (no other point has both lower loss and lower cost); per-family "
                  "sets: costlaw frontier."),
            ("table", rows, ["context", "cost", "config", "family", "N", "loss", "value", "run"])]


def _run_rows(runs) -> list[dict]:
    out = []
    for r in runs.sort_values(["label", "params_non_embedding"]).itertuples():
        out.append({"run_id": r.run_id, "sweep": r.sweep, "label": r.label, "family": r.family,
                    "N": si(r.params_non_embedding), "L x d": f"{r.n_layers}x{r.d_model}", "d_h": int(r.head_dim),
                    "layout": ", ".join(json.loads(r.layout)) if r.layout else "-",
                    "seq_len": int(r.seq_len), "tokens": si(r.tokens) if r.tokens == r.tokens else "-",
                    "loss": f"{r.loss:.4g}"})
    return out


def dumps_json(res: ReportResult) -> str:
    v = res.validation
    rec = res.recommendation
    return json.dumps({"html": str(res.html), "markdown": str(res.markdown), "fits": str(res.fits) if res.fits
                       else None, "figures": [str(p) for p in res.figures], "skipped": res.skipped,
                       "target_loss": res.target, "target_note": res.target_note,
                       "toml": [str(p) for p in res.tomls], "fits_status": res.fit_status,
                       "recommendation": None if rec is None else {
                           "level": rec.level, "excluded": rec.to_json()["excluded"],
                           "by_context": [{"context": T, "winner": w.label if w else None,
                                           "no_winner_reason": rec.no_winner_reason(T),
                                           "interval": w.interval.to_json() if w else None}
                                          for T, w in ((T, rec.winner(T)) for T in rec.contexts)]},
                       "validation": None if v is None else {k: x for k, x in v.to_json().items()
                                                             if k != "predictions"},
                       "validation_note": res.validation_note,
                       "context_check": None if res.context_check is None else {
                           k: x for k, x in res.context_check.to_json().items() if k != "shifts"}}, indent=2)
