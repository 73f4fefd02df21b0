"""`costlaw recommend`: the cheapest config that reaches a target loss at each context length."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
how it works (the GQA paper's search, §4.1, across families):
  1. each candidate's law L(N) = (a/N)^b + E (N = non-embedding params) is fitted to the config means of
     the store's completed pretraining runs (one point per config, its seeds averaged; >= 4 sizes, fewer:
     listed as unfit) with a bootstrap over configs (a config's seeds resampled together), or read from
     --fits; a fit the fits table of a --db holds for the same runs, options and fitter (from an earlier
     recommend, report or `costlaw fit --db`) is reused, new fits are stored there (with one --db; with
     several, in none); --refit fits all again; a compressed candidate (KV policy + keep ratio on a dense
     one) is the dense law + the measured ΔNLL
  2. run-to-run noise per candidate: the spread of a config's seeds (pooled) plus what the config means
     scatter about the law beyond it (lack of fit); with no repeated seed, the fit's residual variance
  3. N* = the size where the law reaches --target-loss
  4. N* -> config: d/L is interpolated in log N from the candidate's own ladder runs (else the paper's
     anchors: Table 9 up to 1.2B, App. B.1 Table 7 above), depth solved for N*, then integer L and d
     (a multiple of 64, or of the gcd of the ladder's widths when those are not multiples of 64, or of
     --d-multiple) giving the fewest non-embedding params >= N*, kept inside the depths and d/L the
     candidate was trained at (its envelope) whenever a config there reaches N*;
     d_h, vocabulary, tied embeddings and RoPE from the ladder, d_ff = 8d/3 to a multiple of 32
  5. guards: a weak law (E at its bound; a, E or b with a bootstrap 95% interval spanning > 1 decade,
     not finite, or b reaching <= 0; R² < 0.98 on its config means) or a config outside the envelope
     is listed with why but does not win unless --allow-weak-laws / --allow-outside-envelope; when
     nothing is left, there is no winner (exit 0) and the output says why
  6. price with costmodel at each --context; Z = λ·M^α + (1−λ)·C^β (M = M_infer bytes at --dtype,
     C = C_infer FLOPs/token), lowest Z within every budget wins; the loss is predicted at the rounded
     config's N with two intervals at --level: the law's mean (fit uncertainty) and a new run (fit
     uncertainty + run-to-run noise: what a training run of the config will land in); extrapolation =
     N* / largest trained N (warned above 4x). `costlaw validate` measures how often held-out runs land
     inside these intervals

fits file (--fits, JSON): {"format": "costlaw-fits/1", "law": "gqa-size",
  "candidates": [{"n_heads": 32, "n_kv_heads": 8, "params": {"a": .., "b": .., "E": ..},
                  "bootstrap": {"a": [..], "b": [..], "E": [..]}, "ladder": [{"N": .., "d_model": .., "n_layers": ..}],
                  "n_max": .., "family": "gqa|hybrid|compressed", "sparse": .., "full_fraction": ..}, ...],
  "kv_policies": [{"method": "snapkv", "keep": 0.25, "delta_nll": 0.03, "base": "32,8"}]}
  (full schema: analysis/recommend/fitsfile.py; --fits-out writes the store's fits in it, noise included; so
  does `costlaw fit --out`, and `costlaw fit --group-by n_heads,n_kv_heads --law gqa-size` fits are read back)

calibration file (--calibration, JSON): {"format": "costlaw-calibration/1",
  "gpus": {"H100-SXM": {"decode": {"overhead_s": 2e-4, "bytes_per_s": 2.9e12, "flops_per_s": 6e14}}}}
  optional per GPU: "families": {"hybrid": {"decode": {...}}} prices that family's candidates (the others use
  the GPU-level "decode"); `costlaw calibrate MEASUREMENTS.json --out DIR` writes such a file from
  benchmarks/calibrate_infer_gpu.py's measurements

closing the loop (--record, needs --db; with several, the first): each context's winner becomes a row of the
  recommendations table (rec_id, model_id = the config's id, predicted loss, its interval for a new run and
  for the mean at --level, the noise, costs, budgets, the runs its law was fitted to); train the config,
  `costlaw ingest` the run into the same file, then `costlaw query --db FILE "select * from closed_loop"`
  shows the measured loss beside the prediction (inside = within the new-run interval; held_out = the run
  was not one the law was fitted to). Recording the same recommendation again adds no row.
  --spec-out FILE --recipe-from LADDER_SPEC.toml --train-seed N writes a sweep spec that trains the winners
  with the ladder's own recipe (data, schedule, tokens and batch formulas, eval) at seed N, which must be
  one no ladder run used; another call with the same FILE, recipe and seed adds its winners to it. A staged
  recipe (pretrain, then extend: laws fitted on the extensions) is followed stage by stage: each winner is
  pretrained as the ladder was (all layers full, the base RoPE theta) and its extension is the winner itself; one
  file holds dense winners or hybrids of one pattern and full-layer count (analysis/recommend/specout.py).

examples:
  costlaw recommend --fits fits.json --target-loss 2.6 --context 8K,128K
  costlaw recommend --db results.duckdb --target-loss 1.9 --context 1K,32K --memory-budget 16GiB --json
  costlaw recommend --db a.duckdb --db b.duckdb --target-loss 1.9 --context 32K --level 0.95
  costlaw recommend --db results.duckdb --families gqa,hybrid,compressed --target-loss 0.9 --context 64K \\
      --min-retrieval 0.9
  costlaw recommend --db results.duckdb --target-loss 1.9 --context 32K --record \\
      --spec-out loop.toml --recipe-from ladder/spec.toml --train-seed 7
"""


def add_arguments(p):
    from costlaw import options

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    options.bounded(p.add_argument("--target-loss", type=float, required=True, help="the loss L* to reach"), 0,
                    above=True)
    p.add_argument("--context", action="append", required=True,
                   help="context length(s) T in tokens: 8192, 8K, 128K (repeat or comma-separate)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", action="append",
                     help="a results file: fit each candidate's law to its completed runs (repeat to read several "
                          "as one, e.g. a ladder spread over studies)")
    src.add_argument("--fits", help="a fits JSON (format costlaw-fits/1, see below) instead of a store")
    p.add_argument("--level", type=float, default=0.9,
                   help="the intervals' level (default 0.9): a new run's loss, and the law's mean")
    p.add_argument("--allow-weak-laws", action="store_true",
                   help="let a candidate whose law is weak (not identified, or R² < 0.98) win; it is flagged")
    p.add_argument("--allow-outside-envelope", action="store_true",
                   help="let a config outside its candidate's trained depths and d/L win; it is flagged")
    options.bounded(p.add_argument("--min-retrieval", type=float, metavar="ACC",
                                   help="a quality floor: only candidates whose measured passkey accuracy (their "
                                        "largest runs, or their kv_policy eval) is at least ACC may win; the "
                                        "others are listed with theirs"), 0, 1)
    options.bounded(p.add_argument("--keep-grid", type=int, default=0, metavar="K",
                                   help="--db: also K compressed candidates per measured policy at keep ratios "
                                        "between the measured ones, their ΔNLL from the policy's ΔNLL(N, keep) law "
                                        "(default 0: the measured keeps only); no retrieval was measured there"),
                    0, 64)
    p.add_argument("--candidates", default="all",
                   help="all (default: every candidate the data cover), paper (the 21 (n_h, n_kv) pairs), or labels "
                        "separated by ';', e.g. '32,8;8,1;8,1 snapkv keep=0.25'")
    p.add_argument("--families", default="gqa,hybrid,compressed", help="comma-separated: gqa,hybrid,compressed")
    obj = p.add_argument_group("objective and budgets")
    obj.add_argument("--lambda", dest="lam", type=float, default=0.9, help="λ in Z (default 0.9)")
    obj.add_argument("--alpha", type=float, default=0.5, help="α in Z (default 1/2)")
    obj.add_argument("--beta", type=float, default=1 / 3, help="β in Z (default 1/3)")
    obj.add_argument("--dtype", default="bf16", help="bytes of weights and KV cache: bf16 | fp16 | fp32 | fp8")
    obj.add_argument("--memory-budget", help="hard limit on M_infer, e.g. 16GiB or 8GB")
    obj.add_argument("--flops-budget", help="hard limit on C_infer FLOPs per token, e.g. 5e9 or 5G")
    obj.add_argument("--gpu", help="price batch-1 decode latency on this GPU (H100, H200, A100, A800, RTX-4090)")
    options.bounded(obj.add_argument("--latency-target-ms", type=float,
                                     help="hard limit on decode ms per token (needs --gpu)"), 0, above=True)
    obj.add_argument("--calibration", help="measured decode rates per GPU (JSON, below) instead of the roofline")
    p.add_argument("--standard", default="d/d_h,8",
                   help="the baseline at the same loss: 'd/d_h,8' (Llama-3 style, default), 'd/d_h,d/d_h' (MHA) "
                        "or a candidate label such as 32,8")
    options.bounded(p.add_argument("--d-multiple", type=int,
                                   help="d_model is a multiple of this (default 64, or the gcd of a candidate's "
                                        "ladder widths when they are not multiples of 64)"), 1, 65_536)
    fitg = p.add_argument_group("fitting from --db")
    options.add_bootstrap(p, what="bootstrap resamples of the configs per law", group=fitg)
    fitg.add_argument("--noise", choices=("constant", "size"), default="constant",
                      help="seed noise constant in N (default: the better calibrated, analysis/recommend/noise.py) "
                           "or log-linear in N")
    fitg.add_argument("--lack-of-fit", action="store_true",
                      help="add the config means' scatter beyond seed noise to a new run's noise (off by default)")
    options.bounded(fitg.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)"),
                    0, 2**63 - 1)
    options.bounded(fitg.add_argument("--train-context", type=int,
                                      help="fit runs trained at this seq_len (default: the measured seq_len "
                                           "nearest the largest --context at which laws can be fitted)"), 1)
    fitg.add_argument("--sweep", help="only runs of this sweep")
    fitg.add_argument("--refit", action="store_true",
                      help="fit every law again, even those the store's fits table holds for the same runs and "
                           "options (by default those are reused, and new fits are stored there for the next call)")
    fitg.add_argument("--fits-out", help="also write the fitted laws as a fits JSON")
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="one JSON object")
    options.add_wide(out)
    out.add_argument("--toml-out", help="write the winner's ModelConfig TOML here (several contexts: FILE-<T>.toml)")
    out.add_argument("--record", action="store_true",
                     help="record each context's winner in --db's recommendations table; once its config is trained "
                          "and ingested, the closed_loop view compares the measured loss with the prediction")
    out.add_argument("--spec-out", help="write (or add to) a sweep spec that trains the winners (see below)")
    out.add_argument("--recipe-from", help="with --spec-out: the ladder's sweep spec, whose recipe the winners get")
    out.add_argument("--train-seed", type=int, help="with --spec-out: the seed to train at, one no ladder run used")
    out.add_argument("--spec-name", help="with --spec-out: the sweep's name (default <recipe>-recommended-s<seed>)")


def parse_contexts(values) -> list[int]:
    from costlaw.costmodel.core.errors import CostlawError
    from costlaw.costmodel.core.units import parse_tokens

    out = []
    for arg in values or []:
        for c in str(arg).split(","):
            if c.strip():
                t = parse_tokens(c, "--context")
                if t < 1:
                    raise CostlawError(f"--context: must be >= 1 token, got {c!r}")
                if t not in out:
                    out.append(t)
    if not out:
        raise CostlawError("--context: give at least one context length, e.g. --context 8K,128K")
    return out


def build_objective(args):
    import math

    from costlaw.analysis.objective import Objective, load_calibration, parse_number
    from costlaw.costmodel.core.errors import CostlawError
    from costlaw.costmodel.core.units import parse_bytes

    cal = load_calibration(args.calibration) if args.calibration else {}
    flops = parse_number(args.flops_budget, "--flops-budget") if args.flops_budget else None
    if flops is not None and not math.isfinite(flops):
        raise CostlawError(f"--flops-budget: {args.flops_budget!r} is not a finite number; write e.g. 5e9 or 5G")
    return Objective(lam=args.lam, alpha=args.alpha, beta=args.beta, dtype=args.dtype,
                     memory_budget=parse_bytes(args.memory_budget) if args.memory_budget else None,
                     flops_budget=flops,
                     gpu=args.gpu, latency_target_ms=args.latency_target_ms, calibration=cal)


def log(msg: str) -> None:
    print(f"[recommend] {msg}", file=sys.stderr, flush=True)


def check_files(args) -> None:
    """Every file recommend reads is a readable file and every path it writes has a directory, before any work."""
    from costlaw import options

    if args.db:
        options.input_dbs(args.db)
    if args.fits:
        options.input_file(args.fits, "--fits", "a fits JSON (format costlaw-fits/1)")
    if args.calibration:
        options.input_file(args.calibration, "--calibration", "a calibration JSON (format costlaw-calibration/1)")
    if args.recipe_from:
        options.input_file(args.recipe_from, "--recipe-from", "the ladder's sweep spec TOML")
    for flag, path, what in (("--toml-out", args.toml_out, "the winner's model TOML"),
                             ("--spec-out", args.spec_out, "the sweep spec of the winners"),
                             ("--fits-out", args.fits_out, "the fits JSON")):
        if path:
            options.output_file(path, flag, what)


def main(args) -> int:
    from costlaw.analysis.recommend import FAMILIES, fit_store, load_fits, recommend, render_text, write_tomls
    from costlaw.analysis.recommend.intervals import check_level
    from costlaw.costmodel.core.errors import CostlawError
    from costlaw.costmodel.core.units import table_width, terminal_width

    contexts = parse_contexts(args.context)
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise CostlawError(f"--families: unknown family {bad[0] if bad else '(none)'!r}; "
                           f"choose from {', '.join(FAMILIES)}")
    if args.record and not args.db:
        raise CostlawError("--record: writes to the results file's recommendations table, and --fits has none; "
                           "give --db RESULTS.duckdb instead of --fits, or drop --record")
    check_level(args.level)
    check_spec_args(args)
    if args.fits and args.fits_out:
        raise CostlawError("--fits-out: writes fits fitted from --db; with --fits the file already exists")
    if args.fits and args.keep_grid:
        raise CostlawError("--keep-grid: fits ΔNLL(N, keep) to a store's kv_policy evals; give --db instead of "
                           "--fits, or drop --keep-grid")
    if args.fits and args.refit:
        raise CostlawError("--refit: refits the laws from --db's runs; --fits reads them from a file; drop one")
    check_files(args)
    objective = build_objective(args)
    if args.fits:
        fs = load_fits(args.fits)
    else:
        fs = fit_store(args.db, families=families, n_boot=args.bootstrap, seed=args.seed,
                       train_context=args.train_context, sweep=args.sweep, progress=None if args.json else log,
                       refit=args.refit, noise=args.noise, lack_of_fit=args.lack_of_fit, context=max(contexts),
                       keep_grid=args.keep_grid)
        if args.fits_out:
            log(f"fits written to {fs.save(args.fits_out)}")
    rec = recommend(fs, args.target_loss, contexts, objective, candidates=args.candidates, families=families,
                    standard=args.standard, d_multiple=args.d_multiple, level=args.level,
                    allow_weak=args.allow_weak_laws, allow_outside=args.allow_outside_envelope,
                    min_retrieval=args.min_retrieval)
    if all(rec.no_winner_reason(T) == "no candidate meets the budgets" for T in contexts):
        raise CostlawError("budgets: no candidate meets --memory-budget/--flops-budget/--latency-target-ms at any "
                           "context; relax a budget or add candidates")
    written = write_tomls(rec, args.toml_out) if args.toml_out else []
    recorded = record(rec, fs, args) if args.record else None
    spec = write_spec(rec, fs, args) if args.spec_out else None
    if args.json:
        doc = rec.to_json()
        doc["toml_files"] = [str(p) for p in written]
        if recorded is not None:
            doc["recorded"] = recorded[0]
            log(recorded[1])
        if spec is not None:
            doc["spec"] = spec[0]
            log(spec[1])
        print(json.dumps(doc, indent=2, default=_default))
    else:
        with table_width(None if args.wide else terminal_width()):
            print(render_text(rec))
        for p in written:
            print(f"wrote {p}")
        if recorded is not None:
            print(recorded[1])
        if spec is not None:
            print(spec[1])
    return 0


def check_spec_args(args) -> None:
    from costlaw.costmodel.core.errors import CostlawError

    given = [f for f, v in (("--recipe-from", args.recipe_from), ("--train-seed", args.train_seed),
                            ("--spec-name", args.spec_name)) if v is not None]
    if given and not args.spec_out:
        raise CostlawError(f"{given[0]}: goes with --spec-out FILE; add it or drop {given[0]}")
    if args.spec_out and (args.recipe_from is None or args.train_seed is None):
        raise CostlawError("--spec-out: needs --recipe-from LADDER_SPEC.toml (the ladder's recipe) and --train-seed N "
                           "(a seed no ladder run used)")
    if args.train_seed is not None and args.train_seed < 0:
        raise CostlawError(f"--train-seed: must be >= 0, got {args.train_seed}")


def write_spec(rec, fs, args) -> tuple[dict, str]:
    """The winners as a sweep spec at --spec-out (added to one this wrote before); the JSON entry and a line."""
    from pathlib import Path

    from costlaw.analysis.recommend.specout import (
        chain_of,
        merge_points,
        point_line,
        pretrain_model,
        read_recipe,
        spec_text,
        staged,
    )
    from costlaw.costmodel.core.errors import CostlawError
    from costlaw.costmodel.core.files import write_atomic
    from costlaw.sweeps.expand import expand
    from costlaw.sweeps.spec import parse

    raw = read_recipe(args.recipe_from)
    added, contexts = [], {}
    for T in rec.contexts:  # one point per config, whatever contexts it won
        w = rec.winner(T)
        if w is not None:
            contexts.setdefault(w.shape.config.config_id, (w, []))[1].append(T)
    chains = {chain_of(w.shape.config.to_dict()) for w, _ in contexts.values()} if staged(raw) else set()
    if len(chains) > 1:
        raise CostlawError(f"--spec-out: the winners need different extensions ({', '.join(sorted(chains))}); a "
                           "staged recipe's spec holds one: recommend one --context at a time into separate files")
    chain = next(iter(chains), None)
    lines = merge_points(args.spec_out, args.recipe_from, args.train_seed, chain)
    have = {line.split("  # ", 1)[0] for line in lines}
    for w, Ts in contexts.values():
        used = sorted({p["seed"] for p in w.cand.ladder if "seed" in p})
        if args.train_seed in used:
            raise CostlawError(f"--train-seed: seed {args.train_seed} trained {w.label}'s ladder runs; pick a seed no "
                               f"ladder run used (they used {', '.join(map(str, used))})")
        note = (f"{w.label} at context {', '.join(map(str, Ts))}, target {rec.target:g}: predicted {w.predicted:.4g}, "
                f"{w.interval.text()}"
                + (f", ΔNLL of {w.cand.template.kv_policy} to evaluate with costlaw kv-eval" if w.cand.base else ""))
        model = w.shape.config.to_dict()
        line = point_line(pretrain_model(model, raw) if chain else model,
                          note + (f"; extended, it is model_id {w.shape.config.config_id}" if chain else ""))
        key = line.split("  # ", 1)[0]
        if key not in have:
            have.add(key)
            lines.append(line)
            added.append(w.shape.config.config_id)
    text = spec_text(lines, args.recipe_from, args.train_seed, args.spec_name, chain)
    try:
        runs = expand(parse(text), Path(args.spec_out).resolve().parent)
    except CostlawError as e:
        raise CostlawError(f"--recipe-from: the spec it gives does not plan ({e}); check the recipe") from None
    planned = {r.config.model.config_id for r in runs}
    lost = [cid for cid in added if cid not in planned]
    if lost:
        raise CostlawError(f"--recipe-from: following its stages does not give the recommended config(s) "
                           f"{', '.join(lost)} (a later stage changes another model field); train them by hand")
    write_atomic(Path(args.spec_out), text)
    entry = {"path": str(args.spec_out), "seed": args.train_seed, "points": len(lines), "added": added,
             "run_ids": [r.run_id for r in runs]}
    line = (f"wrote {args.spec_out}: {len(lines)} config(s) at seed {args.train_seed} with {args.recipe_from}'s recipe "
            f"({len(added)} added now); train with: costlaw sweep submit {args.spec_out} --executor ...")
    return entry, line


def record(rec, fs, args) -> tuple[list[dict], str]:
    """Write each context's winner to --db's recommendations table; the JSON entries and the line to print."""
    from pathlib import Path

    from costlaw.analysis.store.recommendations import recommendation_rows, write_recommendations

    db = args.db[0]
    source = ", ".join(str(Path(d).resolve()) for d in args.db)
    rows = recommendation_rows(rec, source=source, sweep=args.sweep, train_context=fs.train_context)
    done = write_recommendations(db, rows)
    entries = [{"rec_id": i, "context": r["context"], "candidate": r["candidate"], "model_id": r["model_id"],
                "new": new} for (i, new), r in zip(done, rows)]
    n_new = sum(e["new"] for e in entries)
    ids = ", ".join(f"{e['rec_id']} ({e['candidate']} at {e['context']})" for e in entries)
    again = f", {len(entries) - n_new} already there" if n_new < len(entries) else ""
    line = (f"recorded {n_new} recommendation(s) in {db}{again}: {ids}; after training and ingesting, check "
            f"with: costlaw query --db {db} \"select * from closed_loop\"")
    return entries, line


def _default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
