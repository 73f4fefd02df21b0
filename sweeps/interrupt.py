"""Ctrl-C and SIGTERM during `costlaw sweep submit|resubmit` are a preemption, as they are for `costlaw run`: the
submitter asks its running trainers to checkpoint, records what happened in sweep.json and exits with
exitcodes.INTERRUPTED and one line; a later resubmit continues from the checkpoints.

`Interrupts` turns the two signals into a count the submitter polls (in the main thread only: Python runs signal
handlers there). The handler takes no lock, not even an Event's: a second signal landing inside the first handler's
critical section would wait on a lock its own thread holds, forever (Ctrl-C twice, or a job's SIGTERM forwarded by
its controller beside the one sent to its group). `deferred()` holds the signals around a step that must not be cut
in half, an sbatch call and the record of the job ids it returned: they stay pending and arrive when the step is
done, and sbatch, started inside, inherits the block, so a Ctrl-C at the terminal reaches neither half way.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SweepInterrupted(KeyboardInterrupt):
    """The submitter stopped on Ctrl-C or SIGTERM after recording its state; `str()` is the one line to print.
    A KeyboardInterrupt, so a caller that does not know it still stops as it would on Ctrl-C."""


class Interrupts:
    SLICE_S = 0.05  # how often sleep() looks at the count

    def __init__(self):
        self.count = 0
        self.signum: int | None = None
        self._previous: dict = {}
        self._callbacks: list = []

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.count += 1
        self.signum = signum
        for callback in list(self._callbacks):
            callback()

    def is_set(self) -> bool:
        return self.count > 0

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, less when a signal comes meanwhile; whether one did."""
        seen = self.count
        deadline = time.monotonic() + seconds
        while self.count == seen and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(self.SLICE_S, left))
        return self.count != seen

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "interrupt"

    @contextlib.contextmanager
    def calling(self, callback):
        """Call `callback()` on each signal while inside (the debug executor stops its in-process trainer); it runs
        in the signal handler, so it must take no lock (RunTask.request_stop sets a plain flag)."""
        self._callbacks.append(callback)
        try:
            yield
        finally:
            self._callbacks.remove(callback)

    @contextlib.contextmanager
    def deferred(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
