"""Trackers (issue 22): the trainer's metrics rows, also in TensorBoard event files and an offline Weights & Biases
run when the run config's [log] table asks; off by default and outside the run's identity (committed studies keep
their run ids: tests/costlaw/test_layout.py pins them); a resumed run continues its event stream without repeating
steps; a tracker asked for but not installed is refused before anything is written; one that fails mid-run is
dropped and the run goes on. Both packages install from PyPI without changing torch; the tests that need them skip,
saying so, where they are missing."""

import dataclasses
import glob
import json
import struct

import pytest

from costlaw.costmodel import ConfigError
from costlaw.costmodel.core.rundir import RunDir, run_id_of
from costlaw.runs import trackers
from costlaw.runs.config import LogConfig, RunConfig
from costlaw.runs.train import train_run
from costlaw.sweeps import expand, spec
from tests.runs.test_train import run_dir, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")


def logged(cfg: RunConfig, **log) -> RunConfig:
    return cfg.replace(log=LogConfig(**log))


def metrics(rd) -> dict[int, dict]:
    return {m["step"]: m for m in RunDir(rd).metrics()}


def test_log_is_off_by_default_and_outside_the_run_id():
    cfg = tiny_cfg(steps=10)
    on = logged(cfg, tensorboard=True, wandb=True, wandb_project="p")
    assert "log" not in cfg.to_dict() and on.to_dict()["log"]["wandb_project"] == "p"
    assert on.run_id == cfg.run_id == run_id_of(on.to_dict()) == run_id_of(cfg.to_dict())
    assert RunConfig.from_dict(on.to_dict()) == on
    with pytest.raises(ConfigError, match=r"^log.wandb_mode: 'cloud' is not one of offline, online$"):
        RunConfig.from_dict({**cfg.to_dict(), "log": {"wandb_mode": "cloud"}})
    with pytest.raises(ConfigError, match=r"^log.tensorbord: unknown key"):
        RunConfig.from_dict({**cfg.to_dict(), "log": {"tensorbord": True}})


SPEC = """
[sweep]
name = "logged"
[base.model]
d_model = 32
n_layers = 1
n_heads = 2
n_kv_heads = 1
head_dim = 16
ffn_dim = 64
vocab_size = 257
[base.train]
steps = 10
{log}
[[axes]]
grid = {{ "model.n_heads" = [2, 4] }}
"""


def test_a_spec_turns_trackers_on_without_renaming_its_runs():
    plain = expand.expand(spec.parse(SPEC.format(log="")), "/tmp/r")
    tracked = expand.expand(spec.parse(SPEC.format(log="[base.log]\ntensorboard = true\nwandb = true")), "/tmp/r")
    assert [r.run_id for r in plain] == [r.run_id for r in tracked]
    assert all(r.config.log.tensorboard and r.config.to_dict()["log"]["wandb"] for r in tracked)


def test_tensorboard_events_follow_metrics_and_a_resume_purges(tmp_path, stop_after):
    pytest.importorskip("tensorboard", reason="pip install 'costlaw[tensorboard]' to test the TensorBoard tracker")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = logged(tiny_cfg(steps=30, train={"log_every": 2, "checkpoint_every": 4}), tensorboard=True)
    rd = run_dir(tmp_path, cfg)
    assert train_run(cfg, rd, device="cpu", stop_event=stop_after(15), progress=False)["status"] == "preempted"
    s = train_run(cfg, rd, device="cpu", progress=False)
    assert s["status"] == "completed"
    ea = EventAccumulator(str(rd / trackers.TB_DIR))
    ea.Reload()
    loss = ea.Scalars("train/loss")
    rows = metrics(rd)
    assert [e.step for e in loss] == sorted(rows) == list(range(2, 31, 2))  # each step once, in order
    assert all(e.value == pytest.approx(rows[e.step]["loss"], rel=1e-6) for e in loss)
    assert [e.value for e in ea.Scalars("eval/val_loss")] == [pytest.approx(s["val_loss"], rel=1e-6)]
    assert {"train/lr", "train/grad_norm", "train/tokens_per_s", "train/tokens"} <= set(ea.Tags()["scalars"])
    # the store takes the run as it is: its config.json carries `log`, its id leaves it out
    from costlaw.cli import main

    assert json.loads((rd / "config.json").read_text())["config"]["log"]["tensorboard"] is True
    assert main(["ingest", "--root", str(tmp_path), "--db", str(tmp_path / "r.duckdb")]) == 0


def _wandb_history(run_dir) -> list[dict]:
    """The history rows of an offline W&B run, read from its .wandb file (LevelDB log records of protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    [path] = glob.glob(str(run_dir / trackers.WANDB_DIR / "offline-run-*" / "run-*.wandb"))
    with open(path, "rb") as f:
        data = f.read()
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            pos += left - 7
            continue
        chunk, pos = data[pos:pos + length], pos + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            if rec.WhichOneof("record_type") == "history":
                out.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in rec.history.item})
    return out


def test_wandb_offline_run_without_network(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="pip install 'costlaw[wandb]' to test the W&B tracker")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: offline must not need it
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = logged(tiny_cfg(steps=12, train={"log_every": 3}, name="tracked"), wandb=True, wandb_project="costlaw-test")
    rd = run_dir(tmp_path, cfg)
    s = train_run(cfg, rd, device="cpu", progress=False)
    assert s["status"] == "completed"
    history = _wandb_history(rd)
    rows = metrics(rd)
    assert [h["_step"] for h in history] == sorted(rows) == [3, 6, 9, 12]
    assert all(h["train/loss"] == pytest.approx(rows[h["_step"]]["loss"]) for h in history)
    assert glob.glob(str(rd / trackers.WANDB_DIR / f"offline-run-*-{cfg.run_id}"))  # the W&B run id is the run id
    assert "tracker" not in (rd / "train.log").read_text()  # no tracker was dropped


def test_a_missing_tracker_package_is_refused_before_writing(tmp_path, monkeypatch):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    cfg = logged(tiny_cfg(steps=4), wandb=True)
    with pytest.raises(ConfigError, match=r"^log.wandb: needs the wandb package; pip install 'costlaw\[wandb\]' or "
                                          r"set log.wandb = false$"):
        train_run(cfg, run_dir(tmp_path, cfg), device="cpu", progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_failing_tracker_is_dropped_and_training_goes_on(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="pip install 'costlaw[tensorboard]' to test the TensorBoard tracker")
    from torch.utils.tensorboard import SummaryWriter

    def full_disk(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", full_disk)
    cfg = logged(tiny_cfg(steps=6, train={"log_every": 2}), tensorboard=True)
    rd = run_dir(tmp_path, cfg)
    assert train_run(cfg, rd, device="cpu", progress=False)["status"] == "completed"
    assert sorted(metrics(rd)) == [2, 4, 6]
    log = (rd / "train.log").read_text()
    assert log.count("tracker tensorboard failed (OSError: [Errno 28] No space left on device); training goes on "
                     "without it") == 1


def test_a_fresh_start_removes_old_tracker_files(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install 'costlaw[tensorboard]' to test the TensorBoard tracker")
    cfg = logged(tiny_cfg(steps=4, train={"log_every": 2}), tensorboard=True)
    rd = run_dir(tmp_path, cfg)
    stale = rd / trackers.TB_DIR / "events.out.tfevents.0.stale"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    assert train_run(cfg, rd, device="cpu", resume=False, progress=False)["status"] == "completed"
    assert not stale.exists() and glob.glob(str(rd / trackers.TB_DIR / "events.out.tfevents.*"))
    assert dataclasses.asdict(cfg.log)["tensorboard"] is True
