"""Fixtures for the sweep tests: specs written to disk, and an environment in which submitit's subprocesses
(local executor, Slurm jobs) import this checkout and its test trainers."""

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE = "tests.sweeps.fake_trainer:train_run"

# one tiny model on the byte vocabulary, the [base] tables the small specs of these tests share
TINY_POINT = """[base.model]
d_model = 32
n_layers = 1
n_heads = 2
n_kv_heads = 1
head_dim = 16
ffn_dim = 64
vocab_size = 257
[base.data]
seq_len = 16
"""

# two tiny points, pretrain -> extend; the fake trainer runs `steps` steps
STAGED_SPEC = """
[sweep]
name = "{name}"
runs_cap = 50
contexts = [64]
{seeds}
[base.model]
d_model = 32
n_layers = 1
n_heads = 2
n_kv_heads = 1
head_dim = 16
ffn_dim = 64
vocab_size = 257

[base.data]
seq_len = 16
{data}
[base.train]
steps = {steps}
checkpoint_every = 2

[[axes]]
grid = {{ "model.n_heads" = [2, 4] }}

[resources]
cpus = 1
time_min = {time_min}
signal_delay_s = {signal_delay_s}

[[stages]]
name = "pretrain"

[[stages]]
name = "extend"
from = "pretrain"
set = {{ "data.seq_len" = 32 }}
derived = {{ "train.steps" = "train.steps // 2" }}
"""


@pytest.fixture
def write_spec(tmp_path):
    def write(text=None, name="t", steps=6, seeds="", data="", time_min=5, signal_delay_s=30, **_):
        text = text if text is not None else STAGED_SPEC.format(name=name, steps=steps, seeds=seeds, data=data,
                                                                time_min=time_min, signal_delay_s=signal_delay_s)
        p = tmp_path / f"{name}.toml"
        p.write_text(textwrap.dedent(text))
        return p

    return write


@pytest.fixture
def job_env(monkeypatch):
    """Subprocesses and Slurm jobs import this checkout (and tests.sweeps.fake_trainer)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("COSTLAW_FAKE_STEP_S", "0.01")
    return monkeypatch
