"""Sweeps on a real Slurm cluster (tests/slurm/cluster.sh) with the small trainer of train_run's contract:
job arrays per stage, aftercorr dependencies, a failed parent cancelling its child, resubmit, and the status
poll (one sacct call for the whole sweep). The real trainer's end-to-end run is test_slurm_e2e.py."""

import json
import subprocess
import time
from pathlib import Path

import pytest

from costlaw.costmodel.core.rundir import RunDir
from costlaw.sweeps import record, status, submit

from .conftest import FAKE, STAGED_SPEC

pytestmark = [pytest.mark.slurm]


def _wait(root, timeout_s=240):
    st = status.wait(root, poll_s=1.0, timeout_s=timeout_s)
    assert not st["counts"]["pending"] and not st["counts"]["running"], st["counts"]
    return st


def _sbatch_scripts(root: Path) -> list[str]:
    return [p.read_text() for p in (root / "submitit").rglob("*_submission.sh")]


def test_stages_submit_as_arrays_with_aftercorr(tmp_path, write_spec, job_env):
    root = tmp_path / "root"
    sub = submit.submit_spec(write_spec(name="arr"), root, "slurm", train_fn=FAKE, progress=False)
    assert sub["submitted"] == 4
    runs = record.load(root)["runs"]
    pre = [r["jobs"][0]["job_id"] for r in runs if r["stage"] == "pretrain"]
    ext = [r["jobs"][0]["job_id"] for r in runs if r["stage"] == "extend"]
    a, b = pre[0].split("_")[0], ext[0].split("_")[0]
    assert pre == [f"{a}_0", f"{a}_1"] and ext == [f"{b}_0", f"{b}_1"] and a != b
    scripts = _sbatch_scripts(root)
    assert any("#SBATCH --array=0-1%2" in s and "#SBATCH --job-name=arr-pretrain" in s for s in scripts)
    assert any(f"#SBATCH --dependency=aftercorr:{a}" in s and "#SBATCH --kill-on-invalid-dep=yes" in s
               for s in scripts)
    st = _wait(root)
    assert st["counts"]["completed"] == 4
    by_id = {r["run_id"]: r for r in runs}
    for r in runs:
        if r["stage"] == "extend":
            done_t = (root / "runs" / r["parent_id"] / "DONE").stat().st_mtime
            assert RunDir(root / "runs" / r["run_id"]).metrics()[0]["t"] >= done_t
            assert by_id[r["parent_id"]]["point"] == r["point"]
    for r in runs:  # each run ran inside its own array task
        s = RunDir(root / "runs" / r["run_id"]).summary()
        assert s["env"]["slurm_job_id"] is not None
    # submitting again skips every finished run and submits nothing
    again = submit.submit_spec(write_spec(name="arr"), root, "slurm", train_fn=FAKE, progress=False)
    assert again["submitted"] == 0 and again["skipped_done"] == 4


FAILING = STAGED_SPEC.replace('grid = {{ "model.n_heads" = [2, 4] }}',
                              'list = [{{ "model.n_heads" = 2 }}, {{ "model.n_heads" = 4, "data.corpus" = "fail" }}]')


def test_failed_parent_cancels_its_child_and_resubmit_recovers(tmp_path, write_spec, job_env):
    job_env.setenv("COSTLAW_FAKE_FAIL", "1")
    root = tmp_path / "root"
    text = FAILING.format(name="fail", steps=6, seeds="", data="", time_min=5, signal_delay_s=30)
    submit.submit_spec(write_spec(text, name="fail"), root, "slurm", train_fn=FAKE, progress=False)
    st = _wait(root)
    by_state = {}
    for r in st["runs"]:
        by_state.setdefault(r["state"], []).append(r)
    assert len(by_state["completed"]) == 2 and len(by_state["failed"]) == 2, st["counts"]
    parent = next(r for r in by_state["failed"] if r["stage"] == "pretrain")
    child = next(r for r in by_state["failed"] if r["stage"] == "extend")
    assert parent["error"] == "RuntimeError: fake failure" and parent["job_state"] == "FAILED"
    assert any("fake failure" in line for line in parent["stderr"])
    assert child["job_state"].startswith("CANCELLED")  # kill-on-invalid-dep: never left pending
    job_env.setenv("COSTLAW_FAKE_FAIL", "0")  # the cause is fixed
    sub = submit.resubmit(root, train_fn=FAKE, progress=False)
    assert sub["submitted"] == 2 and sub["skipped_done"] == 2
    st = _wait(root)
    assert st["counts"]["completed"] == 4
    assert {r["run_id"]: r["attempts"] for r in st["runs"]}[parent["run_id"]] == 2


def test_status_polls_every_job_with_one_sacct_call(tmp_path, write_spec, job_env, monkeypatch):
    """Many array tasks, one sacct call (and squeue only for jobs sacct does not list yet)."""
    import submitit.core.core as core

    root = tmp_path / "root"
    submit.submit_spec(write_spec(name="poll"), root, "slurm", train_fn=FAKE, progress=False)
    _wait(root)
    from costlaw.sweeps.jobs import slurm_states

    jobs = [r["jobs"][0]["job_id"] for r in record.load(root)["runs"]]
    deadline = time.monotonic() + 60  # DONE is written before the job step exits; sacct follows a moment later
    while set(slurm_states(jobs).values()) != {"COMPLETED"} and time.monotonic() < deadline:
        time.sleep(0.5)
    calls = []
    real = core.subprocess.check_output

    def counting(cmd, *a, **k):
        calls.append(cmd[0])
        return real(cmd, *a, **k)

    monkeypatch.setattr(core.subprocess, "check_output", counting)
    st = status.collect(root)
    assert calls == ["sacct"] and st["counts"]["completed"] == 4
    assert all(r["job_state"] == "COMPLETED" for r in st["runs"])
    calls.clear()
    states = slurm_states(jobs)
    assert calls == ["sacct"] and set(states.values()) == {"COMPLETED"}
    sacct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(
        sorted({j.split("_")[0] for j in jobs}))], capture_output=True, text=True, check=True).stdout
    assert sacct.count("COMPLETED") == len(jobs), sacct
    assert json.loads((root / "sweep.json").read_text())["name"] == "poll"


def test_two_slurm_tasks_form_a_torch_distributed_group(tmp_path, job_env):
    """What a multi-GPU run does, on CPU: tasks_per_node = 2 (srun starts two tasks), each task's worker exports
    TorchDistributedEnvironment (RANK, WORLD_SIZE, MASTER_ADDR/PORT from the job) and the group forms (gloo)."""
    import submitit

    from costlaw.runs.config import RunConfig
    from costlaw.sweeps.worker import RunTask

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        job_env.delenv(k, raising=False)
    cfg = RunConfig.from_dict({"model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
                                         "head_dim": 16, "ffn_dim": 64, "vocab_size": 257}, "train": {"steps": 1}})
    task = RunTask(str(tmp_path), cfg.to_dict(), cfg.run_id, train_fn="tests.sweeps.fake_trainer:dist_check")
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j", cluster="slurm")
    ex.update_parameters(timeout_min=5, tasks_per_node=2, cpus_per_task=1, nodes=1, name="dist")
    job = ex.submit(task)
    deadline = time.monotonic() + 240
    while not job.done() and time.monotonic() < deadline:
        time.sleep(1)
    assert [r["sum"] for r in job.results()] == [3.0, 3.0]  # 1 + 2 all-reduced across the two ranks
    for rank in (0, 1):
        r = json.loads((task.run_dir / f"rank{rank}.json").read_text())
        assert r["sum"] == 3.0 and r["given"] is True
        assert r["env"]["RANK"] == str(rank) and r["env"]["WORLD_SIZE"] == "2" and r["env"]["LOCAL_RANK"] == str(rank)


def test_fused_groups_run_as_slurm_jobs(tmp_path, write_spec, job_env):
    """--fuse on Slurm: each config's seeds are one array task; every member records that job; the extend runs,
    each after its own parent's job, train unfused."""
    import sysconfig

    job_env.setenv("COSTLAW_CACHE", str(tmp_path / "cache"))
    email = str(Path(sysconfig.get_paths()["stdlib"]) / "email")
    spec = write_spec(name="fz", steps=6, seeds="seeds = [0, 1, 2]", data=f'corpus = "{email}"\n')
    root = tmp_path / "root"
    sub = submit.submit_spec(spec, root, "slurm", progress=False, fuse=True, device="cpu")
    assert len(sub["fused"]) == 2
    runs = {r["run_id"]: r for r in record.load(root)["runs"]}
    for ids in sub["fused"].values():
        jobs = {runs[i]["jobs"][-1]["job_id"] for i in ids}
        assert len(jobs) == 1 and next(iter(jobs)).split("_")[0].isdigit()
    st = _wait(root, timeout_s=420)
    assert st["counts"]["completed"] == 12, st["counts"]
    for ids in sub["fused"].values():
        envs = {RunDir(root / "runs" / i).summary()["env"]["slurm_job_id"] for i in ids}
        assert len(envs) == 1 and None not in envs  # the members trained in one Slurm job
