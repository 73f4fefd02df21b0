"""Reading a run directory's files without trusting them (docs/run-directory.md, "Ingest: finding run
directories, and what it refuses").

A file is read only when it is a regular file: it is opened with O_NONBLOCK, so a FIFO cannot block the
ingest, and checked with fstat before a byte is read, so a directory, FIFO, socket, device or broken symlink
makes its run corrupt with the file named, and a single JSON document larger than `DOC_LIMIT` is refused
rather than read into memory. JSON is read strictly and the same way in every file:

- UTF-8 without a byte-order mark (the writers never add one);
- a number written beyond a 64-bit float's range (`1e400`) is refused with its key, never read as infinity;
  the literals NaN / Infinity (which older writers produced) are read as non-finite values, and each column's
  check decides what they mean (null for a float column, an error for an integer one);
- a string must be encodable as UTF-8 (a lone surrogate escape such as "\\ud800" is refused with its key);
- a key repeated in one object keeps its first value, as the bulk metrics reader (polars) does;
- nesting too deep for the parser makes the file corrupt, never a crash.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from pathlib import Path

BOM = b"\xef\xbb\xbf"
DOC_LIMIT = 64 << 20  # config.json, summary.json, DONE: far above any real one, well below a host's memory


class Corrupt(Exception):
    """A run directory that does not follow the format; the message is the reason (`file: key: problem`)."""


class OutOfRange(str):
    """A number literal beyond a 64-bit float's range, kept as its text so that a check can name its key."""


def shown(path) -> str:
    """A path (or name) as text that prints and stores anywhere: bytes that are not UTF-8 become \\x escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def _missing(path: Path, name: str) -> None:
    """Nothing at `path`: fine, unless a symlink is there that leads nowhere."""
    if os.path.islink(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise Corrupt(f"{name}: a symlink to {target!r}, which does not exist; restore the file or remove the link")


def _open_regular(path: Path, name: str, limit: int | None) -> tuple[int, os.stat_result] | None:
    """An fd on a regular file and its stat, or None when absent; Corrupt when it is anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        _missing(path, name)
        return None
    except OSError as e:
        with contextlib.suppress(OSError):  # a socket cannot be opened at all: say what it is
            mode = os.stat(path).st_mode
            if not stat.S_ISREG(mode):
                raise Corrupt(f"{name}: is a {_kind(mode)}, not a file") from None
        raise Corrupt(f"{name}: cannot be opened ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Corrupt(f"{name}: is a {_kind(st.st_mode)}, not a file")
        if limit is not None and st.st_size > limit:
            raise Corrupt(f"{name}: {st.st_size} bytes, more than the {limit >> 20} MiB it may hold")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_bytes(path: Path, name: str, limit: int | None = None) -> tuple[bytes, os.stat_result] | None:
    """A regular file's bytes and its stat, or None when absent. Corrupt when it is anything else."""
    opened = _open_regular(path, name, limit)
    if opened is None:
        return None
    fd, st = opened
    try:
        chunks, total = [], 0
        while True:  # to the end, however the size changed since fstat
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if limit is not None and total > limit:
                raise Corrupt(f"{name}: more than the {limit >> 20} MiB it may hold")
        return b"".join(chunks), st
    except OSError as e:
        raise Corrupt(f"{name}: cannot be read ({e.strerror})") from None
    finally:
        os.close(fd)


def read_tail(path: Path, name: str, n: int) -> bytes | None:
    """The last `n` bytes of a regular file, or None when absent."""
    opened = _open_regular(path, name, None)
    if opened is None:
        return None
    fd, st = opened
    try:
        return os.pread(fd, n, max(0, st.st_size - n))
    except OSError as e:
        raise Corrupt(f"{name}: cannot be read ({e.strerror})") from None
    finally:
        os.close(fd)


def regular_size(path: Path, name: str) -> int:
    """Bytes in a regular file (following symlinks), -1 when absent; Corrupt when it is anything else."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _missing(path, name)
        return -1
    except OSError as e:
        raise Corrupt(f"{name}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise Corrupt(f"{name}: is a {_kind(st.st_mode)}, not a file")
    return st.st_size


def file_size(path: Path) -> int:
    """Bytes in `path` (anything that stat follows to), -1 when it cannot be stat'ed."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def text_of(data: bytes, name: str) -> str:
    """`data` as UTF-8 text; a byte-order mark or a byte that is not UTF-8 makes the file corrupt."""
    if data.startswith(BOM):
        raise Corrupt(f"{name}: starts with a byte-order mark; the format is UTF-8 without one")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise Corrupt(f"{name}: line {line}: byte {data[e.start:e.start + 1]!r} is not UTF-8") from None


def _first_wins(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) == len(pairs):
        return d
    out: dict = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out


def loads(text: str, name: str, check: bool = True):
    """One JSON value from `text` by the rules of the module doc; Corrupt names `name` and the key.
    `check=False` leaves the values to the caller (metrics lines: only the columns read are checked, as the
    bulk reader does; an out-of-range literal is then left in place as a `str`)."""
    huge: list[str] = []

    def number(literal: str):
        v = float(literal)
        if math.isinf(v):
            huge.append(literal)
            return OutOfRange(literal)
        return v

    try:
        obj = json.loads(text, parse_float=number, object_pairs_hook=_first_wins)
    except RecursionError:
        raise Corrupt(f"{name}: nested too deeply to read") from None
    except ValueError as e:
        raise Corrupt(f"{name}: not valid JSON ({e})") from None
    if check and (huge or "\\u" in text):  # only these can hold what check_values looks for
        check_values(obj, name)
    return obj


def check_values(obj, name: str) -> None:
    """Refuse an out-of-range number or a string that is not UTF-8 anywhere in `obj`, naming its key."""
    stack: list[tuple[str, object]] = [("", obj)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, OutOfRange):
            raise Corrupt(f"{name}: {where or 'value'}: {str(v)[:40]} is beyond the range of a 64-bit float")
        if isinstance(v, str):
            _utf8(v, where, name)
        elif isinstance(v, dict):
            for k, x in v.items():
                _utf8(k, f"{where}.{k!r}" if where else repr(k), name)
                stack.append((f"{where}.{k}" if where else str(k), x))
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", x) for i, x in enumerate(v))


def _utf8(s: str, where: str, name: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise Corrupt(f"{name}: {where or 'value'}: holds an unpaired surrogate "
                      f"(\\u{ord(s[e.start]):04x}), which is not text") from None


def read_doc(path: Path, name: str) -> tuple[dict, bytes, os.stat_result]:
    """A whole-file JSON object (config.json, summary.json, DONE): its value, bytes and stat."""
    got = read_bytes(path, name, DOC_LIMIT)
    if got is None:
        raise Corrupt(f"{name}: missing")
    data, st = got
    text = text_of(data, name)
    if not text.strip():
        raise Corrupt(f"{name}: empty")
    obj = loads(text, name)
    if not isinstance(obj, dict):
        raise Corrupt(f"{name}: must be a JSON object, got {type(obj).__name__}")
    return obj, data, st
