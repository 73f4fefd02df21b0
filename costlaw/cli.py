"""`costlaw VERB ...`: each verb is a module `costlaw.cmd_<verb>` imported only when used, so
`costlaw query` never pays for torch and `costlaw --help` is instant.

A verb module defines `add_arguments(parser)` and `main(args) -> int` (an exit code of
costmodel/core/exitcodes.py). How each outcome leaves the process, the same for every verb:

  the command line itself is wrong (unknown verb or flag, missing argument)   one line, exit USAGE (64)
  a value a user can fix (a CostlawError, an out-of-range or infinite number) one line, exit INPUT (2)
  Ctrl-C or SIGINT outside a verb's own handling                               one line, exit INTERRUPTED (3)
  anything else: a bug in costlaw                                              the traceback, a line asking to
                                                                               report it, exit INTERNAL (70)
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import os
import sys
import traceback
import warnings

from costlaw.costmodel.core import exitcodes
from costlaw.costmodel.core.errors import CostlawError

VERBS = {
    "quickstart": "run a small sweep on this machine, ingest, fit, recommend and write a report",
    "cost": "price a model config: parameters, FLOPs, memory, KV cache, roofline times",
    "run": "train and evaluate one run config into a run directory",
    "data": "prepare token shards from a corpus (stdlib, site-packages, a path or a glob)",
    "sweep": "plan, submit, resubmit a sweep spec (slurm | local | debug) and show its status (--watch: live)",
    "ingest": "load finished run directories into a DuckDB results file (the only writer)",
    "query": "run read-only SQL on a results file",
    "fit": "fit a scaling law to a table of runs, with bootstrap intervals and holdout checks",
    "isoflop": "IsoFLOP profiles (Chinchilla's Approach 2) from training curves: N*(C) and D*(C) with intervals",
    "recommend": "the cheapest config that reaches a target loss at given contexts",
    "validate": "cross-validate a store's laws: how often left-out runs land inside their intervals",
    "frontier": "loss vs inference memory / FLOPs Pareto sets per family",
    "report": "an HTML + Markdown report of a results file",
    "kv-eval": "evaluate KV-cache policies on a trained run across keep ratios",
    "calibrate": "fit measured GPU inference time and memory per family into rates for recommend --calibration",
    "compare-hybrid": "a dense and a hybrid extension of one checkpoint side by side: loss, retrieval, speed vs ideal",
    "export": "write a finished run as a Hugging Face checkpoint (config.json + model.safetensors) transformers loads",
}
# verbs whose first argument is an action; their modules hold ACTIONS = {action: what it does}
SUBCOMMANDS = ("sweep", "data")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, and where to look) with exit code USAGE."""

    def error(self, message: str):
        text = " ".join(message.split())
        self.exit(exitcodes.USAGE, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


def _actions(verb: str) -> dict[str, str]:
    return getattr(importlib.import_module(f"costlaw.cmd_{verb}"), "ACTIONS", {})


def _usage() -> str:
    rows = []
    for v, d in VERBS.items():
        rows.append((v, d))
        if v in SUBCOMMANDS:
            rows += [(f"  {v} {a}", what) for a, what in _actions(v).items()]
    width = max(len(r[0]) for r in rows)
    lines = ["usage: costlaw VERB [options]   (costlaw VERB --help for a verb's options)", "", "verbs:"]
    lines += [f"  {v:<{width}}  {d}" for v, d in rows]
    lines += ["", "flags that mean one thing on every verb:",
              "  --root DIR      a results root: run directories under DIR/runs/ (run, kv-eval, quickstart, sweep, "
              "ingest)",
              "  --out PATH      any other output file or directory (report, calibrate, query, fit, ...)",
              "  --json          one JSON document instead of the human summary",
              "  --wide          every column of a table (default: the terminal's width)",
              "  --wait SECONDS  how long to wait for another process holding a results file",
              "  --where EXPR    rows or runs to keep, in costlaw's one expression language (costmodel/core/expr.py)",
              "", "exit codes (the same for every verb):"]
    lines += [f"  {code:>3}  {what}" for code, what in exitcodes.TABLE]
    return "\n".join(lines)


def _unknown(verb: str) -> str:
    close = difflib.get_close_matches(verb, VERBS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"costlaw: error: unknown verb {verb!r}; {hint}choose one of {', '.join(VERBS)} (costlaw --help)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:  # while importing or parsing: nothing was started
        print("costlaw: interrupted; nothing was started", file=sys.stderr)
        return exitcodes.INTERRUPTED


def _main(argv: list[str]) -> int:
    if not argv:
        print("costlaw: error: give a verb: costlaw VERB [options]; costlaw --help lists the verbs",
              file=sys.stderr)
        return exitcodes.USAGE
    if argv[0] in ("-h", "--help"):
        print(_usage())
        return exitcodes.OK
    if argv[0] == "--version":
        from importlib.metadata import version

        print(version("costlaw"))
        return exitcodes.OK
    verb = argv[0]
    if verb not in VERBS:
        print(_unknown(verb), file=sys.stderr)
        return exitcodes.USAGE
    module = importlib.import_module(f"costlaw.cmd_{verb.replace('-', '_')}")
    parser = OneLineParser(prog=f"costlaw {verb}", description=VERBS[verb])
    module.add_arguments(parser)
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as e:  # --help (0) or a usage error (one line already printed)
        return e.code if isinstance(e.code, int) else exitcodes.USAGE
    with _one_line_warnings(f"costlaw {verb}"):
        return _run(verb, module, parser, args)


def _run(verb: str, module, parser, args) -> int:
    from costlaw import options

    try:
        options.check_values(parser, args)
        return int(module.main(args) or 0)
    except CostlawError as e:
        print(f"costlaw {verb}: error: {_one_line(str(options.as_flag(e, parser, args)))}", file=sys.stderr)
        return exitcodes.INPUT
    except KeyboardInterrupt:
        print(f"costlaw {verb}: interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED
    except BrokenPipeError:  # `costlaw query ... | head`: the reader has what it wanted
        _quiet_stdout()
        return exitcodes.OK
    except OSError as e:
        if e.filename is None:
            return _internal(verb, e)
        # the file system said no (permission, no space, a path that vanished): the user's to fix, not a bug
        print(f"costlaw {verb}: error: {e.filename}: {e.strerror or e}; check the path, its permissions and the "
              "free space", file=sys.stderr)
        return exitcodes.INPUT
    except Exception as e:  # anything else is a bug: say so, with the traceback to report
        return _internal(verb, e)


def _internal(verb: str, e: BaseException) -> int:
    traceback.print_exception(e)
    print(f"costlaw {verb}: internal error ({type(e).__name__}); this is a bug in costlaw: please report it with the "
          "command line and the traceback above", file=sys.stderr)
    return exitcodes.INTERNAL


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush into the closed pipe says nothing."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@contextlib.contextmanager
def _one_line_warnings(prog: str):
    """Library warnings as `costlaw VERB: warning: ...`, without the file and line they were raised at."""
    before = warnings.formatwarning

    def fmt(message, category, filename, lineno, line=None):
        return f"{prog}: warning: {_one_line(str(message))}\n"

    warnings.formatwarning = fmt
    try:
        yield
    finally:
        warnings.formatwarning = before
