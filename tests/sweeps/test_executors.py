"""The executors (debug in-process, local throttled subprocesses), stage order, skip-on-DONE, status, resubmit
and the checkpointable worker, with a small trainer of train_run's contract (tests/sweeps/fake_trainer.py)."""

import json
import os
import threading
import time
from pathlib import Path

import cloudpickle
import pytest

from costlaw.costmodel.core.rundir import RunDir
from costlaw.sweeps import record, status, submit
from costlaw.sweeps.worker import RunTask, distributed_env

from .conftest import FAKE, STAGED_SPEC, TINY_POINT


def _runs(root):
    return record.load(root)["runs"]


def _first_last_t(root, run_id):
    m = RunDir(Path(root) / "runs" / run_id).metrics()
    return m[0]["t"], m[-1]["t"]


def test_debug_executor_runs_stages_in_order_and_skips_done(tmp_path, write_spec, job_env):
    spec = write_spec()
    root = tmp_path / "root"
    sub = submit.submit_spec(spec, root, "debug", train_fn=FAKE, progress=False)
    assert sub["submitted"] == 4 and sub["outcome"] == {"completed": 4}
    runs = _runs(root)
    assert [r["stage"] for r in runs] == ["pretrain", "pretrain", "extend", "extend"]
    by_id = {r["run_id"]: r for r in runs}
    for r in runs:
        assert len(r["jobs"]) == 1 and r["jobs"][0]["executor"] == "debug"
        if r["stage"] == "extend":
            parent = by_id[r["parent_id"]]
            assert parent["stage"] == "pretrain" and parent["point"] == r["point"]
            assert r["config"]["train"]["init_from"] == str(root / "runs" / parent["run_id"])
            assert r["config"]["train"]["steps"] == parent["config"]["train"]["steps"] // 2
            assert r["config"]["data"]["seq_len"] == 32
            done_t = (root / "runs" / parent["run_id"] / "DONE").stat().st_mtime
            assert _first_last_t(root, r["run_id"])[0] >= done_t
            cfg = json.loads((root / "runs" / r["run_id"] / "config.json").read_text())
            assert cfg["base_run_id"] == parent["run_id"] and cfg["sweep"] == "t"
    st = status.collect(root)
    assert st["counts"]["completed"] == 4 and st["total"] == 4
    again = submit.submit_spec(spec, root, "debug", train_fn=FAKE, progress=False)
    assert again["submitted"] == 0 and again["skipped_done"] == 4
    assert all(len(r["jobs"]) == 1 for r in _runs(root))
    assert len(record.load(root)["submissions"]) == 2


def test_root_of_another_sweep_is_refused(tmp_path, write_spec, job_env):
    from costlaw.costmodel import CostlawError

    root = tmp_path / "root"
    submit.submit_spec(write_spec(name="a"), root, "debug", train_fn=FAKE, progress=False)
    with pytest.raises(CostlawError, match="--root: .* holds sweep 'a', not 'b'"):
        submit.submit_spec(write_spec(name="b"), root, "debug", train_fn=FAKE, progress=False)


LADDER = """
[sweep]
name = "thr"
""" + TINY_POINT + """[base.train]
steps = 25
checkpoint_every = 5
[[axes]]
grid = { "train.lr" = [0.001, 0.002, 0.003, 0.004, 0.005] }
[resources]
cpus = 1
time_min = 5
signal_delay_s = 30
"""


def test_local_executor_throttles_to_max_parallel(tmp_path, write_spec, job_env):
    job_env.setenv("COSTLAW_FAKE_STEP_S", "0.06")  # 25 steps: about 1.5 s per run
    root = tmp_path / "root"
    sub = submit.submit_spec(write_spec(LADDER, name="thr"), root, "local", max_parallel=2, train_fn=FAKE,
                             progress=False)
    assert sub["outcome"] == {"completed": 5}
    spans = [_first_last_t(root, r["run_id"]) for r in _runs(root)]
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    live = peak = 0
    for _, d in events:
        live += d
        peak = max(peak, live)
    assert peak <= 2, spans
    assert all(r["jobs"][0]["executor"] == "local" and int(r["jobs"][0]["job_id"]) > 0 for r in _runs(root))


def test_local_trainers_share_the_cpus(tmp_path, write_spec, job_env, monkeypatch, capsys):
    """Trainers started together split this machine's CPUs instead of each taking resources.cpus threads
    (oversubscribed OpenMP threads spin against each other), and the sweep log says so."""
    from costlaw.sweeps import preflight

    monkeypatch.setattr(preflight, "machine_cpus", lambda: 4)
    spec = write_spec(LADDER.replace("cpus = 1", "cpus = 4"), name="share")
    sub = submit.submit_spec(spec, tmp_path / "root", "local", max_parallel=2, train_fn=FAKE, progress=True)
    assert sub["outcome"] == {"completed": 5}
    threads = {json.loads((tmp_path / "root" / "runs" / r["run_id"] / "summary.json").read_text())["env"]
               ["omp_num_threads"] for r in _runs(tmp_path / "root")}
    assert threads == {"2"}
    assert "would oversubscribe this machine's 4 CPUs: each uses 2 threads" in capsys.readouterr().err
    sub = submit.submit_spec(write_spec(LADDER.replace("cpus = 1", "cpus = 2"), name="alone"), tmp_path / "r2",
                             "local", max_parallel=2, train_fn=FAKE, progress=False)
    assert {json.loads((tmp_path / "r2" / "runs" / r["run_id"] / "summary.json").read_text())["env"]
            ["omp_num_threads"] for r in _runs(tmp_path / "r2")} == {"2"}  # 2 x 2 fit in 4: as asked


def _peak_overlap(spans) -> int:
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    live = peak = 0
    for _, d in events:
        live += d
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("runs_per_gpu, expect_peak", [(1, 1), (3, 3)])
def test_local_executor_packs_runs_per_gpu(tmp_path, write_spec, job_env, runs_per_gpu, expect_peak):
    """One GPU: runs of one GPU each go one at a time, or `runs_per_gpu` at a time when packed."""
    job_env.setenv("COSTLAW_FAKE_STEP_S", "0.06")
    job_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    spec = write_spec(LADDER.replace("cpus = 1", "cpus = 1\ngpus = 1"), name="thr")
    root = tmp_path / "root"
    sub = submit.submit_spec(spec, root, "local", train_fn=FAKE, progress=False, runs_per_gpu=runs_per_gpu)
    assert sub["outcome"] == {"completed": 5}
    assert _peak_overlap([_first_last_t(root, r["run_id"]) for r in _runs(root)]) == expect_peak


FAILING = STAGED_SPEC.replace('grid = {{ "model.n_heads" = [2, 4] }}',
                              'list = [{{ "model.n_heads" = 2 }}, {{ "model.n_heads" = 4, "data.corpus" = "fail" }}]')


def test_local_failure_is_reported_then_resubmitted(tmp_path, write_spec, job_env, capsys):
    job_env.setenv("COSTLAW_FAKE_FAIL", "1")
    root = tmp_path / "root"
    text = FAILING.format(name="f", steps=6, seeds="", data="", time_min=5, signal_delay_s=30)
    sub = submit.submit_spec(write_spec(text, name="f"), root, "local", train_fn=FAKE, progress=False)
    assert sub["outcome"] == {"completed": 2, "failed": 1, "skipped": 1}
    st = status.collect(root)
    assert st["counts"]["completed"] == 2 and st["counts"]["failed"] == 1 and st["counts"]["unknown"] == 1
    failed = next(r for r in st["runs"] if r["state"] == "failed")
    assert failed["error"] == "RuntimeError: fake failure"
    assert any("failing on purpose" in line for line in failed["train_log"])
    assert any("fake failure" in line for line in failed["stderr"])  # submitit's stderr of the job
    text_out = status.render(st)
    assert "failed: " + failed["run_id"] in text_out and "fake failure" in text_out
    # the cause is fixed: resubmit --failed runs the failed run (DONE removed, same id) and its skipped child
    job_env.delenv("COSTLAW_FAKE_FAIL")
    sub = submit.resubmit(root, train_fn=FAKE, progress=False)
    assert sub["submitted"] == 2 and sub["skipped_done"] == 2 and sub["outcome"] == {"completed": 2}
    st = status.collect(root)
    assert st["counts"]["completed"] == 4
    assert next(r for r in st["runs"] if r["run_id"] == failed["run_id"])["attempts"] == 2
    assert submit.resubmit(root, train_fn=FAKE, progress=False)["submitted"] == 0


def _task(tmp_path, steps=200, train_fn=FAKE, **kw):
    from costlaw.runs.config import RunConfig

    cfg = RunConfig.from_dict({"model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
                                         "head_dim": 16, "ffn_dim": 64, "vocab_size": 257},
                               "data": {"seq_len": 16}, "train": {"steps": steps, "checkpoint_every": 50}})
    return RunTask(str(tmp_path), cfg.to_dict(), cfg.run_id, sweep="s", train_fn=train_fn, **kw)


def test_checkpoint_stops_at_a_step_and_the_requeued_task_resumes(tmp_path, job_env):
    task = _task(tmp_path, checkpoint_wait_s=10)
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("r", task()), daemon=True)
    th.start()
    rd = RunDir(task.run_dir)
    deadline = time.time() + 20
    while len(rd.metrics()) < 5 and time.time() < deadline:
        time.sleep(0.02)
    delayed = task.checkpoint()
    th.join(10)
    s = rd.summary()
    assert s["status"] == "preempted" and 5 <= s["steps"] < 200 and not rd.is_done()
    assert out["r"]["status"] == "preempted"
    # what submitit pickles for the requeue: a fresh task (no thread, no result), same run
    fresh = cloudpickle.loads(cloudpickle.dumps(delayed))
    assert isinstance(fresh.function, RunTask) and fresh.function is not task
    assert fresh.function.run_id == task.run_id and fresh.function._thread is None
    assert set(fresh.function.__getstate__()) == set(task.__getstate__())
    result = fresh.result()
    assert result["status"] == "completed" and result["steps"] == 200
    assert result["resumes"] == 1 and result["started_at_step"] == s["steps"]
    assert f"resumed from step {s['steps']}" in rd.file("train.log").read_text()
    steps = [m["step"] for m in rd.metrics()]
    assert sorted(set(steps)) == list(range(1, 201))
    # idempotent: a finished run returns its summary without training
    assert _task(tmp_path)()["steps"] == 200 and len(rd.metrics()) == len(steps)


def test_failed_summary_fails_the_job(tmp_path, job_env):
    job_env.setenv("COSTLAW_FAKE_FAIL", "1")
    from costlaw.runs.config import RunConfig

    cfg = RunConfig.from_dict({"model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
                                         "head_dim": 16, "ffn_dim": 64, "vocab_size": 257},
                               "data": {"seq_len": 16, "corpus": "fail"}, "train": {"steps": 3}})
    with pytest.raises(RuntimeError, match="failed: RuntimeError: fake failure"):
        RunTask(str(tmp_path), cfg.to_dict(), cfg.run_id, train_fn=FAKE)()


def test_child_of_unfinished_parent_refuses(tmp_path, job_env):
    from costlaw.sweeps.worker import ParentNotCompleted

    task = _task(tmp_path, parent_id="0" * 16)
    with pytest.raises(ParentNotCompleted, match="has not finished"):
        task()
    (tmp_path / "runs" / ("0" * 16)).mkdir(parents=True)
    (tmp_path / "runs" / ("0" * 16) / "DONE").write_text('{"run_id": "x", "status": "diverged"}\n')
    with pytest.raises(ParentNotCompleted, match="ended diverged"):
        task()


def test_config_drift_is_refused(tmp_path, job_env):
    task = _task(tmp_path)
    task.run_id = "f" * 16
    with pytest.raises(RuntimeError, match="hashes to"):
        task()


@pytest.mark.slow
def test_local_timeout_signal_checkpoints_and_requeues(tmp_path, write_spec, job_env):
    """The local controller sends USR2 `signal_delay_s` before the time limit: the worker checkpoints, the
    task is requeued and finishes from its checkpoint (the same path Slurm timeouts take)."""
    job_env.setenv("COSTLAW_FAKE_STEP_S", "0.05")
    text = LADDER.replace('grid = { "train.lr" = [0.001, 0.002, 0.003, 0.004, 0.005] }',
                          'grid = { "train.lr" = [0.001] }').replace("steps = 25", "steps = 300")
    text = text.replace("time_min = 5\nsignal_delay_s = 30", "time_min = 1\nsignal_delay_s = 50")
    root = tmp_path / "root"
    sub = submit.submit_spec(write_spec(text, name="thr"), root, "local", train_fn=FAKE, progress=False)
    assert sub["outcome"] == {"completed": 1}
    rid = _runs(root)[0]["run_id"]
    rd = RunDir(root / "runs" / rid)
    s = rd.summary()
    assert s["status"] == "completed" and s["steps"] == 300 and s["resumes"] >= 1 and s["started_at_step"] > 0
    assert "preempted at step" in rd.file("train.log").read_text()


def test_distributed_env_outside_a_job_is_none(monkeypatch):
    for k in list(os.environ):
        if k.startswith("SUBMITIT_"):
            monkeypatch.delenv(k)
    assert distributed_env(0) is None and distributed_env(4) is None


@pytest.mark.slow
def test_two_local_tasks_form_a_gloo_group(tmp_path, job_env):
    """tasks_per_node = 2 on CPU: each task exports TorchDistributedEnvironment and joins one process group."""
    import submitit

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        job_env.delenv(k, raising=False)
    task = _task(tmp_path, train_fn="tests.sweeps.fake_trainer:dist_check")
    ex = submitit.LocalExecutor(folder=tmp_path / "submitit" / "%j")
    ex.update_parameters(timeout_min=2, tasks_per_node=2)
    job = ex.submit(task)
    deadline = time.time() + 90
    while not job.done() and time.time() < deadline:
        time.sleep(0.2)
    r0 = json.loads((task.run_dir / "rank0.json").read_text())
    assert r0["sum"] == 3.0 and r0["given"] is True
    assert r0["env"]["WORLD_SIZE"] == "2" and r0["env"]["RANK"] == "0"
    assert 20000 <= int(r0["env"]["MASTER_PORT"]) <= 60000


def test_only_done_is_terminal(tmp_path):
    """A failed run being retried (DONE removed, old summary still "failed") counts as running while its job
    lives, so a second resubmit does not submit it twice."""
    rd = RunDir(tmp_path / "runs" / ("a" * 16))
    rd.path.mkdir(parents=True)
    run = {"run_id": rd.path.name, "jobs": [{"job_id": str(os.getpid()), "executor": "local", "folder": "x"}]}
    assert status.dir_status(rd) == "absent"
    rd.file("summary.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    assert status.dir_status(rd) == "incomplete"
    assert status.run_state(tmp_path, run, {}, set()) == ("running", "RUNNING")
    rd.file("summary.json").write_text(json.dumps({"status": "preempted"}))
    assert status.dir_status(rd) == "preempted"
    rd.file("DONE").write_text(json.dumps({"run_id": "a", "status": "failed"}))
    assert status.run_state(tmp_path, run, {}, set())[0] == "failed"
    run["jobs"][0]["job_id"] = "999999999"
    rd.file("DONE").unlink()
    assert status.run_state(tmp_path, run, {}, set())[0] == "preempted"  # stopped at a checkpoint, not running
    slurm = {**run, "jobs": [{"job_id": "7_1", "executor": "slurm", "folder": "x"}]}
    for js, want in (("PENDING", "pending"), ("RUNNING", "running"), ("REQUEUED", "pending"),
                     ("CANCELLED by 0", "preempted"), ("UNKNOWN", "preempted")):
        assert status.run_state(tmp_path, slurm, {"7_1": js}, set())[0] == want, js
    rd.file("summary.json").unlink()
    rd.file("config.json").write_text("{}")
    for js, want in (("CANCELLED by 0", "failed"), ("TIMEOUT", "failed"), ("COMPLETED", "failed"),
                     ("UNKNOWN", "unknown"), ("PREEMPTED", "preempted")):
        assert status.run_state(tmp_path, slurm, {"7_1": js}, set())[0] == want, js
    slurm["jobs"][0]["submitted"] = record.now()  # sacct and squeue lag a fresh submission
    assert status.run_state(tmp_path, slurm, {}, set())[0] == "pending"


def test_status_render_lists_unfinished_runs_of_a_large_sweep():
    runs = [{"run_id": f"{i:016x}", "stage": "pretrain", "label": f"lr={i}", "state": "completed" if i % 10 else
             "failed", "job_id": f"5_{i}", "job_state": "COMPLETED" if i % 10 else "FAILED", "attempts": 1,
             **({} if i % 10 else {"error": f"boom {i}", "stderr": ["Traceback", f"err {i}"],
                                   "stderr_path": f"/x/5_{i}_0_log.err", "train_log": [f"step {i}"]})}
            for i in range(60)]
    st = {"name": "big", "root": "/r", "total": 60, "counts": {"completed": 54, "failed": 6}, "runs": runs}
    text = status.render(st)
    assert text.splitlines()[0] == "sweep big at /r: 60 runs: 54 completed, 6 failed"
    assert f"{1:016x}" not in text and all(f"{i:016x}" in text for i in range(0, 60, 10))
    assert "error: boom 50" in text and "    err 50" in text and "/x/5_50_0_log.err:" in text
    assert all(f"{i:016x}" in status.render(st, all_runs=True) for i in range(60))


@pytest.mark.parametrize("order, expect", [("longest", ["pretrain", "pretrain", "extend", "extend"]),
                                           ("chains", ["pretrain", "extend", "pretrain", "extend"])])
def test_local_order_chains_finishes_a_chain_before_starting_the_next(tmp_path, write_spec, job_env, order, expect):
    """One at a time: by default both pretraining runs (the longest chains) go before either extension; with
    order chains an extension starts as soon as its parent completes, so a submission cut short leaves whole
    chains."""
    root = tmp_path / "root"
    sub = submit.submit_spec(write_spec(seeds="seeds = [0]"), root, "local", max_parallel=1, train_fn=FAKE,
                             progress=False, order=order)
    assert sub["outcome"] == {"completed": 4}
    by_start = sorted(_runs(root), key=lambda r: _first_last_t(root, r["run_id"])[0])
    assert [r["stage"] for r in by_start] == expect
    if order == "chains":
        assert by_start[1]["parent_id"] == by_start[0]["run_id"] and by_start[3]["parent_id"] == by_start[2]["run_id"]


def test_order_chains_needs_the_local_executor(tmp_path, write_spec):
    from costlaw.costmodel import CostlawError

    with pytest.raises(CostlawError, match="--order: the debug executor does not choose"):
        submit.submit_spec(write_spec(), tmp_path / "root", "debug", train_fn=FAKE, progress=False, order="chains")
    assert not (tmp_path / "root").exists()  # refused before the root was made
