"""`sweep submit --fuse` (sweeps/fuse.py): the seeds of each pretraining config train as one job, each member in
its own run directory under its planned run id and with its own record; stages that start from a parent train
unfused; the losses are those of the same sweep submitted without the flag."""

import sysconfig
from dataclasses import replace
from pathlib import Path

import pytest

from costlaw.costmodel.core.rundir import RunDir
from costlaw.sweeps import record, status, submit
from costlaw.sweeps.expand import expand
from costlaw.sweeps.fuse import FusedGroup, fuse
from costlaw.sweeps.spec import parse

EMAIL = str(Path(sysconfig.get_paths()["stdlib"]) / "email")
DATA = f'corpus = "{EMAIL}"\n'


@pytest.fixture
def spec(write_spec, monkeypatch, tmp_path):
    monkeypatch.setenv("COSTLAW_CACHE", str(tmp_path / "cache"))
    return write_spec(name="fz", steps=6, seeds="seeds = [0, 1, 2]", data=DATA)


def test_fused_sweep_matches_unfused(tmp_path, spec, job_env):
    fused_root, plain_root = tmp_path / "fused", tmp_path / "plain"
    sub = submit.submit_spec(spec, fused_root, "local", progress=False, fuse=True, device="cpu")
    assert sub["outcome"] == {"completed": 12}  # 2 configs x 3 seeds, pretrain and extend
    groups = sub["fused"]
    assert len(groups) == 2 and all(len(m) == 3 for m in groups.values())
    runs = {r["run_id"]: r for r in record.load(fused_root)["runs"]}
    for ids in groups.values():
        assert {runs[i]["stage"] for i in ids} == {"pretrain"}
        assert len({runs[i]["jobs"][-1]["job_id"] for i in ids}) == 1  # one job, named by every member
        for i in ids:
            assert RunDir(fused_root / "runs" / i).config()["run_id"] == i
    assert status.collect(fused_root)["counts"]["completed"] == 12
    plain = submit.submit_spec(spec, plain_root, "debug", progress=False, device="cpu")
    assert plain["outcome"] == {"completed": 12} and "fused" not in plain
    for rid in (i for ids in groups.values() for i in ids):  # an extend run's id names its parent's root
        a = RunDir(plain_root / "runs" / rid).summary()
        b = RunDir(fused_root / "runs" / rid).summary()
        assert b["final_loss"] == pytest.approx(a["final_loss"], abs=2e-4)


def test_only_seed_siblings_without_parents_fuse(spec, tmp_path):
    planned = expand(parse(spec.read_text()), tmp_path / "r")
    units, notes = fuse(planned)
    groups = [u for u in units if isinstance(u, FusedGroup)]
    assert len(groups) == 2 and sorted(m.config.seed for m in groups[0].members) == [0, 1, 2]
    assert len(units) == 2 + 6 and not notes  # each extend run starts from its own parent: a config of its own
    # seeds that share a config but cannot fuse stay as planned, and the note says why
    long = [replace(r, config=replace(r.config, data=replace(r.config.data, seq_len=16384)))
            for r in planned if r.stage == "pretrain"]
    units, notes = fuse(long)
    assert units == long and len(notes) == 1 and notes[0].startswith("data.seq_len: 16384 is above")
    assert groups[0].label.endswith("seeds 0,1,2 fused")
    # a single seed has no sibling: the submission is the plan, unchanged
    one = [r for r in planned if r.config.seed == 0]
    assert fuse(one)[0] == one
