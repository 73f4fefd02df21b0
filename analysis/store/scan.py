"""Finding the run directories under a root: symlinks followed, each real directory read once, nothing left out
without a word (docs/run-directory.md, "Ingest: finding run directories, and what it refuses").

A run directory is one holding an entry named config.json or DONE, of any type: a config.json that is a
directory makes a corrupt run, not a folder to search. The search never descends into a run directory or a
hidden one (`.git`, `.cache`, a writer's temporaries). Symlinked directories are followed wherever they lead
(a runs/ on a scratch disk is the usual case), and each real directory (device, inode) is read once: a link
back to a directory already read (a loop, or a second path to the same runs) and a link to a directory that
contains the root are reported as skipped, not followed. A link that leads nowhere or never ends, and a
directory that cannot be listed, are reported as unreadable: runs may be behind them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from costlaw.analysis.store.reading import shown
from costlaw.costmodel.core.rundir import CONFIG, DONE

MARKERS = (CONFIG, DONE)


@dataclass
class Scan:
    dirs: list[Path] = field(default_factory=list)  # run directories, sorted
    skipped: list[dict] = field(default_factory=list)  # {dir, run_id: None, reason}: loops and aliases
    unreadable: list[dict] = field(default_factory=list)  # {dir, run_id: None, reason}


def _item(path, reason: str) -> dict:
    return {"dir": shown(path), "run_id": None, "reason": reason}


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _above(root: Path) -> set[tuple[int, int]]:
    """(device, inode) of every directory that contains the root: a link to one of them is a loop."""
    out = set()
    for p in Path(os.path.realpath(root)).parents:
        try:
            st = os.stat(p)
        except OSError:
            continue
        out.add((st.st_dev, st.st_ino))
    return out


def scan(root: Path) -> Scan:
    """The run directories under `root` (root included), with what could not be searched and why."""
    out = Scan()
    above = _above(root)
    seen: dict[tuple[int, int], str] = {}
    stack = [str(root)]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
        except OSError as e:
            out.unreadable.append(_item(d, f"cannot be read ({e.strerror})"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            out.skipped.append(_item(d, f"the same directory as {shown(seen[key])}, reached again through a symlink; "
                                        "read once"))
            continue
        if key in above:
            out.skipped.append(_item(d, f"a symlink to {shown(os.path.realpath(d))}, which contains the root: a loop, "
                                        "not followed"))
            continue
        seen[key] = d
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            out.unreadable.append(_item(d, f"cannot be listed ({e.strerror})"))
            continue
        if any(e.name in MARKERS for e in entries):
            out.dirs.append(Path(d))
            continue
        below = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    below.append(e.path)
                    continue
                if not e.is_symlink():
                    continue
                if stat.S_ISDIR(os.stat(e.path).st_mode):
                    below.append(e.path)
            except OSError as err:  # a link that leads nowhere, or around in circles
                out.unreadable.append(_item(e.path, f"a symlink to {shown(_link(e.path))!r} that cannot be followed "
                                                    f"({err.strerror}); runs behind it are not ingested"))
        stack.extend(reversed(below))
    out.dirs.sort()
    return out
