"""benchmarks/ladder_bench_gpu.py's arithmetic (the GPU job itself runs on the device): the token share of the
subset spec, the time split of a path's runs and the old-against-new comparison."""

from pathlib import Path

import pytest

from tests.support.scripts import load_script

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "ladder_bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH)


def test_time_split_separates_compile_steps_and_the_rest(bench):
    runs = [{"compile_s": 20.0, "train_s": 30.0, "wall_s": 60.0}, {"compile_s": 10.0, "train_s": 50.0, "wall_s": 70.0}]
    # train_s counts the first step, compilation included: the steps after it are train_s - compile_s
    assert bench.time_split(runs) == pytest.approx({"compile": 15.0, "steps": 25.0, "setup": 0.0, "eval": 0.0,
                                                    "other": 25.0})
    runs = [{**r, "setup_s": 4.0, "eval_s": 6.0} for r in runs]  # summaries that say where the rest went
    assert bench.time_split(runs) == pytest.approx({"compile": 15.0, "steps": 25.0, "setup": 4.0, "eval": 6.0,
                                                    "other": 15.0})


def test_compare_reports_loss_differences_against_the_seed_spread(bench):
    old = [{"run_id": f"r{s}", "d_model": 128, "n_heads": 8, "n_kv_heads": 2, "val_loss": v}
           for s, v in enumerate((2.0, 2.1, 2.2))]
    new = [{**r, "val_loss": r["val_loss"] + d} for r, d in zip(old, (0.01, -0.03, 0.02))]
    got = bench.compare(old, new)
    assert got["val_loss_diff_max_abs"] == pytest.approx(0.03)
    assert got["val_loss_diff_mean"] == pytest.approx(0.0, abs=1e-12)
    assert got["seed_sd_old_median"] == pytest.approx(0.1)


def test_subset_spec_scales_the_token_budget(bench, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[sweep]\nname = "x"\nseeds = [0]\n[derived]\n"train.tokens" = "20 * N"\n')
    text = bench.subset_spec(spec, 0.05, [0, 1, 2], "ladder-bench-new")
    assert '"train.tokens" = "round(0.05 * (20 * N))"' in text
    assert 'name = "ladder-bench-new"' in text and "seeds = [0, 1, 2]" in text
