"""The README runs as written: every command of its ```bash blocks, in order, in a clean copy of the checkout.

Two commands of the first block are not run here, and each is checked to be what CI itself runs: the install
(`pip install ... -e ".[test]"` would re-point this environment's costlaw at the temporary copy) and the test
command (it runs this test). `.ci/run` runs both exactly as the README writes them, so every README command runs
in CI, here or there.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = re.compile(r"^pip install \S.*-e \"\.\[test\]\"$")
TEST_COMMAND = "python -m pytest -q"


def blocks(text: str) -> list[list[str]]:
    """The command lines of each ```bash block (comments and blank lines dropped; a trailing comment kept, bash
    ignores it)."""
    found = re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    return [[ln for ln in b.splitlines() if ln.strip() and not ln.lstrip().startswith("#")] for b in found]


def ci_commands() -> list[str]:
    return [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]


def script(text: str) -> tuple[str, list[str]]:
    """The README's commands as one bash script, and the commands left to CI."""
    bs = blocks(text)
    assert bs, "README.md has no ```bash block"
    first = bs[0]
    assert len(first) == 2 and first[1] == TEST_COMMAND, f"the README's first block must be install+run, then " \
                                                         f"{TEST_COMMAND!r}: {first}"
    install, _, run = first[0].partition(" && ")
    assert INSTALL.match(install) and run.startswith("costlaw quickstart"), first[0]
    lines = [run] + [ln for b in bs[1:] for ln in b]
    body = "\n".join(f"echo {shlex.quote('+ ' + ln)} >&2\n{ln}" for ln in lines)
    return "set -euo pipefail\n" + body, [install, TEST_COMMAND]


def test_the_commands_left_to_ci_are_the_ones_ci_runs():
    _, left = script((REPO / "README.md").read_text())
    ci = ci_commands()
    for cmd in left:
        assert cmd in ci, f".ci/run does not run {cmd!r} as the README writes it"
    assert ci[-1] == TEST_COMMAND  # the last thing CI does is the README's test command


def test_blocks_are_parsed_as_written():
    text = "x\n```bash\na --b \"c d\"   # note\n# comment\n\nb\n```\n```python\nnot run\n```\n```bash\nc\n```\n"
    assert blocks(text) == [['a --b "c d"   # note', "b"], ["c"]]
    with pytest.raises(AssertionError, match="first block"):
        script("```bash\npip install x -e \".[test]\" && costlaw quickstart\n```\n")


def tracked_files() -> list[str]:
    """The checkout's files as a clean clone has them (git's index, plus files not yet added that git would not
    ignore)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f and (REPO / f).is_file()]


@pytest.mark.slow
def test_readme_commands_run_in_a_clean_copy(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.fail("the README test copies the checkout with git; run it from a git checkout")
    if shutil.which("costlaw") is None:
        pytest.fail("costlaw is not on PATH: the README's install (pip install -e .) puts it there")
    clean = tmp_path / "checkout"
    for f in tracked_files():
        (clean / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, clean / f)
    body, _ = script((REPO / "README.md").read_text())
    t0 = time.monotonic()
    p = subprocess.run(["bash", "-c", body], cwd=clean, capture_output=True, text=True, timeout=3000,
                       env={**os.environ, "COLUMNS": "120"})
    tail = (p.stdout[-4000:] + "\n" + p.stderr[-6000:])
    assert p.returncode == 0, f"a README command exited {p.returncode}:\n{tail}"
    print(f"README commands: {time.monotonic() - t0:.0f} s")
    assert (clean / "quickstart" / "report" / "index.html").is_file()
    assert (clean / "report" / "index.html").is_file() and (clean / "hf-out" / "config.json").is_file()
    assert "winner 8,1" in p.stdout  # the tour's recommend names a winner from the GPU ladder's laws
