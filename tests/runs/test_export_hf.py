"""`costlaw export RUN_DIR --hf OUT`: runs trained on CPU, exported, loaded by transformers, and compared logit by
logit with costlaw's own model in float32; hybrids of full and sliding layers through Mistral and Qwen2 configs over
rows longer than their window; the layouts no Hugging Face format holds refused in one line before any weight is
read."""

import json
import struct
import sysconfig
from pathlib import Path

import pytest
import torch

from costlaw.cli import main as cli
from costlaw.costmodel import KVPolicy, ModelConfig, hybrid_layout
from costlaw.costmodel.core.rundir import CHECKPOINT
from costlaw.runs.checkpoint import load_checkpoint
from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from costlaw.runs.models.transformer import build_model
from costlaw.runs.train import train_run

transformers = pytest.importorskip("transformers")

EMAIL = str(Path(sysconfig.get_paths()["stdlib"]) / "email")  # ~30 real modules: a small, stable corpus
SEQ = 64
pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")


def gqa(**kw) -> ModelConfig:
    base = dict(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=12, ffn_dim=64, vocab_size=257,
                rope_theta=1e4)
    return ModelConfig(**{**base, **kw})


def trained(root: Path, model: ModelConfig, steps: int = 8) -> tuple[Path, RunConfig]:
    """A completed run of `model` trained by the Trainer on CPU (a few steps: trained, not initial, weights)."""
    cfg = RunConfig(model=model, data=DataConfig(corpus=EMAIL, seq_len=SEQ),
                    train=TrainConfig(steps=steps, batch_size=2, lr=3e-3, log_every=4, checkpoint_every=steps),
                    eval=EvalConfig(val_tokens=256, position_buckets=2, retrieval_samples=0, decode_tokens=0))
    rd = root / "runs" / cfg.run_id
    assert train_run(cfg, rd, device="cpu", progress=False)["status"] == "completed"
    return rd, cfg


def export(rd: Path, out: Path, *extra) -> tuple[int, str, str]:
    import contextlib
    import io

    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = cli(["export", str(rd), "--hf", str(out), *extra])
    return rc, o.getvalue(), e.getvalue()


def logits_both(rd: Path, cfg: RunConfig, out: Path, rows: torch.Tensor):
    """(costlaw's logits, transformers' logits, transformers' model) for token rows, in float32."""
    ours = build_model(cfg.model, attn_backend="sdpa")
    ours.load_state_dict(load_checkpoint(rd / CHECKPOINT, cfg.run_id)["model"])
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    ours.eval(), theirs.eval()
    with torch.no_grad():
        return ours(rows), theirs(rows).logits, theirs


@pytest.mark.parametrize("tied", [True, False])
def test_gqa_run_round_trips_through_llama(tmp_path, tied):
    rd, cfg = trained(tmp_path, gqa(tied_embeddings=tied))
    out = tmp_path / "hf"
    rc, stdout, err = export(rd, out, "--json")
    assert rc == 0, err
    done = json.loads(stdout)
    assert done["architecture"] == "LlamaForCausalLM" and done["run_id"] == cfg.run_id
    rows = torch.randint(0, 257, (3, SEQ), generator=torch.Generator().manual_seed(0))
    ours, theirs, model = logits_both(rd, cfg, out, rows)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in build_model(cfg.model).parameters())
    diff = (ours - theirs).abs().max().item()
    assert diff < 2e-5 * ours.abs().max().item(), diff
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))
    conf = json.loads((out / "config.json").read_text())
    assert conf["head_dim"] == 12 != conf["hidden_size"] // conf["num_attention_heads"]
    assert conf["tie_word_embeddings"] is tied
    header = (out / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", header[:8])[0]
    meta = json.loads(header[8:8 + n])["__metadata__"]
    assert meta["format"] == "pt" and meta["costlaw_run_id"] == cfg.run_id and (8 + n) % 8 == 0
    assert ("lm_head.weight" in json.loads(header[8:8 + n])) is not tied


SLIDING = {
    # every layer one window: Mistral's config
    "mistral": (hybrid_layout(3, "sink_window(0,16)", full_layer_ids=()), "MistralForCausalLM"),
    # full and sliding mixed, the sliding ones not only at the end: Qwen2's layer_types
    "qwen2": (hybrid_layout(3, "sink_window(0,16)", full_layer_ids=(1,)), "Qwen2ForCausalLM"),
}


@pytest.mark.parametrize("case", list(SLIDING))
def test_sliding_window_runs_round_trip(tmp_path, case):
    layout, arch = SLIDING[case]
    rd, cfg = trained(tmp_path, gqa(layout=layout))
    out = tmp_path / "hf"
    rc, stdout, err = export(rd, out)
    assert rc == 0, err
    assert arch in stdout
    rows = torch.randint(0, 257, (2, SEQ), generator=torch.Generator().manual_seed(1))  # 4 windows long
    ours, theirs, model = logits_both(rd, cfg, out, rows)
    assert type(model).__name__ == arch
    diff = (ours - theirs).abs().max().item()
    assert diff < 2e-5 * ours.abs().max().item(), diff
    # the window matters: the same weights with every layer full give other logits past the window
    full = build_model(cfg.model.replace(layout=()), attn_backend="sdpa")
    full.load_state_dict(load_checkpoint(rd / CHECKPOINT, cfg.run_id)["model"])
    full.eval()
    with torch.no_grad():
        assert (full(rows)[:, 20:] - theirs[:, 20:]).abs().max() > 100 * diff


REFUSED = {
    "sink tokens": (dict(layout=hybrid_layout(3, "sink_window(4,16)", full_layers=1)), "sink tokens"),
    "block strided": (dict(layout=hybrid_layout(3, "block_strided(8,2,2)", full_layers=1)), "block_strided"),
    "two windows": (dict(layout=("sink_window(0,8)", "full", "sink_window(0,16)")), "one sliding_window"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_layouts_no_format_holds_are_refused(tmp_path, case):
    kw, words = REFUSED[case]
    rd, _ = trained(tmp_path, gqa(**kw), steps=2)
    (rd / CHECKPOINT).write_bytes(b"refused before reading: never loaded")
    rc, _, err = export(rd, tmp_path / "hf")
    assert rc == 2 and err.count("\n") == 1 and "model.layout:" in err and words in err
    assert not (tmp_path / "hf").exists()


def test_kv_policy_refused(tmp_path):
    rd, cfg = trained(tmp_path, gqa(kv_policy=KVPolicy("snapkv", keep=0.5)), steps=2)
    rc, _, err = export(rd, tmp_path / "hf")
    assert rc == 2 and "model.kv_policy:" in err and "transformers" in err


def test_inputs_checked_before_writing(tmp_path):
    rd, cfg = trained(tmp_path, gqa(), steps=2)
    out = tmp_path / "hf"
    assert export(rd, out)[0] == 0
    rc, _, err = export(rd, out)  # an export is there already
    assert rc == 2 and "--force" in err
    assert export(rd, out, "--force", "--dtype", "bf16")[0] == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert next(model.parameters()).dtype == torch.bfloat16
    rc, _, err = export(tmp_path / "nowhere", tmp_path / "x")
    assert rc == 2 and "not a completed run directory" in err
    other, _ = trained(tmp_path / "other", gqa(n_kv_heads=1), steps=2)
    (rd / CHECKPOINT).write_bytes((other / CHECKPOINT).read_bytes())  # another run's weights behind this header
    (rd / "checkpoint.json").write_text((other / "checkpoint.json").read_text())
    rc, _, err = export(rd, tmp_path / "y")
    assert rc == 2 and "run_dir:" in err and "belongs to run" in err and not (tmp_path / "y").exists()
