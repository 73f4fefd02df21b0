"""`costlaw VERB ...`: each verb is a module `costlaw.cmd_<verb>` imported only when used, so
`costlaw query` never pays for torch and `costlaw --help` is instant.

A verb module defines `add_arguments(parser)` and `main(args) -> int`. Bad input raises a
`CostlawError`; it is printed as one line and the exit code is 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


class OneLineParser(argparse.ArgumentParser):
    """argparse, but errors are one line (the field and the fix) with exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: costlaw VERB [options]   (costlaw VERB --help for a verb's options)", "", "verbs:"]
    lines += [f"  {v:<{width}}  {d}" for v, d in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from importlib.metadata import version

        print(version("costlaw"))
        return 0
    verb = argv[0]
    if verb not in VERBS:
        print(f"costlaw: error: unknown verb {verb!r}; choose one of {', '.join(VERBS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"costlaw.cmd_{verb.replace('-', '_')}")
    parser = OneLineParser(prog=f"costlaw {verb}", description=VERBS[verb])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.main(args) or 0)
    except CostlawError as e:
        print(f"costlaw {verb}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `costlaw query ... | head`
        return 0
