"""`costlaw sweep status --watch [SECONDS]`: the status table, refreshed until no run is pending or running.

On a terminal the table redraws in place (rich's Live) at the terminal's width; otherwise (a log file, a pipe) each
refresh prints a time-stamped counts line and one line per pending or running run, so a log keeps the history.
Ctrl-C stops watching and exits 0: watching is not the work, and the runs go on. When the sweep is done the final
table is printed and the exit code is status's (exitcodes.FAILED when a run failed or diverged).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

from costlaw.costmodel.core import exitcodes
from costlaw.sweeps.status import collect, exit_code, render, running_lines


def _done(st: dict) -> bool:
    return not st["counts"]["pending"] and not st["counts"]["running"]


def watch(root: str | Path, interval: float, *, n_lines: int = 8, all_runs: bool = False, wide: bool = False,
          stream=None) -> int:
    stream = stream or sys.stdout
    tty = getattr(stream, "isatty", lambda: False)()
    try:
        if tty and importlib.util.find_spec("rich") is not None:
            st = _live(root, interval, n_lines, all_runs, wide, stream)
        else:
            st = _plain(root, interval, n_lines, stream)
            print(render(st, all_runs=all_runs), file=stream, flush=True)
    except KeyboardInterrupt:
        return exitcodes.OK
    return exit_code(st)


def _live(root, interval: float, n_lines: int, all_runs: bool, wide: bool, stream) -> dict:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console(file=stream, highlight=False)

    def view(st: dict, footer: str) -> Text:
        return Text(render(st, all_runs=all_runs, width=None if wide else console.width) + "\n" + footer)

    st = collect(root, n_lines=n_lines)
    with Live(view(st, ""), console=console, auto_refresh=False, transient=False) as live:
        while True:
            if _done(st):
                live.update(view(st, f"done at {time.strftime('%H:%M:%S')}"), refresh=True)
                return st
            live.update(view(st, f"{time.strftime('%H:%M:%S')}: refreshing every {interval:g} s; Ctrl-C stops "
                                 "watching"), refresh=True)
            time.sleep(interval)
            st = collect(root, n_lines=n_lines)


def _plain(root, interval: float, n_lines: int, stream) -> dict:
    while True:
        st = collect(root, n_lines=n_lines)
        counts = ", ".join(f"{v} {k}" for k, v in st["counts"].items() if v)
        print(f"{time.strftime('%H:%M:%S')} sweep {st['name']}: {counts}", file=stream, flush=True)
        for line in running_lines(st):
            print(line, file=stream, flush=True)
        if _done(st):
            return st
        time.sleep(interval)
