"""Corpus sources: which files a corpus holds, and how they group into documents.

- `stdlib`: every `.py` file under `sysconfig.get_paths()["stdlib"]`, test suites included (they are real
  code and most of the ~31 MB), minus `site-packages`/`dist-packages` and `__pycache__`.
- `site-packages`: every `.py` file under each site-packages directory of the running interpreter
  (`site.getsitepackages()` + the user site), each directory once.
- `include`: the other text of those site-packages directories — C/C++/CUDA headers and sources, Cython, type
  stubs, docs (`INCLUDE_SUFFIXES`; C/C++ files that sit beside a `.py`/`.pyx` of the same name are Cython's output
  and skipped) — plus the headers of the CUDA toolkit in use (`cuda_include_dir`), when there is one.
- parts joined by `+` (`site-packages+include`, `site-packages+include+stdlib`): the union of those sources, each
  file once. A site-packages file keeps the name and group it has in `site-packages` alone, so a directory's
  `.py` files and headers make one document.
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
import shutil
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from costlaw.costmodel.core.errors import ConfigError

SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", ".git", ".hg", ".svn", ".tox", ".venv", "node_modules"}
LONG_DOC_MAX_TOKENS = 1 << 19  # a long document is cut (at a file boundary) past this many tokens
PARTS = ("stdlib", "site-packages", "include")  # named sources, joinable with "+"
INCLUDE_SUFFIXES = (
    ".h", ".hh", ".hpp", ".hxx", ".cuh", ".inl",  # C/C++/CUDA headers
    ".c", ".cc", ".cpp", ".cxx", ".cu",  # C/C++/CUDA sources
    ".pyx", ".pxd", ".pxi", ".pyi",  # Cython, type stubs
    ".md", ".rst", ".txt",  # docs
)
CYTHON_OUTPUT = (".c", ".cpp")  # what Cython writes next to the .py/.pyx it compiles (that source embedded as comments)


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
        stdlib = "stdlib" in self.spec.split("+")
        h = hashlib.sha256(f"{self.spec}\0{sys.version if stdlib else ''}".encode())
        for r in self.roots:
            h.update(f"root\0{r}\0".encode())
        for f in self.files:
            h.update(f"{f.name}\0{f.size}\0{f.mtime_ns}\n".encode())
        return h.hexdigest()[:12]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _walk_py(root: Path, skip_top: set[str] = frozenset(), suffixes: tuple[str, ...] = (".py",)) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        at_top = Path(dirpath) == root
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not (at_top and d in skip_top)
                             and not d.endswith((".dist-info", ".egg-info")))
        out += [Path(dirpath) / f for f in filenames if f.endswith(suffixes)]
    return out


def _walk_include(root: Path) -> list[Path]:
    """The INCLUDE_SUFFIXES files under `root`, less Cython's output."""
    out = []
    for p in _walk_py(root, suffixes=INCLUDE_SUFFIXES):
        if p.suffix in CYTHON_OUTPUT and any(p.with_suffix(s).is_file() for s in (".py", ".pyx")):
            continue
        out.append(p)
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


def cuda_include_dir() -> Path | None:
    """The include folder of the CUDA toolkit in use, found as torch.utils.cpp_extension finds CUDA_HOME
    ($CUDA_HOME, $CUDA_PATH, the folder above nvcc's, /usr/local/cuda); the first that holds cuda.h or
    cuda_runtime.h. None without one."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        homes.append(str(Path(nvcc).resolve().parent.parent))
    homes.append("/usr/local/cuda")
    for home in filter(None, homes):
        inc = Path(home) / "include"
        if (inc / "cuda.h").is_file() or (inc / "cuda_runtime.h").is_file():
            return inc.resolve()
    return None


def _part(name: str) -> tuple[list[SourceFile], list[str]]:
    """The files and roots of one named source (PARTS)."""
    if name == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        return _files(root, "stdlib", _walk_py(root)), [str(root)]
    roots = site_packages_dirs()
    walk = _walk_py if name == "site-packages" else _walk_include
    files = []
    for i, root in enumerate(roots):
        files += _files(root, f"site-packages{i}", walk(root))
    out = [str(r) for r in roots]
    if name == "include":
        cuda = cuda_include_dir()
        if cuda is not None and cuda not in {r.resolve() for r in roots}:
            files += _files(cuda, "cuda-include", _walk_include(cuda))
            out.append(str(cuda))
    return files, out


def resolve(spec: str) -> Source:
    """The files of a source spec, sorted by name. Raises ConfigError (field `corpus`) when it has none."""
    parts = spec.split("+")
    if all(p in PARTS for p in parts):
        files, roots_l, seen = [], [], set()
        for part in dict.fromkeys(parts):
            got, part_roots = _part(part)
            for f in got:
                if f.path not in seen:  # a file two parts both list (site-packages inside the stdlib folder)
                    seen.add(f.path)
                    files.append(f)
            roots_l += [r for r in part_roots if r not in roots_l]
        roots = tuple(roots_l)
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
            raise ConfigError("corpus", f"{spec!r} is not stdlib, site-packages, include (or those joined by +), "
                                        "an existing path or a glob; fix the path")
        roots = (str(p),)
    files = sorted(files, key=lambda f: (f.group, f.name))
    if not files:
        raise ConfigError("corpus", f"{spec!r} holds no files (directories are searched for *.py); "
                                    "use a glob like 'DIR/**/*.txt' for other files")
    label = spec if spec in ("stdlib", "site-packages") else _slug(spec if set(parts) <= set(PARTS)
                                                                   else Path(spec).name or spec)
    return Source(spec=spec, label=label, roots=roots, files=tuple(files))
