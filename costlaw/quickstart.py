"""`costlaw quickstart`: the whole loop on this machine in a few minutes, CPU is enough.

1. run `sweeps/examples/quickstart.toml` with the local executor (`costlaw.sweeps.submit.submit_spec`, as
   `costlaw sweep submit` does) into DIR (--root) (run directories under DIR/runs/);
2. ingest DIR into DIR/results.duckdb;
3. fit each head configuration's L(N) = (a/N)^b + E with bootstrap intervals, and store the fits in the
   database's `fits` table;
4. recommend: the cheapest config at 8K and 128K context for a target loss every fitted candidate reached,
   from the laws that pass recommend's guards. The quickstart's own ladder cannot give such laws: 13 runs of
   150 steps on 2 CPU cores leave each law's floor and scale unidentified (E at its bound, intervals spanning
   decades, R² well below 0.98), and a CPU ladder that would pin them down (measured: five sizes of 20 tokens
   per parameter, 175 s of training for three candidates, still unidentified) does not fit in a few minutes.
   So the quickstart says plainly that its data cannot support a recommendation, shows why per law, and
   names the command that would use the laws anyway; the loop (sweep, store, fits, guards, report) is the
   point here, the answer needs a GPU ladder (studies/gqa-heads-steps);
5. write the report: DIR/report/index.html (self-contained), DIR/report/report.md, DIR/report/fits.json;
6. print the next commands to try.

Runs already finished in DIR are not trained again (sweeps skip DONE runs, ingest is idempotent), so an
interrupted quickstart resumes where it stopped. This orchestration lives in the CLI layer because it is the
one place allowed to import both sweeps (which trains) and analysis (which must never import runs or torch).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.options import DEFAULT_BOOTSTRAP

CONTEXTS = (8192, 131072)
STEPS = 6


def spec_path() -> Path:
    """sweeps/examples/quickstart.toml, found without importing sweeps (`costlaw quickstart --help` stays fast)."""
    spec = importlib.util.find_spec("costlaw.sweeps")
    locs = list(spec.submodule_search_locations or []) if spec else []
    for loc in locs:
        p = Path(loc) / "examples" / "quickstart.toml"
        if p.is_file():
            return p
    raise CostlawError("quickstart: sweeps/examples/quickstart.toml is missing from this install; reinstall costlaw "
                       "(pip install -e .) or pass --spec FILE")


@dataclass
class QuickstartResult:
    out: Path
    db: Path
    report: Path
    seconds: float
    step_seconds: dict = field(default_factory=dict)
    target: float | None = None
    recommendation: object | None = None
    counts: dict = field(default_factory=dict)


class Steps:
    """Progress: one line per step; each step's seconds are kept for the closing summary."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.t0, self.k, self.marks = log, time.monotonic(), 0, {}
        self._t = self.t0
        self._name = None

    def start(self, name: str, what: str) -> None:
        self.finish()
        self.k += 1
        self._name, self._t = name, time.monotonic()
        self.log(f"step {self.k}/{STEPS}: {what}")

    def finish(self) -> None:
        if self._name is not None:
            self.marks[self._name] = round(time.monotonic() - self._t, 1)
            self._name = None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


class _LineLog(io.TextIOBase):
    """A text stream that hands each complete line to `log`, indented under the step, without the sweep's prefix."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.buf = log, ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.buf += s
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            if line.strip():
                self.log("  " + line.rstrip().removeprefix("[costlaw sweep] "))
        return len(s)

    def close(self) -> None:
        self.write("\n")
        super().close()


def run_sweep(spec: Path, out: Path, jobs: int | None, log: Callable[[str], None]) -> dict:
    """Train the spec's runs here (local executor, CPU) and return the sweep's state counts. On a terminal the
    sweep draws its bar on stderr, as `costlaw sweep submit` does; otherwise its lines join the quickstart's log,
    so a redirected quickstart leaves one ordered record of every step."""
    from costlaw.sweeps.status import collect
    from costlaw.sweeps.submit import submit_spec

    log(f"  (as costlaw sweep submit {spec} --executor local --root {out} --device cpu"
        + (f" --max-parallel {jobs})" if jobs else ")"))
    terminal = sys.stdout.isatty() and sys.stderr.isatty()
    # the sweep's root is the quickstart's --root, so a complaint about the sweep's root already names that flag
    with contextlib.ExitStack() as stack:
        if not terminal:
            stack.enter_context(contextlib.redirect_stderr(stack.enter_context(contextlib.closing(_LineLog(log)))))
        submit_spec(spec, out, "local", max_parallel=jobs, device="cpu")
    st = collect(out)
    counts = {k: v for k, v in st["counts"].items() if v}
    log(f"  sweep {st['name']}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    unfinished = sum(counts.get(k, 0) for k in ("failed", "preempted", "incomplete"))
    if unfinished:
        log(f"  {unfinished} runs did not finish: `costlaw sweep status --root {out}` shows why, "
            f"`costlaw sweep resubmit --root {out} --failed` retries them; continuing with the rest")
    return counts


def run_quickstart(out: str | Path = "quickstart", jobs: int | None = None, *, spec: str | Path | None = None,
                   n_boot: int = DEFAULT_BOOTSTRAP, log: Callable[[str], None] = print) -> QuickstartResult:
    from costlaw.analysis.objective import Objective
    from costlaw.analysis.recommend import fit_store, recommend, render_text
    from costlaw.analysis.report import PAPER_CONTEXTS, build_report, default_target
    from costlaw.analysis.store import ingest, write_fits

    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise CostlawError(f"--root: {out} is a file; give a directory (it will hold runs/, results.duckdb, report/)")
    if jobs is not None and jobs < 1:
        raise CostlawError(f"--jobs: must be >= 1, got {jobs}")
    spec = Path(spec) if spec else spec_path()
    if not spec.is_file():
        raise CostlawError(f"--spec: no such file {str(spec)!r}")
    db, report_dir = out / "results.duckdb", out / "report"
    steps = Steps(log)

    steps.start("sweep", f"train the sweep {spec.name} on this machine (local executor"
                         + (f", {jobs} at a time)" if jobs else ", one run per CPU)"))
    run_sweep(spec, out, jobs, log)

    steps.start("ingest", f"ingest the run directories into {db}")
    rep = ingest(out, db)
    log("  " + rep.line())
    for item in rep.incomplete + rep.corrupt:
        log(f"  skipped {item.get('dir')}: {item.get('reason')}")

    steps.start("fit", f"fit L(N) = (a/N)^b + E per head configuration (bootstrap {n_boot})")
    fits = fit_store(db, n_boot=n_boot, progress=lambda m: log("  " + m))
    ids = write_fits(db, fits.fit_rows(source_query="completed pretraining runs, grouped by head configuration"))
    log(f"  {len(ids)} laws written to the fits table; unfit: "
        + (", ".join(f"{c.label} ({c.reason})" for c in fits.candidates if not c.fitted) or "none"))

    for c in fits.candidates:
        if c.fitted and not c.base:
            log(f"  {c.label}: " + (f"weak law ({'; '.join(c.weak)})" if c.weak else "passes recommend's guards"))

    steps.start("recommend", "recommend the cheapest config at 8K and 128K context")
    target, note = default_target(fits)
    if target is None:
        raise CostlawError(f"quickstart: {note}")
    log("  " + note)
    rec = recommend(fits, target, list(CONTEXTS), Objective())
    for line in render_text(rec).splitlines():
        log("  " + line)
    supported = any(rec.winner(T) is not None for T in rec.contexts)
    if not supported:
        for line in unsupported_lines(db, target):
            log(line)

    steps.start("report", f"write the report to {report_dir}")
    res = build_report(db, report_dir, contexts=PAPER_CONTEXTS, fits=fits, progress=lambda m: log("  " + m))
    for s in res.skipped:
        log(f"  figure not drawn: {s}")
    steps.start("done", "next steps")
    steps.finish()
    total = steps.elapsed()
    winner = rec.winner(CONTEXTS[-1])
    toml = report_dir / "recommended" / f"model-{CONTEXTS[-1]}.toml"
    log(f"quickstart finished in {total:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in steps.marks.items() if k != "done")
        + f"): {len(rep.ingested) + len(rep.replaced) + len(rep.unchanged)} runs in {db}, report at {res.html}")
    if not supported:
        log("no recommendation: this quickstart's data cannot support one (see step 4); the report and commands "
            "below show the loop")
    log("next:")
    for cmd in next_commands(out, db, res, target, winner, toml):
        log(f"  {cmd}")
    return QuickstartResult(out, db, res.html, total, steps.marks, target, rec,
                            {"ingested": len(rep.ingested), "unchanged": len(rep.unchanged)})


def unsupported_lines(db: Path, target: float) -> list[str]:
    """What the quickstart says when no law passes the guards: plainly, why, and what would."""
    return ["  THE QUICKSTART'S DATA CANNOT SUPPORT A RECOMMENDATION. Its 13 runs (150 steps each, on CPU) leave "
            "every law unidentified (the reasons per law are above), and a winner named from such laws would be a "
            "guess. That is expected of a few-minute CPU demo: it shows the loop (sweep, store, fits, guards, "
            "report), not an answer.",
            "  A ladder that supports one has >= 5 sizes per candidate at ~20 tokens per parameter and two seeds "
            "where runs spread, trained on a GPU: studies/gqa-heads-steps (91 runs; check its intervals with "
            "costlaw validate --db studies/gqa-heads-steps/results.duckdb).",
            f"  To see what the recommender would pick from these laws anyway (not a supported recommendation): "
            f"costlaw recommend --db {db} --target-loss {target:g} --context 8K,128K --allow-weak-laws"]


def next_commands(out: Path, db: Path, res, target: float, winner, toml: Path) -> list[str]:
    cmds = [f"open {res.html}                       # the report (figures, fits, recommendation)",
            f"costlaw query --db {db} \"SELECT n_heads, n_kv_heads, d_model, n_layers, n_params, val_loss "
            "FROM run_summary ORDER BY n_heads, n_params\"",
            f"costlaw recommend --db {db} --target-loss {target:g} --context 8K,32K,128K",
            f"costlaw validate --db {db}        # how often left-out runs land inside their intervals",
            f"costlaw recommend --fits {res.fits} --target-loss {target:g} --context 128K --memory-budget 64MiB --json",
            f"costlaw frontier --db {db} --context 128K --plot {out / 'frontier.png'}"]
    if winner is not None and toml.is_file():
        cmds.append(f"costlaw cost --config {toml} --context 128K --gpu H100")
    cmds += [f"costlaw report --db {db} --out {out / 'report'} --target-loss {target:g}",
             "costlaw sweep plan sweeps/examples/quickstart.toml   # then copy it, add sizes or head configs, and "
             "submit with --executor slurm on a cluster"]
    return cmds
