"""Progress for long work, the one way costlaw shows it: a rich progress bar when the stream is a terminal,
plain log lines otherwise (every `every_s` seconds, or whenever the caller logs one). rich is imported only for
a bar, so a worker without it still logs."""

from __future__ import annotations

import importlib.util
import sys
import time


def _has_rich() -> bool:
    return importlib.util.find_spec("rich") is not None


class Progress:
    def __init__(self, total: float, desc: str, unit: str = "", every_s: float | None = 10.0,
                 enabled: bool = True, stream=None, bar: bool | None = None):
        """`bar`: None draws one when the stream is a terminal; False never does (log lines only)."""
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0.0
        self.t0 = self._last = time.perf_counter()
        self._bar = None
        tty = getattr(self.stream, "isatty", lambda: False)()
        if enabled and (tty if bar is None else bar and tty) and _has_rich():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=Console(file=self.stream), transient=False)
            self._task = self._bar.add_task(desc, total=total, info="")
            self._bar.start()

    @property
    def interactive(self) -> bool:
        return self._bar is not None

    def update(self, n: float = 1, info: str = "") -> None:
        self.set(self.done + n, info)

    def set(self, done: float, info: str = "") -> None:
        self.done = done
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done, info=info)
        elif self.every_s is not None and time.perf_counter() - self._last >= self.every_s:
            self._line(info)

    def _line(self, info: str = "") -> None:
        self._last = time.perf_counter()
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.done:,.0f}/{self.total:,.0f} {self.unit}{pct} {info}".rstrip(),
              file=self.stream, flush=True)

    def log(self, line: str) -> None:
        """A log line: above the bar on a terminal, plain otherwise."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(line, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def close(self, info: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, info=info)
            self._bar.stop()
            self._bar = None
        elif self.enabled and self.every_s is not None:
            self._line(f"{info} in {time.perf_counter() - self.t0:.1f}s".strip())
        self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
