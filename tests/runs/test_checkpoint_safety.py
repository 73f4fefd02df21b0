"""Checkpoints never execute (runs/checkpoint.py): a pickle planted as checkpoint.pt — whose unpickling would create
a file — is refused in one line on --resume, train.init_from and kv-eval, and nothing is created; another run's
checkpoint is refused from its header before any weights are read; checkpoints written by the previous code
(numpy's RNG state as an ndarray, no header) still resume exactly."""

import builtins
import importlib
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from costlaw.cli import main as cli
from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.rundir import CHECKPOINT, CHECKPOINT_HEADER, DONE, RunDir
from costlaw.runs.checkpoint import load_checkpoint, rng_state, set_rng_state
from costlaw.runs.train import train_run
from tests.runs.test_train import _cli, run_dir, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")


class Planted:
    """Unpickling this opens (creates) `marker` for writing: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def plant(path, run_id, marker, form: str) -> None:
    """A malicious checkpoint.pt: torch.save's zip ("zip"), with a header naming the run ("header"), or a bare
    pickle ("pickle")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "pickle":
        path.write_bytes(pickle.dumps({"run_id": run_id, "model": Planted(marker)}))
        return
    torch.save({"run_id": run_id, "model": Planted(marker), "step": 1}, path)
    if form == "header":
        (path.parent / CHECKPOINT_HEADER).write_text(json.dumps({"format": 2, "run_id": run_id, "step": 1}))


def test_planted_pickle_is_refused_on_resume(tmp_path):
    cfg = tiny_cfg(steps=5)
    toml = tmp_path / "run.toml"
    toml.write_text(cfg.to_toml())
    rd = run_dir(tmp_path, cfg)
    marker = tmp_path / "pwned"
    RunDir(rd).write_config(cfg)
    plant(rd / CHECKPOINT, cfg.run_id, marker, "zip")
    p = _cli([str(toml), "--root", str(tmp_path), "--device", "cpu", "--resume"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2 and err.count("\n") == 1, err
    assert "error: checkpoint: " in err and "load safely" in err and "io.open" in err
    assert not marker.exists()
    assert sorted(x.name for x in rd.iterdir()) == [CHECKPOINT, "config.json"]  # refused before writing
    for form in ("header", "pickle"):
        plant(rd / CHECKPOINT, cfg.run_id, marker, form)
        with pytest.raises(CostlawError, match="^checkpoint: .* load safely") as e:
            train_run(cfg, rd, device="cpu", progress=False)
        assert "\n" not in str(e.value) and not marker.exists() and not (rd / DONE).exists()


def test_another_runs_checkpoint_is_refused_before_its_weights_are_read(tmp_path):
    cfg = tiny_cfg(steps=5)
    rd = run_dir(tmp_path, cfg)
    RunDir(rd).write_config(cfg)
    # the header names another run: refused without opening checkpoint.pt, which is not even a torch file
    (rd / CHECKPOINT).write_bytes(b"not a checkpoint")
    (rd / CHECKPOINT_HEADER).write_text(json.dumps({"format": 2, "run_id": "0123456789abcdef", "step": 3}))
    with pytest.raises(CostlawError, match="^checkpoint: .* belongs to run 0123456789abcdef, not "):
        train_run(cfg, rd, device="cpu", progress=False)
    # no header (a checkpoint from before headers): the run id comes from a memory-mapped read of the structure
    (rd / CHECKPOINT_HEADER).unlink()
    torch.save({"run_id": "0123456789abcdef", "model": {"w": torch.zeros(4)}}, rd / CHECKPOINT)
    with pytest.raises(CostlawError, match="belongs to run 0123456789abcdef"):
        load_checkpoint(rd / CHECKPOINT, cfg.run_id)
    assert not (rd / DONE).exists() and RunDir(rd).summary() is None


def _finished_base(tmp_path, marker, form):
    """A run directory that looks finished (config.json, DONE completed) around a planted checkpoint."""
    base = tiny_cfg(steps=5)
    rd = run_dir(tmp_path / "base", base)
    RunDir(rd).write_config(base)
    RunDir(rd).write_done(base.run_id, "completed")
    plant(rd / CHECKPOINT, base.run_id, marker, form)
    return base, rd


@pytest.mark.parametrize("form", ["zip", "header", "pickle"])
def test_planted_pickle_is_refused_by_init_from(tmp_path, form):
    marker = tmp_path / "pwned"
    _, base_dir = _finished_base(tmp_path, marker, form)
    ext = tiny_cfg(steps=5, stage="extend", train={"init_from": str(base_dir)})
    with pytest.raises(CostlawError, match="^train.init_from: .* load safely") as e:
        train_run(ext, run_dir(tmp_path, ext), device="cpu", progress=False)
    assert "\n" not in str(e.value) and not marker.exists()


def test_planted_pickle_is_refused_by_kv_eval(tmp_path, capsys):
    marker = tmp_path / "pwned"
    _, base_dir = _finished_base(tmp_path, marker, "header")
    out = tmp_path / "eval"
    rc = cli(["kv-eval", str(base_dir), "--policies", "streaming", "--keep", "0.5", "--root", str(out),
              "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "error: BASE_RUN_DIR: " in err, err
    assert "load safely" in err and not marker.exists() and not out.exists()  # refused before writing


def _legacy_rng(rng: dict) -> dict:
    """The previous code's RNG entry for the same state: numpy's get_state tuple (an ndarray inside) and Python's
    getstate tuple."""
    n = rng["numpy"]
    old = {**rng, "numpy": (n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                            n["cached_gaussian"])}
    version, internal, gauss = rng["python"]
    old["python"] = (version, tuple(internal), gauss)
    return old


def test_rng_state_round_trips_through_both_formats():
    dev = torch.device("cpu")
    np.random.seed(3)
    random.seed(3)
    torch.manual_seed(3)
    np.random.standard_normal()  # a cached Gaussian in numpy's state
    s = rng_state(dev)
    want = (np.random.random(4), random.random(), torch.rand(2))
    for state in (s, _legacy_rng(s)):
        set_rng_state(state, dev)
        got = (np.random.random(4), random.random(), torch.rand(2))
        assert np.array_equal(got[0], want[0]) and got[1] == want[1] and torch.equal(got[2], want[2])


def test_checkpoint_of_the_previous_code_resumes_exactly(tmp_path, stop_after):
    """A checkpoint written the old way (format 1: numpy's RNG state as an ndarray, Python's as a tuple, no header)
    loads through the safe loader and resumes bit-identically."""
    cfg = tiny_cfg(steps=24, train={"checkpoint_every": 0}, data={"curriculum": "short-first"})
    ref = train_run(cfg, run_dir(tmp_path / "a", cfg), device="cpu", progress=False)
    rd = run_dir(tmp_path / "b", cfg)
    assert train_run(cfg, rd, device="cpu", stop_event=stop_after(13), progress=False)["status"] == "preempted"
    ck = torch.load(rd / CHECKPOINT, weights_only=True)
    ck["format"], ck["rng"] = 1, _legacy_rng(ck["rng"])
    torch.save(ck, rd / CHECKPOINT)
    (rd / CHECKPOINT_HEADER).unlink()
    with pytest.raises(Exception, match="Weights only load failed"):  # what the old code's states need allowed
        torch.load(rd / CHECKPOINT, weights_only=True)
    s = train_run(cfg, rd, device="cpu", progress=False)
    assert s["status"] == "completed" and s["steps"] == 24
    assert s["final_loss"] == ref["final_loss"] and s["val_loss"] == ref["val_loss"]
    assert json.loads((rd / CHECKPOINT_HEADER).read_text())["run_id"] == cfg.run_id  # rewritten with a header


def test_every_torch_load_is_the_safe_loader():
    """No torch.load in the repository (library, CLI, benchmarks, tests) unpickles arbitrary objects."""
    root = Path(__file__).resolve().parents[2]
    unsafe = []
    for path in root.rglob("*.py"):
        if ".git" in path.parts:
            continue
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                unsafe.append(f"{path.relative_to(root)}:{i}")
    assert not unsafe, unsafe


def test_policy_trainer_is_gone():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("costlaw.runs.kv.train_policy")
    root = Path(__file__).resolve().parents[2]
    assert not [p for p in (root / "runs").rglob("*.py") if "PolicyTrainer" in p.read_text()]
