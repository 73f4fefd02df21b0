"""Fused same-shape runs (runs/fusion.py) on CPU: each member of a fused group trains what it trains alone, in its
own run directory with today's run id; resume works per member, fused or alone; a diverging member ends alone;
groups that cannot fuse are refused before anything is written."""

import json
from dataclasses import replace

import pytest
import torch

from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.core.rundir import CHECKPOINT, RunDir
from costlaw.costmodel.kvpolicy import KVPolicy
from costlaw.runs.fusion import check_fusable, fuse_key, train_fused
from costlaw.runs.train import train_run
from tests.runs.test_train import run_dir, tiny_cfg, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")


def seeds(cfg, n=3):
    return [replace(cfg, seed=s) for s in range(n)]


def metrics(rd):
    return [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("data", [{}, {"packing": "uniform"}, {"doc_mask": False}], ids=["docs", "uniform", "rows"])
def test_members_train_what_they_train_alone(tmp_path, data):
    cfgs = seeds(tiny_cfg(steps=20, data=data, train={"grad_accum": 2, "checkpoint_every": 0}))
    fused = train_fused(cfgs, [run_dir(tmp_path / "f", c) for c in cfgs], device="cpu", progress=False)
    for c, f in zip(cfgs, fused):
        alone = train_run(c, run_dir(tmp_path / "a", c), device="cpu", progress=False)
        assert f["run_id"] == alone["run_id"] == c.run_id and f["status"] == "completed"
        assert f["steps"] == alone["steps"] == 20 and f["tokens"] == alone["tokens"]
        # same data, same init, same optimizer: only the summation order of the batched kernels differs
        for a, b in zip(metrics(run_dir(tmp_path / "a", c)), metrics(run_dir(tmp_path / "f", c))):
            assert a["step"] == b["step"]
            assert b["loss"] == pytest.approx(a["loss"], abs=2e-4)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=2e-3)
        assert f["val_loss"] == pytest.approx(alone["val_loss"], abs=5e-4)
        assert f["data"]["abr"] == alone["data"]["abr"]
        wa = torch.load(run_dir(tmp_path / "a", c) / CHECKPOINT, weights_only=True)["model"]
        wf = torch.load(run_dir(tmp_path / "f", c) / CHECKPOINT, weights_only=True)["model"]
        assert max((wa[k] - wf[k]).abs().max().item() for k in wa) < 5e-4
    # the seeds did train differently: fusion kept each member's own data and init
    assert len({round(f["final_loss"], 6) for f in fused}) == len(cfgs)
    rd = RunDir(run_dir(tmp_path / "f", cfgs[1]))
    assert rd.config()["run_id"] == cfgs[1].run_id and rd.done()["status"] == "completed"


def test_preempted_group_resumes_fused_or_alone(tmp_path, stop_after):
    cfgs = seeds(tiny_cfg(steps=24, train={"checkpoint_every": 0}), n=2)
    dirs = [run_dir(tmp_path / "f", c) for c in cfgs]
    ref = [train_run(c, run_dir(tmp_path / "a", c), device="cpu", progress=False) for c in cfgs]
    first = train_fused(cfgs, dirs, device="cpu", stop_event=stop_after(13), progress=False)
    assert [s["status"] for s in first] == ["preempted", "preempted"] and {s["steps"] for s in first} == {13}
    assert all(RunDir(d).status() == "preempted" and (d / CHECKPOINT).exists() for d in dirs)
    # member 0 resumes alone (its checkpoint is an ordinary one), member 1 through the fused entry point
    s0 = train_run(cfgs[0], dirs[0], device="cpu", progress=False)
    s1 = train_fused(cfgs, dirs, device="cpu", progress=False)
    assert s1[0] == RunDir(dirs[0]).summary()  # already finished: returned, not retrained
    for s, r in zip((s0, s1[1]), ref):
        assert s["status"] == "completed" and s["steps"] == 24
        assert s["final_loss"] == pytest.approx(r["final_loss"], abs=2e-4)
    assert "resumed at step 13" in (dirs[1] / "train.log").read_text()


def test_a_diverging_member_ends_alone(tmp_path):
    base = tiny_cfg(steps=30, train={"lr": 10.0, "warmup_frac": 0.0, "log_every": 1, "grad_clip": 0.0,
                                     "checkpoint_every": 0})
    # the same hot LR for both seeds; seed 1's data and init diverge at a different step (or not at all)
    cfgs = seeds(base, n=2)
    out = train_fused(cfgs, [run_dir(tmp_path, c) for c in cfgs], device="cpu", progress=False)
    alone = [train_run(c, run_dir(tmp_path / "a", c), device="cpu", progress=False) for c in cfgs]
    assert [o["status"] for o in out] == [a["status"] for a in alone]
    assert [o["steps"] for o in out] == [a["steps"] for a in alone]
    assert "diverged" in [o["status"] for o in out]


def test_groups_that_cannot_fuse_are_refused_before_writing(tmp_path):
    cfg = tiny_cfg(steps=5)
    cases = [
        ([cfg], "^fuse: .*at least two runs"),
        ([cfg, replace(cfg, seed=1, model=tiny_model(d_model=64))], "^fuse: .*differ only in their seed"),
        ([cfg, cfg], r"^fuse: seeds \[0, 0\] repeat"),
        (seeds(tiny_cfg(steps=5, data={"seq_len": 16384})), "^data.seq_len: 16384 is above"),
        (seeds(tiny_cfg(steps=5, train={"init_from": str(tmp_path)})), "^train.init_from: "),
        (seeds(tiny_cfg(steps=5, model=tiny_model(kv_policy=KVPolicy("locret", keep=0.5)),
                        train={"trainable": "policy", "init_from": str(tmp_path)})), "^train.trainable: "),
    ]
    for cfgs, match in cases:
        with pytest.raises(ConfigError, match=match):
            train_fused(cfgs, [tmp_path / "r" / f"{i}" for i in range(len(cfgs))], device="cpu", progress=False)
    assert not (tmp_path / "r").exists()


def test_fuse_key_ignores_seed_and_name_only():
    cfg = tiny_cfg()
    assert fuse_key(cfg) == fuse_key(replace(cfg, seed=7, name="other"))
    assert fuse_key(cfg) != fuse_key(replace(cfg, train=replace(cfg.train, lr=1e-3)))
    check_fusable(seeds(cfg))


def test_a_compiler_failure_falls_back_to_the_same_math(tmp_path, monkeypatch):
    """Should torch.compile fail on the fused function (it is tried once before any step), the group trains on
    eagerly, each member's log says why, and the losses are those of the eager group."""
    cfgs = seeds(tiny_cfg(steps=8, train={"checkpoint_every": 0}), n=2)
    eager = train_fused(cfgs, [run_dir(tmp_path / "e", c) for c in cfgs], device="cpu", progress=False)

    def broken(fn=None, **kw):
        def run(*a, **k):
            raise RuntimeError("backend said no\nInductorError: no kernel for this op")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    on = [replace(c, train=replace(c.train, compile="on")) for c in cfgs]
    out = train_fused(on, [run_dir(tmp_path / "c", c) for c in on], device="cpu", progress=False)
    for o, e, c in zip(out, eager, on):
        assert o["status"] == "completed" and o["final_loss"] == pytest.approx(e["final_loss"], abs=1e-6)
        log = (run_dir(tmp_path / "c", c) / "train.log").read_text()
        assert "fused: torch.compile failed (RuntimeError: InductorError: no kernel for this op)" in log


def test_fused_attention_never_asks_for_cudnn(tmp_path, monkeypatch):
    """On an H200 SDPA under vmap picked cuDNN attention: torch.compile could not trace it and, eager, every
    member diverged. The fused function runs with cuDNN's SDPA backend off (and the others on)."""
    from costlaw.runs.models import attention

    seen = []
    sdpa = attention.F.scaled_dot_product_attention

    def spy(*a, **k):
        seen.append((torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()))
        return sdpa(*a, **k)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    cfgs = seeds(tiny_cfg(steps=2, data={"doc_mask": False}, train={"checkpoint_every": 0}), n=2)
    out = train_fused(cfgs, [run_dir(tmp_path / "f", c) for c in cfgs], device="cpu", progress=False)
    assert [o["status"] for o in out] == ["completed"] * 2
    assert seen and all(not cudnn and flash for cudnn, flash in seen[:4])
