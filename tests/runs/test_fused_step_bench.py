"""benchmarks/fused_step_gpu.py on CPU at a tiny shape: it drives runs/fusion.py's own FusedLoss, whose loss for
each member must be the member's own loss on its own batch, and reports the step times it compares."""

import json
from pathlib import Path

import pytest

from tests.support.scripts import load_script

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "fused_step_gpu.py"


def test_fused_losses_are_each_members_own_and_the_json_holds_the_comparison(tmp_path, capsys):
    bench = load_script(BENCH)
    out = tmp_path / "fs.json"
    assert bench.main(["--device", "cpu", "--widths", "64", "--seq", "64", "--members", "3", "--batch", "2",
                       "--warm", "1", "--steps", "2", "--no-compile", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    assert doc["device"] == "cpu" and row["members"] == 3 and row["d_model"] == 64
    assert row["loss_fused"] == pytest.approx(row["loss_alone"], rel=1e-5)
    assert len(set(row["loss_alone"])) == 3  # three members, seeded apart
    assert row["ms_single"] > 0 and row["ms_fused"] > 0
    assert row["speedup"] == pytest.approx(3 * row["ms_single"] / row["ms_fused"])
    assert row["kernels_single"] is None and row["fused_compile_error"] is None  # no profiler on CPU
    assert f"{row['speedup']:.2f}" in capsys.readouterr().out
