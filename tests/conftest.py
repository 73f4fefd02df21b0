"""Shared test gates: Slurm and browser tests skip on a laptop but must run in CI.

CI (.ci/run) starts a real Slurm cluster and installs Chromium, then sets COSTLAW_REQUIRE_SLURM=1 and
COSTLAW_REQUIRE_BROWSER=1 so that a missing service fails those tests instead of skipping them.
"""

import functools
import os
import shutil
import subprocess

import pytest


@functools.cache
def slurm_up() -> bool:
    if not os.environ.get("SLURM_CONF") or not shutil.which("sinfo"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mixed", "allocated"))


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


GATES = {  # marker -> (is the service here?, env var that makes it required, what is missing)
    "slurm": (slurm_up, "COSTLAW_REQUIRE_SLURM", "no Slurm cluster is up (tests/slurm/cluster.sh start)"),
    "browser": (lambda: chromium_path() is not None, "COSTLAW_REQUIRE_BROWSER", "Chromium is not installed"),
}


def pytest_runtest_setup(item):
    for marker, (available, env, missing) in GATES.items():
        if item.get_closest_marker(marker) and not available():
            if os.environ.get(env) == "1":
                pytest.fail(f"{missing}, and {env}=1 says this test must run here")
            pytest.skip(f"{missing}; CI starts it (see .ci/run)")
