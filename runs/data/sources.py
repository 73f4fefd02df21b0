"""Corpus sources: which files a corpus holds, and how they group into documents.

- `stdlib`: every `.py` file under `sysconfig.get_paths()["stdlib"]`, test suites included (they are real
  code and most of the ~31 MB), minus `site-packages`/`dist-packages` and `__pycache__`.
- `site-packages`: every `.py` file under each site-packages directory of the running interpreter
  (`site.getsitepackages()` + the user site), each directory once.
- a directory: every `.py` file under it; a file: that file; a glob (`*`, `?`, `[`): every matching file,
  any extension (e.g. `~/corpus/**/*.txt`), rooted at the glob's fixed prefix.

Files are read in sorted path order. With `long_docs` (ProLong-style) the files of one directory form one
document, concatenated in sorted order and separated by <|endoftext|>, cut at file boundaries into pieces
of at most `LONG_DOC_MAX_TOKENS`; loose files at a root that is not itself a package stay single
documents. Without it every file is a document.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import os
import re
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from costlaw.costmodel.core.errors import ConfigError

SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", ".git", ".hg", ".svn", ".tox", ".venv", "node_modules"}
LONG_DOC_MAX_TOKENS = 1 << 19  # a long document is cut (at a file boundary) past this many tokens


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute
    name: str  # the stable name recorded in the manifest: "<root label>/<relative path>"
    group: str  # documents are built per group when long_docs is on
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Source:
    spec: str  # what the user wrote: stdlib | site-packages | a path | a glob
    label: str  # a filesystem-safe short name for the cache directory
    roots: tuple[str, ...]
    files: tuple[SourceFile, ...]

    def fingerprint(self) -> str:
        """Changes whenever a file is added, removed, or modified (size or mtime): keys the prepared cache."""
        h = hashlib.sha256(f"{self.spec}\0{sys.version if self.spec == 'stdlib' else ''}".encode())
        for r in self.roots:
            h.update(f"root\0{r}\0".encode())
        for f in self.files:
            h.update(f"{f.name}\0{f.size}\0{f.mtime_ns}\n".encode())
        return h.hexdigest()[:12]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _walk_py(root: Path, skip_top: set[str] = frozenset()) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        at_top = Path(dirpath) == root
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not (at_top and d in skip_top)
                             and not d.endswith((".dist-info", ".egg-info")))
        out += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    return out


def _is_package(d: Path) -> bool:
    return (d / "__init__.py").is_file()


def _files(root: Path, label: str, paths: list[Path]) -> list[SourceFile]:
    root_is_pkg = _is_package(root)
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        parent = p.parent.relative_to(root).as_posix()
        if parent == "." and not root_is_pkg:
            group = f"{label}/{rel}"  # a loose module: its own document
        else:
            group = f"{label}/{parent}"
        out.append(SourceFile(path=p, name=f"{label}/{rel}", group=group, size=st.st_size, mtime_ns=st.st_mtime_ns))
    return out


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return s[-48:] or "corpus"


def site_packages_dirs() -> list[Path]:
    dirs = list(site.getsitepackages())
    user = site.getusersitepackages()
    if user:
        dirs.append(user)
    seen, out = set(), []
    for d in dirs:
        p = Path(d)
        if p.is_dir() and p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out


def resolve(spec: str) -> Source:
    """The files of a source spec, sorted by name. Raises ConfigError (field `corpus`) when it has none."""
    if spec == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        files = _files(root, "stdlib", _walk_py(root))
        roots = (str(root),)
    elif spec == "site-packages":
        roots_p = site_packages_dirs()
        files = []
        for i, root in enumerate(roots_p):
            files += _files(root, f"site-packages{i}", _walk_py(root))
        roots = tuple(str(r) for r in roots_p)
    elif any(c in spec for c in "*?["):
        pattern = os.path.expanduser(spec)
        fixed = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        root = Path(fixed if fixed.endswith(os.sep) else os.path.dirname(fixed) or ".").resolve()
        paths = [Path(p).resolve() for p in _glob.glob(pattern, recursive=True)]
        files = _files(root, _slug(root.name), [p for p in paths if p.is_file()])
        roots = (str(root), pattern)
    else:
        p = Path(os.path.expanduser(spec)).resolve()
        if p.is_dir():
            files = _files(p, _slug(p.name), _walk_py(p))
        elif p.is_file():
            files = _files(p.parent, _slug(p.parent.name), [p])
        else:
            raise ConfigError("corpus", f"{spec!r} is not stdlib, site-packages, an existing path or a glob; "
                                        "fix the path")
        roots = (str(p),)
    files = sorted(files, key=lambda f: (f.group, f.name))
    if not files:
        raise ConfigError("corpus", f"{spec!r} holds no files (directories are searched for *.py); "
                                    "use a glob like 'DIR/**/*.txt' for other files")
    label = spec if spec in ("stdlib", "site-packages") else _slug(Path(spec).name or spec)
    return Source(spec=spec, label=label, roots=roots, files=tuple(files))
