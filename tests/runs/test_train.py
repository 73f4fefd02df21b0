"""The trainer on CPU: loss falls, exact resume after kill -9, preemption, divergence, failure, idempotence,
init_from, trainable policy parameters, Ave-Token normalisation, and the run directory contract."""

import json
import math
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import torch

from costlaw.costmodel import ModelConfig, costs
from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.core.rundir import CHECKPOINT, CHECKPOINT_HEADER, RunDir
from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from costlaw.runs.lm_task import model_loss
from costlaw.runs.task import trainable_parameters
from costlaw.runs.train import init_from, train_run

REPO = Path(__file__).resolve().parents[2]
EMAIL = str(Path(sysconfig.get_paths()["stdlib"]) / "email")  # ~30 real modules: a small, stable corpus


pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")


def tiny_model(**kw) -> ModelConfig:
    base = dict(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=64, vocab_size=257)
    return ModelConfig(**{**base, **kw})


def tiny_cfg(steps=30, corpus=EMAIL, model=None, data=None, train=None, ev=None, **kw) -> RunConfig:
    return RunConfig(
        model=model or tiny_model(),
        data=DataConfig(**{"corpus": corpus, "seq_len": 64, **(data or {})}),
        train=TrainConfig(**{"steps": steps, "batch_size": 4, "lr": 3e-3, "log_every": 5, "checkpoint_every": 10,
                             **(train or {})}),
        eval=EvalConfig(**{"val_tokens": 512, "position_buckets": 4, "retrieval_samples": 0, "decode_tokens": 0,
                           **(ev or {})}),
        **kw)


def run_dir(root: Path, cfg: RunConfig) -> Path:
    return root / "runs" / cfg.run_id


def test_run_directory_contract(tmp_path):
    cfg = tiny_cfg(steps=20, ev={"retrieval_samples": 4, "decode_tokens": 4, "contexts": (160,)},
                   data={"retrieval_mix": 0.25, "seq_len": 128}, name="contract")
    rd = run_dir(tmp_path, cfg)
    s = train_run(cfg, rd, device="cpu", progress=False)
    names = sorted(p.name for p in rd.iterdir())
    assert names == sorted(["config.json", "metrics.jsonl", "evals.jsonl", "summary.json", "DONE", CHECKPOINT,
                            CHECKPOINT_HEADER, "train.log"])
    conf = json.loads((rd / "config.json").read_text())
    assert set(conf) == {"format", "run_id", "model_id", "config", "base_run_id", "sweep", "created"}
    assert conf["run_id"] == cfg.run_id and conf["model_id"] == cfg.model.config_id
    assert RunConfig.from_dict(conf["config"]) == cfg
    lines = [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [5, 10, 15, 20]
    for m in lines:
        assert set(m) == {"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "time_s"}
        assert m["tokens"] == m["step"] * cfg.tokens_per_step
    evals = [json.loads(x) for x in (rd / "evals.jsonl").read_text().splitlines()]
    by = {}
    for e in evals:
        assert set(e) == {"eval", "tags", "metrics"}
        assert all(isinstance(v, (int, float)) for v in e["metrics"].values())
        by.setdefault(e["eval"], []).append(e)
    assert set(by) == {"val_loss", "position_loss", "retrieval", "inference"}
    assert [e["tags"]["bucket"] for e in by["position_loss"]] == [0, 1, 2, 3]
    assert by["position_loss"][0]["tags"]["start"] == 0 and by["position_loss"][-1]["tags"]["end"] == 128
    assert [e["tags"]["depth"] for e in by["retrieval"]] == [0.1, 0.5, 0.9]
    assert [e["tags"]["context"] for e in by["inference"]] == [128, 160]
    for e in by["inference"]:
        assert e["metrics"]["kv_bytes"] == e["metrics"]["kv_bytes_analytic"] > 0
    summary = json.loads((rd / "summary.json").read_text())
    assert summary == s
    for k in ("format", "run_id", "status", "steps", "tokens", "final_loss", "val_loss", "tokens_per_s", "mfu",
              "peak_memory_bytes", "wall_s", "train_s", "kv_bytes_measured", "error", "costs", "data", "env"):
        assert k in summary
    assert summary["status"] == "completed" and summary["steps"] == 20 and summary["error"] is None
    assert summary["tokens"] == 20 * cfg.tokens_per_step
    assert summary["final_loss"] == lines[-1]["loss"]
    assert summary["val_loss"] == by["val_loss"][0]["metrics"]["loss"]
    assert summary["kv_bytes_measured"] == by["inference"][0]["metrics"]["kv_bytes"]
    assert summary["costs"] == json.loads(json.dumps(costs(cfg.model, cfg.data.seq_len)))
    assert summary["mfu"] is None and summary["peak_memory_kind"] == "ru_maxrss"
    assert summary["tokens_per_s"] > 0 and summary["wall_s"] >= summary["train_s"] > 0
    # where the wall went: setup before the first step, the steps, the final evaluation (inference timing
    # included), each inside the wall and apart from the others
    assert summary["setup_s"] > 0 and summary["eval_s"] > 0
    assert summary["setup_s"] + summary["train_s"] + summary["eval_s"] <= summary["wall_s"]
    d = summary["data"]
    assert len(d["corpus_id"]) == 16 and d["tokenizer"] == "byte" and d["corpus"] == EMAIL
    assert 0 <= d["padding_ratio"] < 0.05 and 0 <= d["abr"] < 1 and d["epochs"] > 0
    assert summary["env"]["device"] == "cpu" and summary["env"]["torch"] == torch.__version__
    assert json.loads((rd / "DONE").read_text()) == {"run_id": cfg.run_id, "status": "completed"}
    assert (rd / "DONE").stat().st_mtime_ns >= (rd / "summary.json").stat().st_mtime_ns
    # idempotent: a finished run is returned, not retrained
    before = (rd / "metrics.jsonl").stat().st_mtime_ns
    assert train_run(cfg, rd, device="cpu", progress=False) == s
    assert (rd / "metrics.jsonl").stat().st_mtime_ns == before


def _loss_falls(rd: Path) -> tuple[float, float]:
    lines = [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines()]
    return lines[0]["loss"], lines[-1]["loss"]


@pytest.mark.parametrize("layout", ["gqa", "hybrid"])
def test_tiny_runs_on_stdlib_loss_falls(tmp_path, layout):
    """The real stdlib corpus (prepared on first use): a few dozen steps, loss falls."""
    model = tiny_model(n_layers=3, n_heads=4, n_kv_heads=2)
    if layout == "hybrid":
        model = model.replace(layout=["sink_window(4,16)", "full", "sink_window(4,16)"])
        assert model.family == "hybrid"
    cfg = tiny_cfg(steps=40, corpus="stdlib", model=model, train={"lr": 1e-2})
    s = train_run(cfg, run_dir(tmp_path, cfg), device="cpu", progress=False)
    first, last = _loss_falls(run_dir(tmp_path, cfg))
    assert s["status"] == "completed" and s["steps"] == 40
    assert last < first - 1.0 and s["val_loss"] < first
    assert s["data"]["corpus"] == "stdlib" and s["data"]["train_tokens"] > 5_000_000


def test_hybrid_runs_and_loss_falls(tmp_path):
    model = tiny_model(n_layers=3).replace(layout=["sink_window(2,8)", "full", "block_strided(8,2,2)"])
    cfg = tiny_cfg(steps=30, model=model, train={"lr": 1e-2})
    s = train_run(cfg, run_dir(tmp_path, cfg), device="cpu", progress=False)
    first, last = _loss_falls(run_dir(tmp_path, cfg))
    assert s["status"] == "completed" and last < first - 0.5


def _cli(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "costlaw", "run", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_kill_and_resume_is_exact(tmp_path):
    cfg = tiny_cfg(steps=60, train={"checkpoint_every": 5}, data={"curriculum": "short-first"})
    toml = tmp_path / "run.toml"
    toml.write_text(cfg.to_toml())
    ref_root, kill_root = tmp_path / "ref", tmp_path / "kill"
    ref = _cli([str(toml), "--root", str(ref_root), "--device", "cpu", "--json"])
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err
    want = json.loads(out)
    # the same run, killed with SIGKILL after its first checkpoints, then resumed
    p = _cli([str(toml), "--root", str(kill_root), "--device", "cpu", "--quiet"])
    rd = run_dir(kill_root, cfg)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (rd / CHECKPOINT).exists() and (rd / "metrics.jsonl").exists() and \
                len((rd / "metrics.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    assert not (rd / "DONE").exists(), "the run finished before it was killed"
    killed_at = torch.load(rd / CHECKPOINT, weights_only=True)["step"]
    assert 0 < killed_at < 60
    r = _cli([str(toml), "--root", str(kill_root), "--device", "cpu", "--resume", "--json"])
    out, err = r.communicate(timeout=600)
    assert r.returncode == 0, err
    got = json.loads(out)
    assert got["status"] == "completed"
    assert got["steps"] == want["steps"] == 60
    assert got["final_loss"] == want["final_loss"]  # bit-identical
    assert got["val_loss"] == want["val_loss"]
    assert got["data"]["abr"] == want["data"]["abr"] and got["data"]["padding_ratio"] == want["data"]["padding_ratio"]
    a = torch.load(run_dir(ref_root, cfg) / CHECKPOINT, weights_only=True)["model"]
    b = torch.load(rd / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "resumed at step" in (rd / "train.log").read_text()
    assert not list(rd.glob(".*.tmp"))  # a checkpoint torn by the kill is cleaned up on resume


def test_preempt_then_resume_matches_unbroken(tmp_path, stop_after):
    cfg = tiny_cfg(steps=24, train={"checkpoint_every": 0, "grad_accum": 2})
    ref = train_run(cfg, run_dir(tmp_path / "a", cfg), device="cpu", progress=False)
    rd = run_dir(tmp_path / "b", cfg)
    s = train_run(cfg, rd, device="cpu", stop_event=stop_after(13), progress=False)
    assert s["status"] == "preempted" and s["steps"] == 13
    assert s["eval_s"] is None and s["setup_s"] > 0  # not evaluated; its setup is kept for the next session
    assert not (rd / "DONE").exists() and (rd / CHECKPOINT).exists()
    assert RunDir(rd).status() == "preempted"
    s2 = train_run(cfg, rd, device="cpu", progress=False)
    assert s2["status"] == "completed" and s2["steps"] == 24
    assert s2["setup_s"] > s["setup_s"] and s2["eval_s"] > 0  # both sessions' setups
    assert s2["final_loss"] == ref["final_loss"] and s2["val_loss"] == ref["val_loss"]
    steps = [json.loads(x)["step"] for x in (rd / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 24]


def test_diverged(tmp_path):
    cfg = tiny_cfg(steps=30, train={"lr": 10.0, "warmup_frac": 0.0, "log_every": 1, "grad_clip": 0.0})
    rd = run_dir(tmp_path, cfg)
    s = train_run(cfg, rd, device="cpu", progress=False)
    assert s["status"] == "diverged" and s["steps"] < 30
    assert json.loads((rd / "DONE").read_text())["status"] == "diverged"
    assert not (rd / "evals.jsonl").exists()


def test_failure_is_recorded_and_raised(tmp_path):
    cfg = tiny_cfg(corpus=str(tmp_path / "no-such-corpus"))
    rd = run_dir(tmp_path, cfg)
    with pytest.raises(ConfigError, match="^corpus: "):
        train_run(cfg, rd, device="cpu", progress=False)
    s = json.loads((rd / "summary.json").read_text())
    assert s["status"] == "failed" and s["error"].startswith("ConfigError: corpus: ")
    assert json.loads((rd / "DONE").read_text())["status"] == "failed"
    assert (rd / "config.json").exists()


def test_wrong_run_dir_is_refused(tmp_path):
    a, b = tiny_cfg(steps=5), tiny_cfg(steps=6)
    rd = run_dir(tmp_path, a)
    RunDir(rd).write_config(a)
    with pytest.raises(Exception, match="run_dir: "):
        train_run(b, rd, device="cpu", progress=False)


def test_init_from_loads_weights_and_records_base(tmp_path):
    base = tiny_cfg(steps=10)
    base_dir = run_dir(tmp_path, base)
    train_run(base, base_dir, device="cpu", progress=False)
    ext = tiny_cfg(steps=5, stage="extend", train={"init_from": str(base_dir)}, data={"seq_len": 96})
    from costlaw.runs.models import build_model

    m = build_model(ext.model)
    assert init_from(m, ext) == base.run_id
    want = torch.load(base_dir / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(v, want[k]) for k, v in m.state_dict().items())
    s = train_run(ext, run_dir(tmp_path, ext), device="cpu", progress=False)
    assert s["status"] == "completed" and s["base_run_id"] == base.run_id
    assert json.loads((run_dir(tmp_path, ext) / "config.json").read_text())["base_run_id"] == base.run_id
    bad = tiny_cfg(steps=5, stage="extend", train={"init_from": str(tmp_path / "nothing")})
    with pytest.raises(ConfigError, match="^train.init_from: "):
        init_from(build_model(bad.model), bad)


def test_trainable_policy_parameters():
    from costlaw.costmodel import KVPolicy
    from costlaw.runs.models import build_model

    cfg = tiny_cfg(model=tiny_model(kv_policy=KVPolicy("snapkv", keep=0.5)), train={"trainable": "policy"})
    plain = build_model(cfg.model)
    with pytest.raises(ConfigError, match="^train.trainable: "):
        trainable_parameters(plain, cfg)

    class WithPolicy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Linear(4, 4)
            self.scorer = torch.nn.Linear(4, 1)

        def policy_parameters(self):
            return self.scorer.parameters()

    m = WithPolicy()
    params = trainable_parameters(m, cfg)
    assert {id(p) for p in params} == {id(p) for p in m.scorer.parameters()}
    assert not any(p.requires_grad for p in m.backbone.parameters())


def test_ave_token_normalisation_across_accumulation():
    """Summing each micro-batch's loss and dividing once by the step's target count gives the gradient of
    the token mean over the whole step, however unevenly the micro-batches hold targets."""
    from costlaw.runs.data.loader import DeviceBatch
    from costlaw.runs.models import build_model

    torch.manual_seed(0)
    m = build_model(tiny_model())
    idx = torch.randint(0, 257, (4, 16))
    tgt = torch.randint(0, 257, (4, 16))
    tgt[0, 3:] = -100  # micro-batch 1 has far fewer targets than micro-batch 2
    tgt[1, 10:] = -100
    mbs = [DeviceBatch(idx[:2], tgt[:2], None, int((tgt[:2] != -100).sum())),
           DeviceBatch(idx[2:], tgt[2:], None, int((tgt[2:] != -100).sum()))]
    n = sum(b.tokens for b in mbs)
    for b in mbs:
        (model_loss(m, b, None, torch.device("cpu")) / n).backward()
    acc = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m(idx, targets=tgt, reduction="mean").backward()
    for a, p in zip(acc, m.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


def test_cli_run_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\npreset = "gqa-3m"\nvocab_size = 257\n[train]\nsteps = 0\n')
    p = _cli([str(bad), "--root", str(tmp_path)])
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and err.count("\n") == 1 and "train.tokens" in err


_DDP_WORKER = """
import json, sys, torch
torch.set_num_threads(1)
from costlaw.runs.config import RunConfig
from costlaw.runs.train import train_run
cfg = RunConfig.from_dict(json.loads(sys.argv[1]))
s = train_run(cfg, sys.argv[2], device="cpu", progress=False)
import gc
from torch.nn.parallel import DistributedDataParallel
ddp = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())  # what holds the group past its end
print(json.dumps({"status": s["status"], "steps": s["steps"], "ddp_alive": ddp}))
"""


def _two_ranks(cfg, rd, timeout=600):
    """Run `cfg` into `rd` as two gloo ranks; [(returncode, stdout, stderr)] per rank."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "TORCH_DISTRIBUTED_BACKEND": "gloo",
               "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", _DDP_WORKER, json.dumps(cfg.to_dict()), str(rd)],
                                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, *o) for p, o in zip(procs, outs)]


@pytest.mark.slow
def test_data_parallel_matches_accumulation(tmp_path):
    """Two gloo ranks split each step's micro-batches: the same run as one process accumulating both."""
    cfg = tiny_cfg(steps=12, train={"grad_accum": 2, "checkpoint_every": 6})
    one = train_run(cfg, run_dir(tmp_path / "one", cfg), device="cpu", progress=False)
    rd = run_dir(tmp_path / "ddp", cfg)
    ranks = _two_ranks(cfg, rd)
    outs = [(out, err) for _, out, err in ranks]
    assert all(rc == 0 for rc, _, _ in ranks), outs[0][1][-2000:] + outs[1][1][-2000:]
    ends = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert ends == [{"status": "completed", "steps": 12, "ddp_alive": 0}] * 2
    s = json.loads((rd / "summary.json").read_text())
    assert s["status"] == "completed" and s["tokens"] == one["tokens"]
    assert s["final_loss"] == pytest.approx(one["final_loss"], rel=1e-4)
    assert s["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)
    assert len((rd / "metrics.jsonl").read_text().splitlines()) == 3  # rank 0 alone writes


def test_data_parallel_rejects_grad_accum_not_a_multiple_of_ranks(tmp_path):
    """grad_accum 1 cannot be split over 2 ranks: each rank stops with the field's error (and its process group
    torn down), before any step."""
    cfg = tiny_cfg(steps=4, train={"grad_accum": 1})
    rd = run_dir(tmp_path / "ddp", cfg)
    for rc, _, err in _two_ranks(cfg, rd, timeout=120):
        assert rc != 0 and "train.grad_accum" in err and "multiple" in err, err[-2000:]
    assert not (rd / "metrics.jsonl").exists() or not (rd / "metrics.jsonl").read_text().strip()


_DDP_FAILING_WORKER = """
import gc, json, sys, torch
torch.set_num_threads(1)
from torch.nn.parallel import DistributedDataParallel
from costlaw.runs import train
from costlaw.runs.config import RunConfig
def boom(self):
    raise RuntimeError("boom in training")
train.Trainer._train_loop = boom
try:
    train.train_run(RunConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2], device="cpu", progress=False)
except RuntimeError as e:
    kept = e  # its traceback holds the trainer's frames, as an error on its way out of a worker does
alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
print(json.dumps({"error": str(kept), "ddp_alive": alive}))
"""


@pytest.mark.slow
def test_data_parallel_error_leaves_no_ddp_holding_the_group(tmp_path):
    """A rank whose training raised: the group is destroyed and nothing (the traceback's trainer included) keeps
    the DDP wrapper, whose process group torn down at interpreter exit aborted a rank (CI, "terminate called")."""
    import socket

    cfg = tiny_cfg(steps=4, train={"grad_accum": 2})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", _DDP_FAILING_WORKER, json.dumps(cfg.to_dict()),
                               str(run_dir(tmp_path / "ddp", cfg))], cwd=REPO,
                              env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                   "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                   "TORCH_DISTRIBUTED_BACKEND": "gloo", "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1]) == {"error": "boom in training", "ddp_alive": 0}


def test_warmup_stable_decay_schedule():
    from costlaw.runs.schedule import lr_at, wsd_lr

    lrs = [wsd_lr(s, 100, 1e-3, 0.1, 0.2, 0.1) for s in range(1, 101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # 10% linear warmup
    assert all(x == 1e-3 for x in lrs[9:80])  # stable
    decay = lrs[80:]
    assert all(a > b for a, b in zip(decay, decay[1:])) and lrs[-1] == pytest.approx(1e-4)  # cosine to lr/10
    assert lrs[89] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    cfg = tiny_cfg(steps=100)
    assert [lr_at(cfg, s) for s in (1, 50, 100)] == [wsd_lr(s, 100, cfg.train.lr) for s in (1, 50, 100)]


def test_steps_that_compiled_are_compilation_not_training():
    """A step during which torch.compile compiled a frame (a new shape mid-run, e.g. hierarchical packing's next
    level) goes to compile_s, out of the step-time mean and CV and out of the steady tokens/s."""
    from types import SimpleNamespace

    from costlaw.runs.train import Trainer, step_time_stats

    timing = {"train_s": 10.0, "timed_s": 5.0, "timed_tokens": 5 * 100, "compile_s": 2.0,
              "step_n": 0, "step_sum": 0.0, "step_sumsq": 0.0}
    # step ends at 0, 1, 2, 5 (the third step compiled: the frame count went 3 -> 4), 6 s
    marks = [(0.0, 3), (1.0, 3), (2.0, 3), (5.0, 4), (6.0, 4)]
    fake = SimpleNamespace(_step_marks=marks, timing=timing, device=torch.device("cpu"),
                           cfg=SimpleNamespace(tokens_per_step=100))
    Trainer._step_times(fake)
    assert timing["compile_s"] == 5.0 and timing["recompile_steps"] == 1
    assert timing["step_n"] == 3 and step_time_stats(timing) == {"step_time_s": 1.0, "step_time_cv": 0.0}
    assert timing["timed_s"] == 2.0 and timing["timed_tokens"] == 400
    assert fake._step_marks == [(6.0, 4)]


def test_peak_memory_is_trainings_not_evaluations(tmp_path, monkeypatch):
    """The summary's peak is read when training ends, before evaluation (whose inference timing resets CUDA's
    peak counter, so a later read would be decode's peak)."""
    import costlaw.runs.train as train_mod
    from costlaw.runs.lm_task import LMTask

    evaluated = []
    evaluate = LMTask.evaluate
    monkeypatch.setattr(LMTask, "evaluate", lambda self, trainer: evaluated.append(1) or evaluate(self, trainer))
    monkeypatch.setattr(train_mod, "peak_memory", lambda device: (7 if evaluated else 5, "fake"))
    cfg = tiny_cfg(steps=4)
    s = train_run(cfg, run_dir(tmp_path, cfg), device="cpu", progress=False)
    assert evaluated and s["peak_memory_bytes"] == 5
