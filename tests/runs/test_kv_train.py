"""The trained policies' training stage and the kv-eval harness, on real text (the stdlib's email package via
runs/data) with a tiny base model trained by runs.train: Locret's heads beat random eviction on their own
labels' top-k overlap, policy runs write complete run directories (base_run_id, checkpointed policy parameters)
and resume exactly, and `costlaw kv-eval` writes kv_policy rows the store ingests."""

import dataclasses
import json
import math
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from costlaw.cli import main as cli
from costlaw.costmodel import KVPolicy, ModelConfig
from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.core.rundir import CHECKPOINT, CHECKPOINT_HEADER
from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from costlaw.runs.task import TASKS
from costlaw.runs.train import train_run
from tests.runs.test_checkpoint_safety import Planted
from tests.runs.test_train import _two_ranks

EMAIL = str(Path(sysconfig.get_paths()["stdlib"]) / "email")
MODEL = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128, vocab_size=257,
                    rope_theta=1e4)
ALL = "streaming,snapkv,h2o,random,locret,kv_distill,infinipot"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private corpus cache, one intra-op thread, and a finished base run."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("kv")
    mp.setenv("COSTLAW_CACHE", str(root / "cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    base = RunConfig(model=MODEL, data=DataConfig(corpus=EMAIL, seq_len=128),
                     train=TrainConfig(steps=60, batch_size=8, lr=3e-3, log_every=20, checkpoint_every=0),
                     eval=EvalConfig(val_tokens=512, retrieval_samples=0, decode_tokens=0))
    base_dir = root / "runs" / base.run_id
    assert train_run(base, base_dir, device="cpu", progress=False)["status"] == "completed"
    yield {"root": root, "base": base, "base_dir": base_dir}
    torch.set_num_threads(n)
    mp.undo()


@pytest.fixture(scope="module")
def trained(env):
    """A Locret run and a KV-Distill run on the base: (config, run dir, summary) per method."""
    out = {}
    for method, steps, opts in (("locret", 60, {"hidden": 64}), ("kv_distill", 8, {"rank": 4})):
        cfg = policy_cfg(env, method, steps, **opts)
        rd = env["root"] / "runs" / cfg.run_id
        out[method] = (cfg, rd, train_run(cfg, rd, device="cpu"))
    return out


def policy_cfg(env, method, steps, **opts) -> RunConfig:
    base = env["base"]
    return base.replace(model=MODEL.replace(kv_policy=KVPolicy(method, keep=0.25, options=tuple(opts.items()))),
                        stage="compress",
                        train=TrainConfig(steps=steps, batch_size=4, lr=3e-3, log_every=10, checkpoint_every=0,
                                          warmup_frac=0.05, init_from=str(env["base_dir"]), trainable="policy"),
                        eval=EvalConfig(val_tokens=1024, retrieval_samples=0, decode_tokens=2))


def test_locret_heads_train_and_beat_random_eviction(env, trained):
    cfg, rd, s = trained["locret"]
    assert s["status"] == "completed" and s["base_run_id"] == env["base"].run_id
    assert sorted(p.name for p in rd.iterdir()) == sorted(["config.json", "metrics.jsonl", "evals.jsonl",
                                                           "summary.json", "DONE", CHECKPOINT, CHECKPOINT_HEADER,
                                                           "train.log"])
    conf = json.loads((rd / "config.json").read_text())
    assert conf["base_run_id"] == env["base"].run_id and RunConfig.from_dict(conf["config"]) == cfg
    metrics = [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [10, 20, 30, 40, 50, 60] and metrics[-1]["loss"] < metrics[0]["loss"]
    evals = {e["eval"]: e for e in map(json.loads, (rd / "evals.jsonl").read_text().splitlines())}
    val = evals["policy_val"]["metrics"]
    assert val["topk_overlap"] > 2 * val["topk_overlap_random"] and val["topk_overlap"] > 0.2, val
    row = evals["kv_policy"]
    assert row["tags"] == {"context": 112, "policy": "locret", "keep": 0.25}
    assert row["metrics"]["kv_bytes"] == row["metrics"]["kv_bytes_analytic"] == s["kv_bytes_measured"]
    ck = torch.load(rd / CHECKPOINT, weights_only=True)
    heads = {k: v for k, v in ck["model"].items() if k.startswith("kv_policy.")}
    assert sum(v.numel() for v in heads.values()) == s["costs"]["params_policy"] == s["params_trained"]
    base = torch.load(env["base_dir"] / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(base[k], v) for k, v in ck["model"].items() if k in base)  # the backbone stayed frozen


def test_kv_distill_run_resumes_exactly(env, trained, stop_after):
    cfg, whole, s = trained["kv_distill"]
    assert s["status"] == "completed" and s["final_loss"] > 0 and s["base_run_id"] == env["base"].run_id
    rd = env["root"] / "preempted"
    s = train_run(cfg, rd, device="cpu", stop_event=stop_after(3))
    assert s["status"] == "preempted" and s["steps"] == 3 and not (rd / "DONE").exists()
    s = train_run(cfg, rd, device="cpu", resume=True)
    assert s["status"] == "completed" and s["steps"] == 8
    a = torch.load(whole / CHECKPOINT, weights_only=True)["model"]
    b = torch.load(rd / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("kv_policy."))
    assert any(k.startswith("kv_policy.q.") for k in a)


def test_kv_eval_cli_writes_kv_policy_rows(env, trained, capsys):
    out = env["root"] / "eval"
    runs = {m: rd for m, (_, rd, _) in trained.items()}
    rc = cli(["kv-eval", str(env["base_dir"]), "--policies", ALL, "--keep", "1,0.25",
              "--policy-run", f"locret={runs['locret']}", "--policy-run", f"kv_distill={runs['kv_distill']}",
              "--root", str(out), "--samples", "4", "--batch", "4", "--retrieval-samples", "2", "--decode-tokens", "2",
              "--device", "cpu", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    rd = Path(summary["run_dir"])
    assert rd.parent == out / "runs" and json.loads((rd / "DONE").read_text())["status"] == "completed"
    conf = json.loads((rd / "config.json").read_text())
    assert conf["config"]["stage"] == "compress" and conf["base_run_id"] == env["base"].run_id
    assert set(conf["policy_runs"]) == {"locret", "kv_distill"}
    rows = [json.loads(x) for x in (rd / "evals.jsonl").read_text().splitlines()]
    assert len(rows) == 14 and {r["eval"] for r in rows} == {"kv_policy"}
    for r in rows:
        m = r["metrics"]
        assert m["kv_bytes"] == m["kv_bytes_analytic"]
        assert 0 <= m["retrieval_accuracy"] <= 1 and m["decode_tokens_per_s"] > 0 and m["prefill_s"] > 0
        if r["tags"]["keep"] == 1:
            assert m["delta_nll"] == 0 and abs(m["kl"]) < 1e-6, r
        else:
            assert m["kv_bytes"] < rows[0]["metrics"]["kv_bytes"] and m["kl"] > 0
    by = {(r["tags"]["policy"], r["tags"]["keep"]): r["metrics"] for r in rows}
    assert by[("locret", 0.25)]["params_policy"] > 0 and by[("streaming", 0.25)]["params_policy"] == 0


def test_kv_eval_user_errors_are_one_line(env, capsys):
    for argv, field in [(["--policies", "locret"], "--policies"), (["--policies", "nope"], "--policies"),
                        (["--keep", "0"], "--keep"), (["--policy-run", "snapkv=x"], "--policy-run"),
                        (["--policies", "locret", "--policy-run", f"locret={env['base_dir']}"], "--policy-run locret")]:
        rc = cli(["kv-eval", str(env["base_dir"]), "--root", str(env["root"] / "bad"), "--device", "cpu", *argv])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and f"error: {field}" in err, err


def test_policy_run_of_the_previous_trainer_resumes(env, trained, stop_after):
    """A checkpoint as the policy trainer wrote it before it became a task (format 1: numpy's RNG state as an
    ndarray, no interval sums or data position, no header) resumes, and the policy ends as an unbroken run's."""
    cfg, whole, _ = trained["kv_distill"]
    rd = env["root"] / "legacy"
    assert train_run(cfg, rd, device="cpu", stop_event=stop_after(3))["status"] == "preempted"
    ck = torch.load(rd / CHECKPOINT, weights_only=True)
    n = ck["rng"]["numpy"]
    rng = {**ck["rng"], "numpy": (n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                                  n["cached_gaussian"]), "python": tuple(ck["rng"]["python"])}
    old = {"format": 1, "run_id": ck["run_id"], "step": ck["step"], "tokens": ck["tokens"], "model": ck["model"],
           "optimizer": ck["optimizer"], "rng": rng,
           "timing": {"wall_s": ck["timing"]["wall_s"], "train_s": ck["timing"]["train_s"]},
           "final_loss": ck["final_loss"]}
    torch.save(old, rd / CHECKPOINT)
    (rd / CHECKPOINT_HEADER).unlink()
    s = train_run(cfg, rd, device="cpu")
    assert s["status"] == "completed" and s["steps"] == 8
    a = torch.load(whole / CHECKPOINT, weights_only=True)["model"]
    b = torch.load(rd / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("kv_policy."))


def test_policy_runs_share_the_trainers_summary_and_divergence(env, trained, tmp_path):
    """One summary schema for every task; a policy loss above its task's bound (finite or not) is a divergence."""
    base = json.loads((env["base_dir"] / "summary.json").read_text())
    for method, (_, _, s) in trained.items():
        assert set(s) == set(base) and set(s["data"]) == set(base["data"]) and s["task"] == method
    assert base["task"] == "lm" and base["params_trained"] == base["params_measured"]
    cfg = policy_cfg(env, "locret", 10, hidden=64)
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, lr=10.0, warmup_frac=0.0, grad_clip=0.0, log_every=1))
    rd = tmp_path / "diverged"
    s = train_run(cfg, rd, device="cpu")
    assert s["status"] == "diverged" and s["steps"] < 10 and not (rd / "evals.jsonl").exists()
    bound = float((rd / "train.log").read_text().split("(bound ")[1].split(")")[0])
    assert math.isfinite(s["final_loss"]) and s["final_loss"] > bound  # finite, yet over the task's bound


def test_a_trained_method_without_a_task_is_an_error(env, tmp_path):
    cfg = policy_cfg(env, "snapkv", 4)
    with pytest.raises(ConfigError, match="^train.trainable: .*'snapkv' has no training task"):
        train_run(cfg, tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()
    assert {"lm", "locret", "kv_distill"} <= set(TASKS)


def test_policy_run_on_two_ranks_matches_one_process(env, tmp_path):
    """Rank 0 alone writes the run directory; the ranks split each step's micro-batches and average the policy's
    gradients, so two gloo ranks train the policy one process trains accumulating both micro-batches."""
    cfg = policy_cfg(env, "kv_distill", 4, rank=4)
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, grad_accum=2, batch_size=2, log_every=2),
                      eval=dataclasses.replace(cfg.eval, decode_tokens=0))
    one = train_run(cfg, tmp_path / "one", device="cpu")
    rd = tmp_path / "two"
    ranks = _two_ranks(cfg, rd, timeout=300)
    assert all(rc == 0 for rc, _, _ in ranks), ranks[0][2][-2000:] + ranks[1][2][-2000:]
    ends = [json.loads(o.strip().splitlines()[-1]) for _, o, _ in ranks]
    assert ends == [{"status": "completed", "steps": 4, "ddp_alive": 0}] * 2
    s = json.loads((rd / "summary.json").read_text())
    assert s["final_loss"] == pytest.approx(one["final_loss"], rel=1e-5)
    assert s["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)
    assert len((rd / "metrics.jsonl").read_text().splitlines()) == 2  # rank 0 alone writes
    a = torch.load(tmp_path / "one" / CHECKPOINT, weights_only=True)["model"]
    b = torch.load(rd / CHECKPOINT, weights_only=True)["model"]
    for k in (k for k in a if k.startswith("kv_policy.")):
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)


def test_kv_eval_refuses_a_planted_policy_checkpoint(env, trained, tmp_path, capsys):
    """A policy run whose checkpoint.pt was replaced by a pickle that would create a file: one line, no file."""
    import shutil

    src = trained["locret"][1]
    rd = tmp_path / "planted"
    shutil.copytree(src, rd)
    marker = tmp_path / "pwned"
    torch.save({"run_id": json.loads((rd / "config.json").read_text())["run_id"], "model": Planted(marker)},
               rd / CHECKPOINT)
    rc = cli(["kv-eval", str(env["base_dir"]), "--policies", "locret", "--keep", "0.25", "--policy-run",
              f"locret={rd}", "--root", str(tmp_path / "eval"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "error: --policy-run locret: " in err and "load safely" in err, err
    assert not marker.exists() and not (tmp_path / "eval").exists()
