"""Fixtures shared by the runs/ tests: one torch thread, a private corpus cache, and a stop event that
preempts a run at a known step boundary."""

import threading

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny models on a shared CPU run far faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A corpus cache of the test's own, so prepared corpora never leak between tests."""
    monkeypatch.setenv("COSTLAW_CACHE", str(tmp_path / "cache"))


class StopAfter(threading.Event):
    """A stop event that becomes set after `n` checks: preemption at a known step boundary."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def is_set(self):
        self.n -= 1
        return self.n < 0 or super().is_set()


@pytest.fixture
def stop_after():
    return StopAfter
