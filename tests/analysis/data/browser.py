"""Open a report in Debian's headless Chromium: the DOM after load (figuresLoaded), the layout of its tables at a
given window width (a probe script added to a copy of the page), and a screenshot's pixels."""

from __future__ import annotations

import html as htmllib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--force-device-scale-factor=1"]

# Runs after load (figures decoded): the viewport's and the page's widths and every table's box in CSS px, the
# page's own coordinates (a screenshot of the page from its top has the same ones at scale factor 1).
PROBE = """<script>
window.addEventListener("load", function () {
  var doc = document.documentElement;
  var tables = Array.prototype.slice.call(document.querySelectorAll("table"));
  document.body.dataset.layout = JSON.stringify({
    viewport: doc.clientWidth, page: doc.scrollWidth, height: doc.scrollHeight,
    tables: tables.map(function (t) {
      var r = t.getBoundingClientRect(), box = t.parentElement, sec = t.closest("section");
      return {id: t.id || null, section: sec ? sec.id : null, left: r.left + window.scrollX,
              right: r.right + window.scrollX, top: r.top + window.scrollY, bottom: r.bottom + window.scrollY,
              box_scroll: box.scrollWidth, box_client: box.clientWidth};
    })
  });
});
</script>"""


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


def layout(html: Path, width: int = 1280, height: int = 900) -> dict:
    """The page laid out in a window `width` x `height` px: {"viewport", "page" (its scroll width), "height",
    "tables": [{"id", "section", "left", "right", "top", "bottom", "box_scroll", "box_client"}]} in CSS px. The
    probe runs in a copy of the page (figures are data URIs, so the copy is complete), not in the report itself."""
    text = html.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "probed.html"
        probed.write_text(text.replace("</body>", PROBE + "\n</body>", 1))
        p = _run([f"--window-size={width},{height}", "--dump-dom", probed.as_uri()])
    m = re.search(r'<body[^>]*\bdata-layout="([^"]*)"', p.stdout)
    if not m:
        raise AssertionError(f"the layout probe did not run: {p.stderr[-2000:]}")
    return json.loads(htmllib.unescape(m.group(1)))


def screenshot(html: Path, out: Path, width: int = 1280, height: int = 2400):
    """A screenshot of the page's top `height` px in a window `width` px wide, written to `out`; returns its
    pixels as greys 0..255 (rows x columns)."""
    import numpy as np
    from matplotlib.image import imread

    _run([f"--screenshot={out}", f"--window-size={width},{height}", html.resolve().as_uri()])
    img = imread(out)[..., :3]
    return np.asarray(img.mean(axis=2) * (255.0 if img.dtype.kind == "f" else 1.0))


def screenshot_stats(html: Path, out: Path, size: str = "1280,2400") -> tuple[int, float]:
    """(distinct grey levels, pixel variance) of a screenshot of the page."""
    import numpy as np

    width, height = (int(x) for x in size.split(","))
    grey = screenshot(html, out, width, height)
    return len(np.unique(np.round(grey))), float(grey.var())
