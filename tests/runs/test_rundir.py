"""The run directory writers: atomic files, appendable JSONL, DONE only for terminal statuses, env capture."""

import json
import os

import pytest

from costlaw.costmodel import preset
from costlaw.costmodel.core.env import env_info
from costlaw.costmodel.core.files import append_jsonl, read_jsonl, repair_jsonl, write_json_atomic
from costlaw.costmodel.core.rundir import CONFIG, DONE, METRICS, SUMMARY, RunDir
from costlaw.runs.config import RunConfig


def _cfg():
    return RunConfig(model=preset("gqa-3m", vocab_size=257), name="t")


def test_config_summary_done_roundtrip(tmp_path):
    cfg = _cfg()
    rd = RunDir(tmp_path / "runs" / cfg.run_id)
    assert rd.status() == "absent"
    doc = rd.write_config(cfg, sweep="s1")
    on_disk = json.loads((rd.path / CONFIG).read_text())
    assert on_disk == doc
    assert on_disk["run_id"] == cfg.run_id and on_disk["model_id"] == cfg.model.config_id
    assert RunConfig.from_dict(on_disk["config"]).run_id == cfg.run_id
    assert on_disk["created"].endswith("Z") and on_disk["base_run_id"] is None and on_disk["sweep"] == "s1"
    assert rd.status() == "incomplete"
    rd.append_metrics({"step": 1, "loss": 3.0})
    rd.append_eval("val_loss", {"context": 256}, {"loss": 2.5, "tokens": 100})
    rd.write_summary({"run_id": cfg.run_id, "status": "preempted", "final_loss": float("nan")})
    assert rd.status() == "preempted" and not rd.is_done()
    assert rd.summary()["final_loss"] is None  # NaN is written as null: strict JSON
    with pytest.raises(ValueError):
        rd.write_done(cfg.run_id, "preempted")
    rd.write_summary({"run_id": cfg.run_id, "status": "completed"})
    rd.write_done(cfg.run_id, "completed")
    assert rd.done() == {"run_id": cfg.run_id, "status": "completed"}
    assert rd.status() == "completed"
    assert rd.evals() == [{"eval": "val_loss", "tags": {"context": 256}, "metrics": {"loss": 2.5, "tokens": 100}}]
    # no temporary files are left behind
    assert sorted(p.name for p in rd.path.iterdir()) == sorted([CONFIG, METRICS, "evals.jsonl", SUMMARY, DONE])


def test_summary_rejects_unknown_status(tmp_path):
    with pytest.raises(ValueError):
        RunDir(tmp_path).write_summary({"status": "running"})


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "x.json"
    write_json_atomic(p, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(p, {"a": object()})
    assert json.loads(p.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["x.json"]


def test_clean_tmp_removes_leftovers_only(tmp_path):
    rd = RunDir(tmp_path)
    rd.write_config(_cfg())
    (tmp_path / ".checkpoint.pt.123.tmp").write_bytes(b"half")
    (tmp_path / ".summary.json.abc.tmp").write_text("{")
    assert rd.clean_tmp() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG]


def test_repair_torn_jsonl(tmp_path):
    p = tmp_path / "m.jsonl"
    append_jsonl(p, {"step": 1})
    append_jsonl(p, {"step": 2})
    with open(p, "ab") as f:
        f.write(b'{"step": 3, "lo')
    assert repair_jsonl(p) == len(b'{"step": 3, "lo')
    assert read_jsonl(p) == [{"step": 1}, {"step": 2}]
    assert repair_jsonl(p) == 0


def test_env_info_fields(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    env = env_info("cpu")
    for key in ("gpu", "device", "torch", "python", "numpy", "git_commit", "git_dirty", "hostname", "costlaw",
                "platform", "slurm_job_id", "slurm_array_task_id"):
        assert key in env
    assert env["slurm_job_id"] == "4242" and env["device"] == "cpu" and env["gpu"] is None
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
