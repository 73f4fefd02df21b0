"""`costlaw sweep plan|submit|status|resubmit`: a sweep spec (TOML) -> runs -> submitit -> status.

  costlaw sweep plan SPEC [--json] [--wide] [--gpu H100] [--mfu 0.35] [--root DIR] [--where EXPR]
  costlaw sweep submit SPEC --executor slurm|local|debug --root DIR [--device D] [--max-parallel N] [--wait-jobs]
  costlaw sweep status --root DIR [--json] [--lines N] [--all] [--watch [SECONDS]] [--wide]
  costlaw sweep resubmit --root DIR --failed [--executor ...] [--device D] [--max-parallel N] [--wait-jobs]

`plan` never imports torch. `submit` checks the whole spec, the executor, the device and every run's estimated
training memory before it creates anything under --root. `status --watch` follows a sweep live. One trainer per
run: a run whose trainer holds its lock is running, and is never submitted twice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from costlaw.costmodel.core import exitcodes

EXECUTORS = ("slurm", "local", "debug")
ACTIONS = {"plan": "every run the spec would launch, with N, tokens, FLOPs, GPU-hours, C_infer / M_infer at the "
                   "spec's contexts",
           "submit": "submit the runs through submitit (DONE runs are skipped)",
           "status": "counts by state; per run step / total, loss, tokens/s, ETA; failures with the last lines of "
                     "their logs",
           "resubmit": "resubmit failed, preempted-not-running and incomplete runs (same run ids; they resume from "
                       "their checkpoints)"}
WHERE_HELP = ("only the runs whose config satisfies EXPR (and their parents), e.g. \"model.d_model <= 320\" or "
              "\"N < 5e6 and model.kv_policy.method == 'snapkv'\": one round of a study. EXPR is costlaw's one "
              "expression language (costmodel/core/expr.py, as costlaw fit --where) over field paths, N, N_total, "
              "N_embedding, tokens_per_step, seed, stage ('pretrain' | 'extend' | 'compress'), family ('gqa' | "
              "'hybrid' | 'compressed') and sparse (the sparse patterns, or 'none'), with the functions of a spec's "
              "[derived] formulas")
EXIT_CODES = f"""exit codes (costmodel/core/exitcodes.py, the same for every verb):
  {exitcodes.OK}  all that was asked succeeded: plan printed; submit: every run of the sweep (of --where's selection)
     completed (local, debug, slurm --wait-jobs) or was queued (slurm); resubmit: every run it took on completed or
     was queued; status: no run failed or diverged (runs may still be pending or running)
  {exitcodes.FAILED}  some of the work failed: a run failed, diverged, or (once its executor is done with it) did not
     complete
  {exitcodes.INPUT}  bad input (a spec key, a flag's value, a device this machine lacks, a run too large for its
     device): one line naming it and the fix; nothing was submitted
  {exitcodes.INTERRUPTED}  interrupted (Ctrl-C or SIGTERM on submit / resubmit): running trainers were asked to
     checkpoint and sweep.json records it; `sweep resubmit --failed` continues
  {exitcodes.USAGE}  a usage error (an unknown flag, a missing argument): one line from the command line parser
"""


def add_arguments(p):
    import argparse

    from costlaw import options

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EXIT_CODES
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common_plan(q):
        q.add_argument("--gpu", default="H100", help="GPU for the GPU-hours estimate (default H100)")
        options.bounded(q.add_argument("--mfu", type=float, default=0.35,
                                       help="assumed model FLOPs utilisation (default 0.35)"), 0, 1, above=True)
        q.add_argument("--where", metavar="EXPR", help=WHERE_HELP)

    q = sub.add_parser("plan", help=ACTIONS["plan"])
    q.add_argument("spec", help="sweep spec TOML")
    options.add_json(q, "machine-readable: {sweep, totals, runs}")
    options.add_wide(q)
    q.add_argument("--root", default=".", help="sweep root; later stages' run ids depend on it (default .)")
    common_plan(q)

    q = sub.add_parser("submit", help=ACTIONS["submit"])
    q.add_argument("spec", help="sweep spec TOML")
    q.add_argument("--executor", required=True, choices=EXECUTORS, help="slurm (job arrays), local (this machine, "
                                                                          "throttled), debug (in-process)")
    options.add_root(q, "the results root: run directories (DIR/runs/), submitit logs and sweep.json", old=None)
    _run_args(q)
    common_plan(q)

    q = sub.add_parser("status", help=ACTIONS["status"])
    q.add_argument("--root", required=True, metavar="DIR", help="the sweep's results root (holds sweep.json)")
    options.add_json(q, "the status as one JSON object")
    options.bounded(q.add_argument("--lines", type=int, default=8, help="log lines shown per failed run (default 8)"),
                    0, 10_000)
    q.add_argument("--all", action="store_true", help="list every run (a large sweep lists its unfinished runs)")
    q.add_argument("--watch", type=float, nargs="?", const=5.0, metavar="SECONDS",
                   help="refresh every SECONDS (default 5) until no run is pending or running; Ctrl-C stops "
                        "watching (exit 0)")
    options.add_wide(q)

    q = sub.add_parser("resubmit", help=ACTIONS["resubmit"])
    q.add_argument("--root", required=True, metavar="DIR", help="the sweep's results root (holds sweep.json)")
    q.add_argument("--failed", action="store_true", required=True,
                   help="resubmit runs that failed, were preempted and are not running, or never finished")
    q.add_argument("--executor", choices=EXECUTORS, help="default: the executor of the last submission")
    _run_args(q)


def _run_args(q):
    from costlaw import options
    from costlaw.sweeps.select import ORDERS

    q.add_argument("--max-parallel", type=int, help="local: runs at a time (default CPUs / cpus per run, "
                                                    "or GPUs / gpus per run)")
    q.add_argument("--runs-per-gpu", type=int, default=1,
                   help="local: pack this many runs on each GPU at once (default 1)")
    q.add_argument("--fuse", action="store_true",
                   help="train runs that differ only in their seed as one fused model on one GPU slot "
                        "(runs/fusion.py); each keeps its run id and directory; runs that cannot fuse train as "
                        "without the flag")
    q.add_argument("--order", choices=ORDERS, default="longest",
                   help="local: which waiting run starts when a slot frees: longest (default; the run starting the "
                        "longest chain of work) or chains (a run whose parent just finished first, then longest: "
                        "a submission cut short leaves whole pretrain-extend-compress chains)")
    q.add_argument("--device", default="auto", help="device the trainer uses: auto | cpu | cuda | cuda:N (default "
                                                    "auto); checked before anything is submitted")
    q.add_argument("--wait-jobs", action="store_true",
                   help="slurm: poll until no run is pending or running (local and debug always wait)")
    options.renamed(q, "--wait", "--wait-jobs", "wait_jobs", flag=True)
    q.add_argument("--poll", type=float, default=5.0, help="seconds between polls with --wait-jobs (default 5)")
    options.add_json(q, "print {sweep, root, executor, submitted, counts, exit} as JSON instead of the summary")


def main(args) -> int:
    from costlaw.sweeps.interrupt import SweepInterrupted

    try:
        return {"plan": _plan, "submit": _submit, "status": _status, "resubmit": _resubmit}[args.action](args)
    except SweepInterrupted as e:
        print(f"costlaw sweep: {e}", file=sys.stderr, flush=True)
        return exitcodes.INTERRUPTED
    except KeyboardInterrupt:  # before any job was started (planning, checks): nothing to record or stop
        print(f"costlaw sweep: interrupted during {args.action}, before anything was submitted", file=sys.stderr,
              flush=True)
        return exitcodes.INTERRUPTED


def _log(msg: str) -> None:
    print(f"[costlaw sweep] {msg}", file=sys.stderr, flush=True)


def _check_where(args) -> None:
    from costlaw.costmodel import CostlawError

    if args.where is not None and not args.where.strip():
        raise CostlawError("--where: empty expression; write one such as \"model.d_model <= 320\", or leave the flag "
                           "out for every run")


def _plan(args) -> int:
    from costlaw.sweeps import expand, plan, spec
    from costlaw.sweeps.preflight import check_plan_memory

    _check_where(args)
    s = spec.load(_spec_file(args.spec))
    runs = expand.expand(s, args.root)
    if args.where:
        from costlaw.sweeps.select import select

        chosen = select(runs, args.where)
        runs = [r for r in runs if r.run_id in chosen]
    rows = plan.plan_rows(runs, s.contexts, gpu=args.gpu, mfu=args.mfu)
    check_plan_memory(runs, args.gpu)
    tot = plan.totals(rows, args.gpu, args.mfu)
    if args.json:
        print(json.dumps({"sweep": {"name": s.name, "description": s.description, "runs_cap": s.runs_cap,
                                    "contexts": list(s.contexts), "seeds": list(s.seeds),
                                    "stages": [st.name for st in s.stages]},
                          "totals": tot, "runs": rows}, indent=1))
    else:
        from costlaw.costmodel.core.units import table_width, terminal_width

        with table_width(None if args.wide else terminal_width()):
            print(plan.render(s, rows, tot))
    return exitcodes.OK


def _spec_file(path: str) -> str:
    from costlaw.options import input_file

    input_file(path, "spec", "a sweep spec TOML")
    return path


def _check_run_args(args) -> None:
    from costlaw.costmodel import CostlawError

    for flag, v in (("--max-parallel", args.max_parallel), ("--runs-per-gpu", args.runs_per_gpu)):
        if v is not None and v < 1:
            raise CostlawError(f"{flag}: must be >= 1, got {v}")
    if args.poll <= 0:
        raise CostlawError(f"--poll: must be > 0 seconds, got {args.poll}")


def _submit(args) -> int:
    from costlaw.options import output_dir
    from costlaw.sweeps import submit

    _check_run_args(args)
    _check_where(args)
    _spec_file(args.spec)
    root = output_dir(args.root, "--root", "the sweep's run directories").resolve()
    sub = submit.submit_spec(args.spec, root, args.executor, max_parallel=args.max_parallel, device=args.device,
                             gpu=args.gpu, mfu=args.mfu, runs_per_gpu=args.runs_per_gpu, where=args.where,
                             fuse=args.fuse, order=args.order)
    only = None
    if args.where:
        from costlaw.sweeps import record

        only = _selected(record.load(root), args.where)
    return _after(args, root, args.executor, sub, only)


def _selected(doc: dict, where: str) -> set:
    from costlaw.sweeps.select import select
    from costlaw.sweeps.submit import planned_from_record

    return select(planned_from_record(doc), where)


def _resubmit(args) -> int:
    from costlaw.sweeps import submit

    _check_run_args(args)
    root = _sweep_root(args.root)
    sub = submit.resubmit(root, args.executor, max_parallel=args.max_parallel, device=args.device,
                          runs_per_gpu=args.runs_per_gpu, fuse=args.fuse, order=args.order)
    return _after(args, root, sub["executor"], sub, set(sub["scope"]))  # answerable for the runs it took on


def _sweep_root(path: str) -> Path:
    from costlaw.options import input_dir

    return input_dir(path, "--root", "the root of a submitted sweep (it holds sweep.json)").resolve()


def _status(args) -> int:
    from costlaw.costmodel import CostlawError
    from costlaw.sweeps import status

    _sweep_root(args.root)
    if args.watch is not None:
        if args.watch <= 0:
            raise CostlawError(f"--watch: must be > 0 seconds, got {args.watch:g}")
        from costlaw.sweeps.watch import watch

        return watch(args.root, args.watch, n_lines=args.lines, all_runs=args.all, wide=args.wide)
    st = status.collect(args.root, n_lines=args.lines)
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        from costlaw.costmodel.core.units import terminal_width

        print(status.render(st, all_runs=args.all, width=None if args.wide else terminal_width()))
    return status.exit_code(st)


def _after(args, root: Path, executor: str, sub: dict, only: set | None) -> int:
    from costlaw.sweeps import status

    if executor == "slurm" and args.wait_jobs:
        from costlaw.sweeps.interrupt import Interrupts, SweepInterrupted

        with Interrupts() as interrupts:
            st = status.wait(root, poll_s=args.poll, echo=_log, stop=interrupts)
        if interrupts.is_set():
            raise SweepInterrupted(f"stopped waiting ({interrupts.name}); the Slurm jobs run on: "
                                   f"`costlaw sweep status --root {root} --watch` follows them")
    else:
        st = status.collect(root)
    finished = executor != "slurm" or args.wait_jobs
    code = status.exit_code(st, only, finished=finished)
    if args.json:
        print(json.dumps({"sweep": st["name"], "root": str(root), "executor": executor,
                          "submitted": sub.get("submitted"), "skipped_done": sub.get("skipped_done"),
                          "outcome": sub.get("outcome"), "counts": st["counts"], "exit": code}, indent=1, default=str))
        return code
    counts = ", ".join(f"{v} {k}" for k, v in st["counts"].items() if v)
    print(f"sweep {st['name']}: {counts}")
    print("next:")
    print(f"  costlaw sweep status --root {root}" + (" --watch" if st["counts"]["running"] else ""))
    print(f"  costlaw ingest --root {root} --db {root / 'results.duckdb'}")
    if st["counts"]["failed"] or st["counts"]["preempted"] or st["counts"]["incomplete"]:
        print(f"  costlaw sweep resubmit --root {root} --failed")
    return code
