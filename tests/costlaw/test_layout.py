"""The package layout: one import namespace, one atomic write, and committed stores that still answer queries."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import costlaw
from costlaw.costmodel.core.rundir import run_id_of

REPO = Path(__file__).resolve().parents[2]


def test_one_namespace_outside_the_checkout(tmp_path):
    """Installed, the folders import as costlaw.<folder> and never as top-level packages of their own."""
    code = ("import importlib, json\n"
            "out = {}\n"
            "for name in ['costlaw.runs', 'costlaw.analysis', 'costlaw.fitting', 'costlaw.sweeps', "
            "'costlaw.costmodel', 'runs', 'analysis', 'fitting', 'sweeps', 'costmodel']:\n"
            "    try:\n"
            "        importlib.import_module(name); out[name] = True\n"
            "    except ImportError:\n"
            "        out[name] = False\n"
            "print(json.dumps(out))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert all(got[f"costlaw.{s}"] for s in costlaw.SUBPACKAGES), got
    assert not any(got[s] for s in costlaw.SUBPACKAGES), got


def test_a_plain_checkout_maps_the_folders(tmp_path):
    """A checkout that was never installed (a GPU host with torch only) imports costlaw.<folder> from its root."""
    code = ("import sys; sys.path.insert(0, '.')\n"
            "import costlaw.costmodel.core.rundir as r, costlaw.sweeps.formula as f\n"
            "print(r.__file__); print(f.__file__)\n")
    # -S: no site-packages, so neither the editable install's finder nor anything installed is seen
    res = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(REPO / "costmodel/core/rundir.py"), str(REPO / "sweeps/formula.py")]


def test_subpackages_are_the_folders_setup_maps():
    text = (REPO / "setup.py").read_text()
    assert "costlaw.SUBPACKAGES" in text or "SUBPACKAGES" in text
    assert set(costlaw.SUBPACKAGES) == {p.parent.name for p in REPO.glob("*/__init__.py")} - {"costlaw"}


def test_os_replace_lives_in_one_module():
    """Every atomic write goes through costlaw.costmodel.core.files (unique temp name, fsync, rename)."""
    users = sorted(str(p.relative_to(REPO)) for top in ("costlaw", *costlaw.SUBPACKAGES)
                   for p in (REPO / top).rglob("*.py") if re.search(r"\bos\.replace\(", p.read_text()))
    assert users == ["costmodel/core/files.py"]


PINNED = {  # a few committed runs per study store: each id is still the run-id hash of the config it records
    "gqa-heads-steps": ["01c735f33782886e", "032d5e48637b3884"],
    "gqa-aspect": ["17dd399ad0419ebc", "1d48dfe025fbe620"],
    "hybrid-extend": ["4a60c43af5752ef2", "8ea99678ee7bccd7"],
    "pilot": ["153143422caccfc9", "4ff115949868635c"],
}


@pytest.mark.parametrize("study", sorted(p.parent.name for p in REPO.glob("studies/*/results.duckdb")))
def test_committed_stores_answer_query(study, tmp_path):
    db = REPO / "studies" / study / "results.duckdb"
    res = subprocess.run([sys.executable, "-m", "costlaw", "query", "--db", str(db), "--format", "json",
                          "select run_id, config_json from runs order by run_id"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert rows
    ids = {r["run_id"] for r in rows}
    assert set(PINNED.get(study, [])) <= ids
    for r in rows:
        if r["run_id"] in PINNED.get(study, []):
            doc = json.loads(r["config_json"])
            assert run_id_of(doc["config"]) == doc["run_id"] == r["run_id"]
