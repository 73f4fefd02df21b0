"""`costlaw sweep plan|submit|status|resubmit`: a sweep spec (TOML) -> runs -> submitit -> status.

  costlaw sweep plan SPEC [--json] [--gpu H100] [--mfu 0.35] [--root DIR] [--where EXPR]
  costlaw sweep submit SPEC --executor slurm|local|debug --root DIR [--device D] [--max-parallel N] [--wait]
  costlaw sweep status --root DIR [--json] [--lines N] [--all] [--watch [SECONDS]] [--wide]
  costlaw sweep resubmit --root DIR --failed [--executor ...] [--device D] [--max-parallel N] [--wait]

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
EXIT_CODES = f"""exit codes (costmodel/core/exitcodes.py, the same for every verb):
  {exitcodes.OK}  all that was asked succeeded: plan printed; submit: every run of the sweep (of --where's selection)
     completed (local, debug, slurm --wait) or was queued (slurm); resubmit: every run it took on completed or
     was queued; status: no run failed or diverged (runs may still be pending or running)
  {exitcodes.FAILED}  some of the work failed: a run failed, diverged, or (once its executor is done with it) did not
     complete
  {exitcodes.INPUT}  bad input (a spec key, a flag's value, a device this machine lacks, a run too large for its
     device): one line naming it and the fix; nothing was submitted
  {exitcodes.INTERRUPTED}  interrupted (Ctrl-C or SIGTERM on submit / resubmit): running trainers were asked to
     checkpoint and sweep.json records it; `sweep resubmit --failed` continues
  a usage error (an unknown flag, a missing argument) is one line from the command line parser
"""


def add_arguments(p):
    import argparse

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EXIT_CODES
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common_plan(q):
        q.add_argument("--gpu", default="H100", help="GPU for the GPU-hours estimate (default H100)")
        q.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation (default 0.35)")
        q.add_argument("--where", help="only the runs whose config satisfies this formula (and their parents), "
                                       "e.g. \"model.d_model <= 320\": one round of a study")

    q = sub.add_parser("plan", help="every run the spec would launch, with N, tokens, FLOPs, GPU-hours, "
                                    "C_infer / M_infer at the spec's contexts")
    q.add_argument("spec", help="sweep spec TOML")
    q.add_argument("--json", action="store_true", help="machine-readable: {sweep, totals, runs}")
    q.add_argument("--root", default=".", help="sweep root; later stages' run ids depend on it (default .)")
    common_plan(q)

    q = sub.add_parser("submit", help="submit the runs through submitit (DONE runs are skipped)")
    q.add_argument("spec", help="sweep spec TOML")
    q.add_argument("--executor", required=True, choices=EXECUTORS, help="slurm (job arrays), local (this machine, "
                                                                          "throttled), debug (in-process)")
    q.add_argument("--root", required=True, help="directory for run directories, submitit logs and sweep.json")
    _run_args(q)
    common_plan(q)

    q = sub.add_parser("status", help="counts by state; per run step / total, loss, tokens/s, ETA; failures with "
                                      "the last lines of their logs")
    q.add_argument("--root", required=True, help="the sweep's root (holds sweep.json)")
    q.add_argument("--json", action="store_true")
    q.add_argument("--lines", type=int, default=8, help="log lines shown per failed run (default 8)")
    q.add_argument("--all", action="store_true", help="list every run (a large sweep lists its unfinished runs)")
    q.add_argument("--watch", type=float, nargs="?", const=5.0, metavar="SECONDS",
                   help="refresh every SECONDS (default 5) until no run is pending or running; Ctrl-C stops "
                        "watching (exit 0)")
    q.add_argument("--wide", action="store_true", help="every column, however wide the terminal")

    q = sub.add_parser("resubmit", help="resubmit failed, preempted-not-running and incomplete runs "
                                        "(same run ids; they resume from their checkpoints)")
    q.add_argument("--root", required=True, help="the sweep's root (holds sweep.json)")
    q.add_argument("--failed", action="store_true", required=True,
                   help="resubmit runs that failed, were preempted and are not running, or never finished")
    q.add_argument("--executor", choices=EXECUTORS, help="default: the executor of the last submission")
    _run_args(q)


def _run_args(q):
    q.add_argument("--max-parallel", type=int, help="local: runs at a time (default CPUs / cpus per run, "
                                                    "or GPUs / gpus per run)")
    q.add_argument("--runs-per-gpu", type=int, default=1,
                   help="local: pack this many runs on each GPU at once (default 1)")
    q.add_argument("--device", default="auto", help="device the trainer uses: auto | cpu | cuda | cuda:N (default "
                                                    "auto); checked before anything is submitted")
    q.add_argument("--wait", action="store_true", help="slurm: poll until no run is pending or running")
    q.add_argument("--poll", type=float, default=5.0, help="seconds between polls with --wait (default 5)")


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


def _plan(args) -> int:
    from costlaw.sweeps import expand, plan, spec
    from costlaw.sweeps.preflight import check_plan_memory

    s = spec.load(args.spec)
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
        print(plan.render(s, rows, tot))
    return exitcodes.OK


def _check_run_args(args) -> None:
    from costlaw.costmodel import CostlawError

    for flag, v in (("--max-parallel", args.max_parallel), ("--runs-per-gpu", args.runs_per_gpu)):
        if v is not None and v < 1:
            raise CostlawError(f"{flag}: must be >= 1, got {v}")
    if args.poll <= 0:
        raise CostlawError(f"--poll: must be > 0 seconds, got {args.poll}")


def _submit(args) -> int:
    from costlaw.sweeps import submit

    _check_run_args(args)
    root = Path(args.root).resolve()
    sub = submit.submit_spec(args.spec, root, args.executor, max_parallel=args.max_parallel, device=args.device,
                             gpu=args.gpu, mfu=args.mfu, runs_per_gpu=args.runs_per_gpu, where=args.where)
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
    root = Path(args.root).resolve()
    sub = submit.resubmit(root, args.executor, max_parallel=args.max_parallel, device=args.device,
                          runs_per_gpu=args.runs_per_gpu)
    return _after(args, root, sub["executor"], sub, set(sub["scope"]))  # answerable for the runs it took on


def _status(args) -> int:
    from costlaw.costmodel import CostlawError
    from costlaw.sweeps import status

    if args.watch is not None:
        if args.watch <= 0:
            raise CostlawError(f"--watch: must be > 0 seconds, got {args.watch:g}")
        from costlaw.sweeps.watch import watch

        return watch(args.root, args.watch, n_lines=args.lines, all_runs=args.all, wide=args.wide)
    st = status.collect(args.root, n_lines=args.lines)
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print(status.render(st, all_runs=args.all, width=None if args.wide else _width()))
    return status.exit_code(st)


def _width() -> int | None:
    """The terminal's width when stdout is one (or COLUMNS says), else None: a pipe gets every column."""
    import os
    import shutil

    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return shutil.get_terminal_size().columns
    return None


def _after(args, root: Path, executor: str, sub: dict, only: set | None) -> int:
    from costlaw.sweeps import status

    if executor == "slurm" and args.wait:
        from costlaw.sweeps.interrupt import Interrupts, SweepInterrupted

        with Interrupts() as interrupts:
            st = status.wait(root, poll_s=args.poll, echo=_log, stop=interrupts)
        if interrupts.is_set():
            raise SweepInterrupted(f"stopped waiting ({interrupts.name}); the Slurm jobs run on: "
                                   f"`costlaw sweep status --root {root} --watch` follows them")
    else:
        st = status.collect(root)
    counts = ", ".join(f"{v} {k}" for k, v in st["counts"].items() if v)
    print(f"sweep {st['name']}: {counts}")
    print("next:")
    print(f"  costlaw sweep status --root {root}" + (" --watch" if st["counts"]["running"] else ""))
    print(f"  costlaw ingest --root {root} --db {root / 'results.duckdb'}")
    if st["counts"]["failed"] or st["counts"]["preempted"] or st["counts"]["incomplete"]:
        print(f"  costlaw sweep resubmit --root {root} --failed")
    finished = executor != "slurm" or args.wait
    return status.exit_code(st, only, finished=finished)
