"""`costlaw cost`: the issue's must-show numbers through the CLI, and one-line errors."""

import json
import subprocess
import sys

import pytest

from costlaw.costmodel import ModelConfig, costs
from costlaw.costmodel.core import exitcodes


def cost(*args):
    p = subprocess.run([sys.executable, "-m", "costlaw", "cost", *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def test_llama_1b_json_and_gqa_saving():
    rc, out, _ = cost("--preset", "llama-3.2-1b", "--context", "131072", "--json")
    base = json.loads(out)
    assert rc == 0 and base["params_total"] == 1_235_814_400
    for key in ("params_non_embedding", "c_infer_flops_per_token", "m_infer_values", "kv_cache_bytes",
                "c_train_flops_per_token"):
        assert key in base
    rc, out, _ = cost("--preset", "llama-3.2-1b", "--heads", "8", "--kv-heads", "1", "--context", "128K", "--json")
    small = json.loads(out)
    assert round(100 * (1 - small["c_infer_flops_per_token"] / base["c_infer_flops_per_token"]), 1) == 66.9
    assert round(100 * (1 - small["m_infer_values"] / base["m_infer_values"]), 1) == 59.4


def test_hybrid_and_keep_flags():
    rc, out, _ = cost("--preset", "llama-2-7b", "--full-layers", "11", "--sparse", "sink-window", "--sink", "4",
                      "--window", "4092", "--context", "131072", "--json")
    hyb = json.loads(out)
    _, out, _ = cost("--preset", "llama-2-7b", "--context", "131072", "--json")
    dense = json.loads(out)
    assert round(100 * (1 - hyb["kv_cache_bytes"] / dense["kv_cache_bytes"]), 2) == 63.57
    _, out, _ = cost("--preset", "llama-2-7b", "--kv-keep", "0.1", "--context", "131072", "--json")
    assert json.loads(out)["kv_tokens"] == 32 * 13107


def test_several_contexts_and_table():
    rc, out, _ = cost("--preset", "gqa-19m", "--context", "8K,32K", "--context", "131072", "--json")
    rows = json.loads(out)
    assert [r["context"] for r in rows] == [8192, 32768, 131072]
    rc, out, _ = cost("--preset", "gqa-19m", "--context", "8K", "--gpu", "H100", "--generate", "16")
    assert rc == 0 and "decode tok/s" in out and "8192" in out


def test_config_file_round_trip(tmp_path):
    rc, toml, _ = cost("--preset", "llama-3.2-1b", "--full-layer-ids", "3,4,5", "--sparse", "block-strided",
                       "--toml")
    path = tmp_path / "m.toml"
    path.write_text(toml)
    cfg = ModelConfig.from_toml(toml)
    rc, out, _ = cost("--config", str(path), "--context", "65536", "--json")
    assert json.loads(out)["c_infer_flops_per_token"] == costs(cfg, 65536)["c_infer_flops_per_token"]
    run = tmp_path / "run.toml"
    run.write_text("seed = 1\n" + toml)  # a run config's [model] table is accepted as is
    rc, out2, _ = cost("--config", str(run), "--context", "65536", "--json")
    assert json.loads(out2)["config_id"] == cfg.config_id


@pytest.mark.parametrize("args, field", [
    (["--preset", "nope"], "preset"),
    (["--preset", "gqa-19m", "--heads", "8", "--kv-heads", "3"], "--kv-heads"),
    (["--d-model", "64"], "--layers"),
    (["--preset", "gqa-19m", "--kv-keep", "0"], "--kv-keep"),
    (["--preset", "gqa-19m", "--kv-budget", "-5"], "--kv-budget"),
    (["--preset", "gqa-19m", "--full-layers", "2"], "--sparse"),
    (["--preset", "gqa-19m", "--full-layer-ids", "1,9", "--sparse", "sink-window"], "--full-layer-ids"),
    (["--preset", "gqa-19m", "--sparse", "sink-window", "--full-layers", "1", "--window", "0"], "--window"),
    (["--preset", "gqa-19m", "--context", "lots"], "context"),
    (["--preset", "gqa-19m", "--dtype", "int3"], "dtype"),
    (["--preset", "gqa-19m", "--gpu", "TPU"], "gpu"),
    (["--config", "/nonexistent.toml"], "--config"),
    (["--preset", "gqa-19m", "--context", "inf"], "--context"),
    (["--preset", "gqa-19m", "--kv-keep", "nan"], "--kv-keep"),
])
def test_bad_input_is_one_line_exit_2(args, field):
    rc, out, err = cost(*args)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and field in err and "Traceback" not in err


def test_a_value_argparse_cannot_read_is_a_usage_error():
    rc, out, err = cost("--preset", "gqa-19m", "--heads", "many")
    assert rc == exitcodes.USAGE and out == ""
    assert err.strip() == ("costlaw cost: error: argument --heads: invalid int value: 'many' (see costlaw cost "
                           "--help)")
