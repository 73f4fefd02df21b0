"""The quickstart's sweep stays small and fits >= 2 candidates; bad quickstart options fail before any work; its
module imports neither torch nor the training side until it runs."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "sweeps" / "examples" / "quickstart.toml"


def test_spec_is_found_and_covers_two_fittable_candidates():
    from costlaw.quickstart import spec_path

    assert spec_path() == SPEC
    points = [p for axis in tomllib.loads(SPEC.read_text())["axes"] for p in axis["list"]]
    sizes: dict[tuple, set] = {}
    for p in points:
        sizes.setdefault((p["model.n_heads"], p["model.n_kv_heads"]), set()).add(
            (p["model.n_layers"], p["model.d_model"]))
    assert sum(len(s) >= 4 for s in sizes.values()) >= 2  # a gqa-size fit needs >= 4 sizes per candidate
    largest = max(max(s) for s in sizes.values())
    assert len({h for (h, k), s in sizes.items() if k == 1 and largest in s}) >= 3  # loss-vs-heads series


def test_spec_plans_a_small_cpu_sweep():
    p = subprocess.run([sys.executable, "-m", "costlaw", "sweep", "plan", str(SPEC), "--json"], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["totals"]["runs"] == 13 and all(r["gpus"] == 0 for r in doc["runs"])
    # the budget that keeps the whole quickstart within minutes on 2 CPU cores (see the e2e test)
    assert doc["totals"]["train_flops"] < 2.5e12


def test_bad_options_fail_with_one_line(tmp_path, capsys):
    from costlaw.cli import main

    f = tmp_path / "file"
    f.write_text("x")
    for args, expect in [(["--root", str(f)], "--root:"), (["--root", str(tmp_path / "q"), "--jobs", "0"], "--jobs:"),
                         (["--root", str(tmp_path / "q"), "--spec", str(tmp_path / "none.toml")], "--spec: no such"),
                         (["--root", str(tmp_path / "q"), "--bootstrap", "-1"], "--bootstrap:")]:
        assert main(["quickstart", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err
    assert not (tmp_path / "q").exists()  # nothing was started
    # the old spelling still works, with a one-line note before the answer
    assert main(["quickstart", "--out", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "costlaw quickstart: note: --out is now --root; --out still works for now", err
    assert len(err) == 2 and err[1].startswith("costlaw quickstart: error: --root: "), err


def test_root_holding_another_sweep_is_a_root_error(tmp_path, capsys):
    """The sweep runs in this process on the quickstart's --root, so its complaint about the root names that flag."""
    from costlaw.cli import main

    out = tmp_path / "q"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"format": 1, "name": "another-study", "runs": []}))
    assert main(["quickstart", "--root", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("costlaw quickstart: error: --root: ") and "another-study" in err[0], err
    assert "step 1/6" in captured.out and "step 2/6" not in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["sweep.json"]  # nothing trained, the record untouched


def test_analysis_side_never_imports_torch_or_runs():
    code = ("import sys, costlaw.analysis.recommend, costlaw.analysis.frontier, costlaw.analysis.figures, "
            "costlaw.analysis.report, costlaw.analysis.calibration, costlaw.analysis.hybrid, costlaw.quickstart, "
            "costlaw.cmd_recommend, costlaw.cmd_frontier, costlaw.cmd_report, costlaw.cmd_quickstart, "
            "costlaw.cmd_calibrate, costlaw.cmd_compare_hybrid; "
            "print(sorted(m for m in ('torch', 'costlaw.runs', 'costlaw.sweeps') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
