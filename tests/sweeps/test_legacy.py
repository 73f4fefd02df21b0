"""Sweeps submitted before the one namespace: their submitit pickles name `sweeps.worker`; status rewrites them."""

import pickle
import sys
import types

import cloudpickle

from costlaw.sweeps import legacy, worker
from costlaw.sweeps.worker import TRAIN_FN, RunTask


def _old_pickle(task: RunTask) -> bytes:
    """`task` pickled as costlaw 0.1 did: its class in a top-level module `sweeps.worker`, the old train_fn."""
    old = types.ModuleType("sweeps.worker")
    cls = type("RunTask", (RunTask,), {"__module__": "sweeps.worker", "__qualname__": "RunTask"})
    old.RunTask = cls
    sys.modules["sweeps.worker"] = old
    try:
        task.__class__ = cls
        state = task.__getstate__()
        state["train_fn"] = "runs.train:train_run"
        obj = cls.__new__(cls)
        obj.__dict__.update(state)
        return pickle.dumps(obj)
    finally:
        del sys.modules["sweeps.worker"]


def test_old_pickles_are_rewritten_and_load(tmp_path):
    data = _old_pickle(RunTask(str(tmp_path), {"a": 1}, "abc"))
    assert b"sweeps.worker" in data and b"costlaw.sweeps" not in data
    job = tmp_path / "submitit" / "123" / "123_submitted.pkl"
    job.parent.mkdir(parents=True)
    job.write_bytes(data)
    (tmp_path / "submitit" / "other.pkl").write_bytes(cloudpickle.dumps({"x": 1}))
    assert legacy.migrate_pickles(tmp_path) == 1
    new = job.read_bytes()
    assert b"costlaw.sweeps.worker" in new and new.replace(b"costlaw.sweeps.worker", b"").find(b"sweeps.worker") < 0
    task = pickle.loads(new)
    assert type(task) is worker.RunTask and task.run_id == "abc" and task.train_fn == TRAIN_FN
    assert legacy.migrate_pickles(tmp_path) == 0  # once only


def test_new_name():
    assert legacy.new_name("runs.train") == "costlaw.runs.train"
    assert legacy.new_name("costlaw.runs.train") == "costlaw.runs.train"
    assert legacy.new_name("submitit.helpers") == "submitit.helpers"
