"""Open a report in Debian's headless Chromium: the DOM after load (figuresLoaded) and a screenshot's pixels."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


def figures_loaded(html: Path) -> int | None:
    """document.body.dataset.figuresLoaded after the page's load event (None if the script never ran)."""
    p = _run(["--dump-dom", html.resolve().as_uri()])
    m = re.search(r'<body[^>]*\bdata-figures-loaded="(\d+)"', p.stdout)
    return int(m.group(1)) if m else None


def screenshot_stats(html: Path, out: Path, size: str = "1280,2400") -> tuple[int, float]:
    """(distinct grey levels, pixel variance) of a screenshot of the page."""
    import numpy as np
    from matplotlib.image import imread

    _run([f"--screenshot={out}", f"--window-size={size}", "--hide-scrollbars", html.resolve().as_uri()])
    img = imread(out)[..., :3]
    grey = img.mean(axis=2) * (255.0 if img.dtype.kind == "f" else 1.0)  # 0..255
    return len(np.unique(np.round(grey))), float(grey.var())
