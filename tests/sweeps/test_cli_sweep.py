"""`costlaw sweep plan|submit|status|resubmit` through the CLI: plan numbers against costmodel, flags, the sbatch
lines Slurm would get, and real runs with the trainer (debug in-process; local for tiny.toml)."""

import json
import time
from pathlib import Path

import pytest

from costlaw.cli import main
from costlaw.costmodel import (
    c_infer,
    c_train,
    gpu,
    kv_cache_bytes,
    m_infer,
    params_non_embedding,
    params_total,
    prefill_flops,
)
from costlaw.sweeps import expand, spec
from costlaw.sweeps.slurm import slurm_params as _slurm_params
from costlaw.sweeps.spec import Resources

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "sweeps" / "examples" / "tiny.toml"


def run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_plan_json_matches_costmodel(capsys):
    rc, out, err = run(capsys, "sweep", "plan", str(TINY), "--json", "--mfu", "0.5", "--gpu", "A100")
    assert rc == 0, err
    doc = json.loads(out)
    runs = {r.run_id: r for r in expand.expand(spec.load(TINY), ".")}
    assert doc["totals"]["runs"] == len(doc["runs"]) == len(runs)
    assert doc["sweep"]["contexts"] == [128, 1024] and doc["totals"]["gpu"] == "A100"
    for row in doc["runs"]:
        cfg = runs[row["run_id"]].config
        m, T = cfg.model, cfg.data.seq_len
        assert row["params_total"] == params_total(m) and row["params_non_embedding"] == params_non_embedding(m)
        assert row["tokens"] == cfg.total_tokens and row["steps"] == cfg.total_steps
        assert row["train_flops"] == pytest.approx(c_train(m, T) * cfg.total_tokens)
        # evaluation: every val row and passkey probe is one forward pass over the eval length
        te = cfg.eval.seq_len or T
        probes = cfg.eval.val_tokens // te + cfg.eval.retrieval_samples * len(cfg.eval.retrieval_depths)
        assert probes > 0 and row["eval_flops"] == pytest.approx(probes * prefill_flops(m, te))
        assert row["gpu_hours"] == pytest.approx((row["train_flops"] + row["eval_flops"])
                                                 / (gpu("A100").peak_bf16_flops * 0.5) / 3600)
        assert [c["context"] for c in row["contexts"]] == [128, 1024]
        for c in row["contexts"]:
            assert c["c_infer_flops_per_token"] == c_infer(m, c["context"])
            assert c["m_infer_values"] == m_infer(m, c["context"])
            assert c["kv_cache_bytes"] == kv_cache_bytes(m, c["context"])
    assert doc["totals"]["gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in doc["runs"]))
    assert doc["totals"]["eval_flops"] == pytest.approx(sum(r["eval_flops"] for r in doc["runs"]))


def test_plan_table(capsys):
    rc, out, _ = run(capsys, "sweep", "plan", str(TINY))
    assert rc == 0
    assert out.startswith("sweep tiny: 4 runs (4 pretrain), runs_cap 8")
    assert "C_infer@1K" in out and "KV@128" in out and "GPU-hours on H100-SXM at MFU 0.35" in out
    for r in expand.expand(spec.load(TINY), "."):
        assert r.run_id in out


@pytest.mark.parametrize("argv,key", [
    (["sweep", "plan", str(TINY), "--mfu", "0"], "--mfu"),
    (["sweep", "plan", str(TINY), "--gpu", "TPU"], "--gpu"),
    (["sweep", "status", "--root", "/nonexistent/root"], "--root"),
    (["sweep", "resubmit", "--root", "/nonexistent/root", "--failed"], "--root"),
    (["sweep", "submit", str(TINY), "--executor", "local", "--root", "/tmp/never-made", "--max-parallel", "0"],
     "--max-parallel"),
])
def test_flag_errors_are_one_line(capsys, argv, key):
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith(f"costlaw sweep: error: {key}")
    assert not Path("/tmp/never-made").exists()


@pytest.mark.slurm  # submitit's Slurm executor needs the Slurm client on PATH
def test_slurm_parameters_reach_sbatch(tmp_path):
    import submitit

    res = Resources(gpus=4, cpus=6, mem_gb=48, time_min=90, partition="gpu", account="proj", qos="high",
                    constraint="h100", array_parallelism=3, signal_delay_s=120, setup=("source venv/bin/activate",))
    ex = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    ex.update_parameters(**_slurm_params(res, "sw-extend", "aftercorr:41"))
    ex._executor.parameters["map_count"] = 5
    text = ex._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--account=proj", "--qos=high", "--constraint=h100", "--gpus-per-node=4",
                 "--ntasks-per-node=4", "--cpus-per-task=6", "--mem=48GB", "--time=90", "--array=0-4%3",
                 "--signal=USR2@120", "--dependency=aftercorr:41", "--kill-on-invalid-dep=yes", "--job-name=sw-extend",
                 "--nodes=1"):
        assert f"#SBATCH {line}\n" in text, line
    assert "source venv/bin/activate" in text
    cpu = _slurm_params(Resources(), "sw-pretrain")
    assert cpu["tasks_per_node"] == 1 and "gpus_per_node" not in cpu and "slurm_dependency" not in cpu


def test_unreachable_slurm_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "no-such-slurm.conf"))
    root = tmp_path / "root"
    rc, _, err = run(capsys, "sweep", "submit", str(TINY), "--executor", "slurm", "--root", str(root))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("costlaw sweep: error: --executor: ")
    assert not root.exists()


MICRO = """
[sweep]
name = "micro"
[base.model]
d_model = 32
n_layers = 1
n_heads = 2
n_kv_heads = 1
head_dim = 16
ffn_dim = 64
vocab_size = 257
[base.data]
seq_len = 32
[base.train]
steps = 4
batch_size = 2
log_every = 2
precision = "fp32"
compile = "off"
[base.eval]
val_tokens = 256
position_buckets = 2
retrieval_samples = 0
decode_tokens = 0
[[stages]]
name = "pretrain"
[[stages]]
name = "extend"
from = "pretrain"
set = { "data.seq_len" = 64 }
"""


@pytest.mark.slow
def test_debug_executor_with_the_real_trainer(tmp_path, capsys):
    spec_path = tmp_path / "micro.toml"
    spec_path.write_text(MICRO)
    root = tmp_path / "root"
    rc, out, err = run(capsys, "sweep", "submit", str(spec_path), "--executor", "debug", "--root", str(root),
                       "--device", "cpu")
    assert rc == 0, err
    assert "sweep micro: 2 completed" in out and f"costlaw ingest --root {root}" in out
    doc = json.loads((root / "sweep.json").read_text())
    pre, ext = doc["runs"]
    for r in doc["runs"]:
        s = json.loads((root / "runs" / r["run_id"] / "summary.json").read_text())
        assert s["status"] == "completed" and s["steps"] == 4
    assert json.loads((root / "runs" / ext["run_id"] / "config.json").read_text())["base_run_id"] == pre["run_id"]
    rc, out, _ = run(capsys, "sweep", "status", "--root", str(root), "--json")
    assert rc == 0 and json.loads(out)["counts"]["completed"] == 2
    rc, _, err = run(capsys, "sweep", "resubmit", "--root", str(root), "--failed")
    assert rc == 0 and "nothing to resubmit: 2 completed" in err


@pytest.mark.slow
def test_tiny_sweep_on_the_local_executor_within_3_minutes(tmp_path, capsys):
    root = tmp_path / "tiny"
    t0 = time.monotonic()
    rc, out, err = run(capsys, "sweep", "submit", str(TINY), "--executor", "local", "--root", str(root))
    elapsed = time.monotonic() - t0
    assert rc == 0, err
    assert "sweep tiny: 4 completed" in out, out + err
    print(f"tiny.toml on the local executor: {elapsed:.0f} s")
    assert elapsed <= 180, f"tiny.toml took {elapsed:.0f} s on the local executor (budget 180 s)"
    rc, out, err = run(capsys, "ingest", "--root", str(root), "--db", str(root / "results.duckdb"))
    assert rc == 0, err
    rc, out, err = run(capsys, "query", "--db", str(root / "results.duckdb"), "--format", "json",
                       "SELECT count(*) AS n FROM runs WHERE status = 'completed'")
    assert rc == 0 and json.loads(out)[0]["n"] == 4
