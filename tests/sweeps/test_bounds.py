"""Bounded before it runs (issue 20): a grid's size is checked against runs_cap before anything is multiplied out,
formulas are bounded in magnitude, length, depth and time, run configs refuse absurd sizes, steps and learning
rates, a run whose estimated training memory exceeds its device is refused at plan, submit and `costlaw run`, and
`--device` is checked at submit (issue 22: cuda without a GPU exits 2 with one line and submits nothing). Every
refusal is one line, comes in well under a second, and writes nothing."""

import time

import pytest

from costlaw.cli import main
from costlaw.costmodel import ConfigError
from costlaw.costmodel.core import exitcodes
from costlaw.sweeps import expand, preflight, spec
from costlaw.sweeps.formula import MAX_CHARS

from .conftest import TINY_POINT
from .test_cli_sweep import TINY

BASE = """
[sweep]
name = "b"
{sweep}
""" + TINY_POINT + """[base.train]
steps = 10
{rest}
"""


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_huge_grid_is_refused_before_it_is_multiplied_out():
    values = "[" + ", ".join(str(i) for i in range(1, 11)) + "]"
    paths = ["train.batch_size", "train.grad_accum", "train.log_every", "train.checkpoint_every", "seed",
             "eval.position_buckets", "eval.decode_tokens", "eval.retrieval_samples"]
    grid = "[[axes]]\ngrid = { " + ", ".join(f'"{p}" = {values}' for p in paths) + " }"
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"^sweep.runs_cap: the spec expands to 100000000 runs .* more than "
                                          r"runs_cap 8; raise runs_cap or trim the axes$"):
        spec.parse(BASE.format(sweep="runs_cap = 8", rest=grid))
    assert time.monotonic() - t0 < 1.0  # 10^8 points were never built
    with pytest.raises(ConfigError, match=r"^sweep.runs_cap: must be in \[1, 100000\], got 1000000$"):
        spec.parse(BASE.format(sweep="runs_cap = 1000000", rest=""))


def test_stage_axes_multiply_into_the_count_before_expansion():
    text = BASE.format(sweep="runs_cap = 12", rest="""
[[axes]]
grid = { "train.batch_size" = [1, 2, 3] }
[[stages]]
name = "pretrain"
[[stages]]
name = "extend"
from = "pretrain"
[[stages.axes]]
grid = { "data.seq_len" = [32, 64, 128, 256] }
""")
    with pytest.raises(ConfigError, match="expands to 15 runs"):
        spec.parse(text)
    s = spec.parse(text.replace("runs_cap = 12", "runs_cap = 15"))
    assert expand.count(s) == 15 == len(expand.expand(s, "/tmp/r"))


@pytest.mark.parametrize("formula, problem", [
    ("((10 ** 1000) ** 1000) ** 1000", r"out of bounds: 10 \*\* 1000 is beyond \+-1e\+30"),
    ("(2 ** 60) * (2 ** 60) * (2 ** 60)", "out of bounds: an intermediate value reaches about 1e36"),
    ("10 ** 31", r"out of bounds: 10 \*\* 31"),
    ("(-7) ** 999", r"out of bounds: \(-7\) \*\* 999"),
    ("N ** 40", r"out of bounds: \d+ \*\* 40"),
    ("1e300 / 1e290", "out of bounds: an intermediate value reaches 1e\\+300"),
    ("floor(1e29) * 1000 * 1000", "out of bounds"),
    ("round(5, -1000000000)", "round's ndigits -1000000000 is beyond"),
    ("2 ** 1001", "exponent 1001 is larger than 1000"),
    ("exp(10000)", "math range error"),
    ("1 << 4000", "the operator LShift is not allowed"),
    ("-" * 900 + "1", "nests too deeply"),
    ("1" + " + 1" * 300, f"is longer than {MAX_CHARS}"),
])
def test_formulas_are_bounded(formula, problem):
    text = BASE.format(sweep="", rest=f'[derived]\n"train.steps" = "{formula}"')
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as e:
        expand.expand(spec.parse(text), "/tmp/r")
    assert time.monotonic() - t0 < 1.0
    assert e.value.field == "derived.train.steps" and "\n" not in str(e.value)
    import re

    assert re.search(problem, str(e.value)), str(e.value)


def test_ordinary_formulas_still_work():
    text = BASE.format(sweep="", rest='[derived]\n"train.steps" = "round_to(2 ** 20 / (N ** 0.5), 10)"\n'
                                      '"train.lr" = "min(3e-3, 0.5 * N ** -0.5)"')
    [r] = expand.expand(spec.parse(text), "/tmp/r")
    assert r.config.train.steps % 10 == 0 and 0 < r.config.train.lr <= 3e-3


RUN = """
[model]
d_model = {d_model}
n_layers = 2
n_heads = 2
n_kv_heads = 1
head_dim = 16
ffn_dim = 64
vocab_size = 257
[data]
seq_len = {seq_len}
[train]
steps = {steps}
lr = {lr}
batch_size = {batch}
"""


@pytest.mark.parametrize("values, key, problem", [
    ({"d_model": "1e12"}, "model.d_model", r"must be in \[1, 131072\], got 1000000000000"),
    ({"seq_len": "1e20"}, "data.seq_len", r"must be in \[8, 16777216\], got 100000000000000000000"),
    ({"steps": "9223372036854775807"}, "train.steps", r"must be in \[0, 1000000000\]"),
    ({"lr": "inf"}, "train.lr", "must be a finite number, got inf"),
    ({"lr": "nan"}, "train.lr", "must be a finite number, got nan"),
    ({"lr": "100.0"}, "train.lr", r"must be in \(0, 10\], got 100"),
    ({"d_model": "65536", "batch": "1048576"}, "train.batch_size", "needs about .* to train .* but this machine's RAM"),
])
def test_costlaw_run_refuses_absurd_configs_before_writing(tmp_path, capsys, values, key, problem):
    import re

    fields = {"d_model": "32", "seq_len": "16", "steps": "10", "lr": "1e-3", "batch": "2", **values}
    cfg = tmp_path / "run.toml"
    cfg.write_text(RUN.format(**fields))
    out = tmp_path / "out"
    t0 = time.monotonic()
    rc = main(["run", str(cfg), "--root", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - t0 < 20
    line = one_line(err)
    assert line.startswith(f"costlaw run: error: {key}: ") and re.search(problem, line), line
    assert not out.exists()


BIG = TINY.read_text().replace("d_model = 64", "d_model = 8192").replace("n_layers = 2", "n_layers = 48") \
    .replace("seq_len = 128", "seq_len = 8192").replace("batch_size = 8", "batch_size = 32") \
    .replace("head_dim = 16", "head_dim = 2048")


def test_plan_and_submit_refuse_runs_that_do_not_fit(tmp_path, capsys):
    def spec_file(name: str, text: str):
        p = tmp_path / name
        p.write_text(text)
        return str(p)

    # CPU runs that give resources.mem_gb are held to it; GPU runs to the --gpu named
    rc = main(["sweep", "plan", spec_file("cpu2.toml", BIG), "--gpu", "H100"])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and line.startswith("costlaw sweep: error: train.batch_size: run ") and "needs about" in line
    assert "but the job's 2 GB (resources.mem_gb) has 2 GiB" in line, line
    rc = main(["sweep", "plan", spec_file("gpu.toml", BIG.replace("mem_gb = 2\n", "gpus = 1\n")), "--gpu", "H100"])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and "but a H100-SXM (--gpu) has 74.5 GiB" in line, line
    assert main(["sweep", "plan", str(TINY)]) == 0
    capsys.readouterr()
    # the local executor holds CPU runs to this machine's RAM, before the root exists
    root = tmp_path / "root"
    rc = main(["sweep", "submit", spec_file("cpu.toml", BIG.replace("mem_gb = 2\n", "")), "--executor", "local",
               "--root", str(root), "--device", "cpu"])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and "but this machine's RAM has" in line, line
    assert not root.exists()


@pytest.mark.skipif(bool(preflight.visible_gpus()), reason="this machine shows a GPU")
def test_device_cuda_without_a_gpu_submits_nothing(tmp_path, capsys, monkeypatch):
    """Issue 22's must-show: `costlaw sweep submit sweeps/examples/tiny.toml --executor local --device cuda` on a
    machine without a GPU exits non-zero with one line and submits nothing."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    root = tmp_path / "root"
    rc = main(["sweep", "submit", str(TINY), "--executor", "local", "--device", "cuda", "--root", str(root)])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and line.startswith("costlaw sweep: error: --device: cuda asked for, but this machine shows no "
                                       "GPU"), line
    assert not root.exists()
    # as the issue typed it: the command line lacks --root, a usage error (one line, exit USAGE)
    rc = main(["sweep", "submit", str(TINY), "--executor", "local", "--device", "cuda"])
    assert rc == exitcodes.USAGE and one_line(capsys.readouterr().err).startswith(
        "costlaw sweep submit: error: one of the arguments --root is required")


def test_device_values_are_checked_at_submit(tmp_path, capsys, monkeypatch):
    for device, want in (("tpu", "'tpu' is not one of auto, cpu, cuda, cuda:N"),
                         ("cuda:x", "'cuda:x' is not one of")):
        rc = main(["sweep", "submit", str(TINY), "--executor", "local", "--device", device, "--root",
                   str(tmp_path / "r")])
        line = one_line(capsys.readouterr().err)
        assert rc == 2 and line.startswith(f"costlaw sweep: error: --device: {want}"), line
    runs = expand.expand(spec.load(TINY), "/tmp/r")
    with pytest.raises(ConfigError, match=r"^--device: cuda asked for, but stage pretrain's runs have "
                                          r"resources.gpus = 0"):
        preflight.check_device("cuda", "slurm", runs)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    gpu_runs = expand.expand(spec.parse(TINY.read_text().replace("mem_gb = 2", "gpus = 1")), "/tmp/r")
    preflight.check_device("cuda:0", "local", gpu_runs)
    with pytest.raises(ConfigError, match=r"^--device: cuda:1 asked for, but each job is given 1 GPU\(s\)"):
        preflight.check_device("cuda:1", "local", gpu_runs)
    with pytest.raises(ConfigError, match=r"^resources.gpus: runs need 2 GPUs but this machine shows 1"):
        preflight.check_device("auto", "local", expand.expand(
            spec.parse(TINY.read_text().replace("mem_gb = 2", "gpus = 2")), "/tmp/r"))
    assert not (tmp_path / "r").exists()


def test_fp8_without_torchao_submits_nothing(tmp_path, capsys, monkeypatch):
    """A spec asking for train.precision = "fp8" in a Python without torchao: one line naming the field and the
    install, and no root."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    fp8 = tmp_path / "fp8.toml"
    fp8.write_text(TINY.read_text().replace('precision = "fp32"', 'precision = "fp8"'))
    root = tmp_path / "root"
    rc = main(["sweep", "submit", str(fp8), "--executor", "local", "--device", "cpu", "--root", str(root)])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and line.startswith('costlaw sweep: error: train.precision: stage pretrain\'s runs ask for "fp8", '
                                       'which needs torchao'), line
    assert 'pip install "costlaw[fp8]"' in line and not root.exists()
    preflight.check_libraries(expand.expand(spec.load(TINY), "/tmp/r"))  # a bf16 spec needs nothing more
