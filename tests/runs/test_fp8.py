"""Opt-in fp8 training (runs/fp8.py): which layers go to float8, the swap back for evaluation, its one-line errors,
and a whole fp8 run on CPU (torch emulates the float8 matmuls) that trains like its bf16 twin."""

import json

import pytest
import torch
from torch import nn

from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.core.rundir import CHECKPOINT
from costlaw.runs import fp8
from costlaw.runs.checkpoint import load_checkpoint
from costlaw.runs.models import build_model
from costlaw.runs.train import train_run
from tests.runs.test_train import run_dir, tiny_cfg, tiny_model

pytest.importorskip("torchao.float8", reason="torchao is in the test extra; CI installs it")
pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")


def test_only_the_blocks_aligned_linear_layers_go_to_float8_keeping_their_weights():
    model = build_model(tiny_model(n_layers=3, tied_embeddings=False))
    params, keys = {n: p for n, p in model.named_parameters()}, list(model.state_dict())
    assert fp8.to_float8(model) == 3 * 4  # wqkv, wo, w_gate_up, w_down in each block
    kinds = {n: type(m).__name__ for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert kinds.pop("lm_head") == "Linear" and set(kinds.values()) == {"Float8Linear"}
    assert all(p is params[n] for n, p in model.named_parameters())  # the optimizer's tensors, unchanged
    assert list(model.state_dict()) == keys  # checkpoints read as any run's


def test_a_layer_not_divisible_by_16_stays_plain():
    model = build_model(tiny_model(ffn_dim=40))  # w_gate_up 32 -> 80 (aligned), w_down 40 -> 32 (not)
    assert fp8.to_float8(model) == 2 * 3
    assert type(model.blocks[0].ffn.w_down).__name__ == "Linear"


def test_to_plain_gives_back_the_bf16_model_exactly():
    torch.manual_seed(0)
    model = build_model(tiny_model())
    idx = torch.randint(0, 257, (2, 32))
    before = model(idx)
    fp8.to_float8(model)
    with torch.no_grad():
        assert (model(idx) - before).abs().max() > 0  # float8 matmuls differ...
    assert fp8.to_plain(model) == 2 * 4
    assert not any(type(m).__name__ == "Float8Linear" for m in model.modules())
    assert torch.equal(model(idx), before)  # ...and the swap back is the same model


def test_missing_torchao_is_one_line_naming_the_field(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torchao.float8", None)
    with pytest.raises(ConfigError, match=r'train.precision: "fp8" needs torchao .*costlaw\[fp8\]'):
        fp8.check(torch.device("cpu"))


@pytest.mark.parametrize("cap, ok", [((8, 0), False), ((8, 9), True), ((9, 0), True)])
def test_gpu_capability(monkeypatch, cap, ok):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: cap)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "GPU X")
    if ok:
        fp8.check(torch.device("cuda", 0))
    else:
        with pytest.raises(ConfigError, match=rf"train.precision: .*8\.9 or newer .*GPU X is {cap[0]}\.{cap[1]}"):
            fp8.check(torch.device("cuda", 0))


def test_fused_groups_refuse_fp8():
    from costlaw.runs.fusion import check_fusable

    cfgs = [tiny_cfg(train={"precision": "fp8"}, seed=s) for s in (0, 1)]
    with pytest.raises(ConfigError, match="train.precision: "):
        check_fusable(cfgs)


def test_an_fp8_run_trains_like_its_bf16_twin_and_is_scored_plain(tmp_path):
    runs = {}
    for precision in ("bf16", "fp8"):
        cfg = tiny_cfg(steps=40, train={"precision": precision})
        rd = run_dir(tmp_path, cfg)
        runs[precision] = (train_run(cfg, rd, device="cpu", progress=False), rd)
    (b, _), (f, rd) = runs["bf16"], runs["fp8"]
    assert f["status"] == "completed" and "fp8: 8 linear layers in float8" in (rd / "train.log").read_text()
    import torchao

    assert f["env"]["torchao"] == torchao.__version__  # the library that ran the float8 matmuls, recorded
    curve = [json.loads(line)["loss"] for line in (rd / "metrics.jsonl").read_text().splitlines()]
    assert curve[-1] < curve[0] - 1.0  # it learns
    assert f["final_loss"] == pytest.approx(b["final_loss"], abs=0.1)  # as bf16 does, within float8's noise
    assert f["final_loss"] != b["final_loss"]  # and it did run in float8
    ck = load_checkpoint(rd / CHECKPOINT, f["run_id"])
    plain = build_model(tiny_model())
    plain.load_state_dict(ck["model"])  # a plain model reads an fp8 run's checkpoint
