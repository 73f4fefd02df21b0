"""`<root>/sweep.json`: the spec, the plan and every job each run was given, so status and resubmit find
everything from the root alone. Written whole to a temporary name and moved into place (readers never see
half a file); only `costlaw sweep submit|resubmit` write it.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from costlaw.costmodel import CostlawError
from costlaw.costmodel.core.files import write_atomic

FILE = "sweep.json"
FORMAT = 1


def now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def path(root: str | Path) -> Path:
    return Path(root) / FILE


def load(root: str | Path, required: bool = True) -> dict | None:
    p = path(root)
    if not p.exists():
        if required:
            raise CostlawError(f"--root: no {FILE} in {str(root)!r}; give the --root a sweep was submitted to")
        return None
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CostlawError(f"--root: {p} is not valid JSON ({e}); it is written atomically, so it was edited "
                           "by hand or by another tool") from None
    if doc.get("format") != FORMAT:
        raise CostlawError(f"--root: {p} has format {doc.get('format')!r}; this costlaw reads format {FORMAT}")
    return doc


def save(root: str | Path, doc: dict) -> None:
    p = path(root)
    doc["updated"] = now()
    write_atomic(p, json.dumps(doc, indent=1, sort_keys=False) + "\n")


def last_job(run: dict) -> dict | None:
    jobs = run.get("jobs") or []
    return jobs[-1] if jobs else None
