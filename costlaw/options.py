"""What every verb shares, stated once: the results-root flag (--root), the bootstrap default, --json and --wide,
checks of numeric flags, input files and output paths, and the old spellings of renamed flags (hidden, with a
one-line note). A verb adds its flags through these helpers, so one name means one thing on every verb:

  --root DIR   a results root: run directories live under DIR/runs/ (run, kv-eval, quickstart, sweep, ingest)
  --out PATH   an output file or directory that is not a results root (report, calibrate, query, fit, ...)
  --wait S     seconds to wait for another process to let go of a results file (ingest, query)
  --json       one JSON document on stdout instead of the human summary (every verb)
  --wide       every column of a table, however wide the terminal (verbs that print tables)

Checks raise `CostlawError` (one line, exit 2) before anything is written; `cli.main` runs `check_values` on every
parsed command line, so no value is empty, a float flag is finite and a bounded flag within its bounds for every
verb.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError

# Bootstrap resamples for every verb that bootstraps (fit, recommend, report, validate, isoflop, quickstart): the
# recommender's guards read 95% intervals, and 200 resamples put their ends within a few percent of 2,000's.
DEFAULT_BOOTSTRAP = 200
MAX_BOOTSTRAP = 100_000
MAX_TEXT_BYTES = 64 << 20  # a config, spec, fits or measurements file: text a person or costlaw wrote

BOOTSTRAP_HELP = (f"bootstrap resamples (default {DEFAULT_BOOTSTRAP}, the same for every verb that bootstraps; "
                  "0: none, and no intervals)")


# ---------------------------------------------------------------- flags
def bounded(action: argparse.Action, lo: float | None = None, hi: float | None = None, *,
            above: bool = False) -> argparse.Action:
    """Declare a numeric flag's range (checked by `check_values` after parsing: one line, exit 2). above: the
    value must be > lo rather than >= lo."""
    action.costlaw_range = (lo, hi, above)
    return action


def add_bootstrap(p, *, what: str = "bootstrap resamples", default: int = DEFAULT_BOOTSTRAP, group=None):
    """--bootstrap K with the one default; `what` says what is resampled."""
    action = bounded((group or p).add_argument(
        "--bootstrap", type=int, default=default, metavar="K",
        help=f"{what} (default {default}, the same for every verb that bootstraps; 0: none, so no intervals)"),
        0, MAX_BOOTSTRAP)
    action.costlaw_refused = {1: "one resample has no spread; give 0 (no intervals) or at least 2"}
    return action


def add_json(p, what: str = "print one JSON object summarising what was done instead of the human summary"):
    return p.add_argument("--json", action="store_true", help=what)


def add_wide(p):
    return p.add_argument("--wide", action="store_true",
                          help="every column of the tables, however wide the terminal (default: fit the terminal; "
                               "a pipe or a file gets every column)")


class Renamed(argparse.Action):
    """A flag's old spelling: hidden from help, sets the new flag's value and says once, in one line on stderr,
    what it is called now."""

    def __init__(self, option_strings, dest, new: str, prog: str, flag: bool = False, **kw):
        self.new, self.prog = new, prog
        kw["help"] = argparse.SUPPRESS
        if flag:
            kw.update(nargs=0, default=kw.get("default", False))
        super().__init__(option_strings, dest, **kw)
        self.flag = flag

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{self.prog}: note: {option_string} is now {self.new}; {option_string} still works for now",
              file=sys.stderr)
        setattr(namespace, self.dest, True if self.flag else values)


def renamed(p, old: str, new: str, dest: str, *, flag: bool = False, group=None, **kw):
    """Keep `old` working as a hidden alias of `new` (same dest)."""
    return (group or p).add_argument(old, action=Renamed, dest=dest, new=new, prog=p.prog, flag=flag, **kw)


def add_root(p, help: str, *, required: bool = True, default: str | None = None, old: str | None = "--out"):
    """--root DIR, the results root, with `old` (its former spelling on this verb) as a hidden alias."""
    if required:
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--root", metavar="DIR", help=help + " (required)")
        if old:
            renamed(p, old, "--root", "root", group=g, metavar="DIR")
        return
    p.add_argument("--root", metavar="DIR", default=default, help=help)
    if old:
        renamed(p, old, "--root", "root", metavar="DIR")


# ---------------------------------------------------------------- checks after parsing
def _flag(action: argparse.Action) -> str:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return (longs or action.option_strings or [action.metavar or action.dest])[0]


def _actions(parser: argparse.ArgumentParser, args):
    """(action, flag) of the parser and of the subcommand chosen in `args`, recursively."""
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            chosen = getattr(args, a.dest, None)
            if chosen in a.choices:
                yield from _actions(a.choices[chosen], args)
        elif a.dest != argparse.SUPPRESS and a.help != argparse.SUPPRESS:
            yield a, _flag(a)


def check_values(parser: argparse.ArgumentParser, args) -> None:
    """No value given as an empty string (no flag means nothing by ""), every float flag finite (argparse's
    float() takes inf, nan and 1e400), every declared range kept."""
    for a, flag in _actions(parser, args):
        v = getattr(args, a.dest, None)
        values = v if isinstance(v, list) else [v]
        for x in values:
            if isinstance(x, str) and not x.strip():
                raise CostlawError(f"{flag}: empty; give a value ({parser.prog} --help says what it takes)")
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                continue
            if isinstance(x, float) and not math.isfinite(x):
                raise CostlawError(f"{flag}: must be a finite number, got {x}; give a number such as 0.5 or 1e-3")
            refused = getattr(a, "costlaw_refused", {})
            if x in refused:
                raise CostlawError(f"{flag}: {refused[x]}, got {x}")
            lo, hi, above = getattr(a, "costlaw_range", (None, None, False))
            if lo is not None and (x <= lo if above else x < lo):
                raise CostlawError(f"{flag}: must be {'>' if above else '>='} {lo:g}, got {x}")
            if hi is not None and x > hi:
                raise CostlawError(f"{flag}: must be <= {hi:,}, got {x:,}")


def as_flag(e: CostlawError, parser: argparse.ArgumentParser, args) -> CostlawError:
    """A library's error about a field the user gave as a flag (`gpu`, `dtype`, `preset`), named as that flag
    (`--gpu`), so the line points at what to change on the command line."""
    from costlaw.costmodel.core.errors import ConfigError

    if not isinstance(e, ConfigError):
        return e
    flags = {a.dest: flag for a, flag in _actions(parser, args) if a.option_strings}
    flag = flags.get(e.field)
    return ConfigError(flag, e.problem) if flag else e


# ---------------------------------------------------------------- input files
def input_file(path, flag: str, what: str, *, text: bool = True, max_bytes: int | None = MAX_TEXT_BYTES) -> Path:
    """`path` as a readable regular file, or one line naming `flag`. text: it must decode as UTF-8 (a config, a
    spec, a JSON document). A FIFO, a device or a directory is refused without being opened, so nothing blocks."""
    p = _given(path, flag, what)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CostlawError(f"{flag}: no such file {str(path)!r}; give {what}") from None
    except OSError as e:
        raise CostlawError(f"{flag}: cannot read {str(path)!r} ({e.strerror}); give {what}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CostlawError(f"{flag}: {str(path)!r} is a directory; give {what}")
    if not stat.S_ISREG(st.st_mode):
        raise CostlawError(f"{flag}: {str(path)!r} is not a regular file (a pipe, socket or device); give {what}")
    if st.st_size == 0:
        raise CostlawError(f"{flag}: {str(path)!r} is empty; give {what}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise CostlawError(f"{flag}: {str(path)!r} is {st.st_size:,} bytes, more than {what} holds "
                           f"({max_bytes:,} at most); check the path")
    if not os.access(p, os.R_OK):
        raise CostlawError(f"{flag}: cannot read {str(path)!r} (permission denied); give {what} you can read")
    if text:
        try:
            p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise CostlawError(f"{flag}: {str(path)!r} is not a text file (not UTF-8: byte {e.object[e.start]:#04x} "
                               f"at offset {e.start}); give {what}, saved as UTF-8") from None
        except OSError as e:
            raise CostlawError(f"{flag}: cannot read {str(path)!r} ({e.strerror}); give {what}") from None
    return p


def input_dir(path, flag: str, what: str) -> Path:
    """`path` as an existing directory, or one line naming `flag`."""
    p = _given(path, flag, what)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CostlawError(f"{flag}: no such directory {str(path)!r}; give {what}") from None
    except OSError as e:
        raise CostlawError(f"{flag}: cannot read {str(path)!r} ({e.strerror}); give {what}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CostlawError(f"{flag}: {str(path)!r} is not a directory; give {what}")
    return p


def input_files(paths, flag: str, what: str, **kw) -> list[Path]:
    return [input_file(p, flag, what, **kw) for p in paths or []]


def input_dbs(paths, flag: str = "--db") -> list[Path]:
    """Results files to read: regular, non-empty files (a FIFO given as one would block DuckDB's open)."""
    out = []
    for p in [paths] if isinstance(paths, str) else paths or []:
        if str(p).strip() and not os.path.lexists(p):  # worded as the store's own check (analysis.store.query)
            raise CostlawError(f"{flag}: no such results file {str(p)!r}; create it with costlaw ingest --root DIR "
                               f"--db {p}")
        out.append(input_file(p, flag, "a results file written by costlaw ingest", text=False, max_bytes=None))
    return out


def _given(path, flag: str, what: str) -> Path:
    if path is None or not str(path).strip():
        raise CostlawError(f"{flag}: empty path; give {what}")
    if "\0" in str(path):
        raise CostlawError(f"{flag}: the path holds a NUL byte; give {what}")
    return Path(str(path))  # as given, as the library that opens it sees it (a shell already expanded ~)


# ---------------------------------------------------------------- output paths
def output_dir(path, flag: str, what: str) -> Path:
    """A directory to write into (created by the verb if absent): not a file, and its parent exists and is
    writable, so a typo fails here in one line instead of half way through the work."""
    p = _given(path, flag, what)
    if p.exists() and not p.is_dir():
        raise CostlawError(f"{flag}: {str(path)!r} is a file; give a directory for {what}")
    _parent_ok(p if p.is_dir() else p.parent, flag, path)
    return p


def output_file(path, flag: str, what: str) -> Path:
    """A file to write: not a directory, its directory exists and is writable."""
    p = _given(path, flag, what)
    if p.is_dir():
        raise CostlawError(f"{flag}: {str(path)!r} is a directory; give a file name for {what}")
    if p.exists() and not (p.is_file() or p.is_symlink()):
        raise CostlawError(f"{flag}: {str(path)!r} is not a regular file (a pipe, socket or device); give a file "
                           f"name for {what}")
    _parent_ok(p.parent, flag, path)
    return p


def _parent_ok(d: Path, flag: str, path) -> None:
    d = d if str(d) else Path(".")
    if not d.exists():
        raise CostlawError(f"{flag}: no directory {str(d)!r} (for {str(path)!r}); create it first or give a path "
                           "whose directory exists")
    if not d.is_dir():
        raise CostlawError(f"{flag}: {str(d)!r} is a file, not a directory (for {str(path)!r}); give a path under a "
                           "directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise CostlawError(f"{flag}: cannot write in {str(d)!r} (permission denied); give a directory you can "
                           "write")


def json_object(path, flag: str, what: str) -> dict:
    """A JSON file that must hold one object: read, parsed, and its shape checked, each failure one line."""
    import json

    p = input_file(path, flag, what)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CostlawError(f"{flag}: {str(path)!r} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}; "
                           f"a truncated file?); give {what}") from None
    except RecursionError:
        raise CostlawError(f"{flag}: {str(path)!r} nests too deeply to be {what}") from None
    if not isinstance(doc, dict):
        raise CostlawError(f"{flag}: {str(path)!r} holds a JSON {type(doc).__name__}, not an object; give {what}")
    return doc
