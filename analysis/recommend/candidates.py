"""Candidates (GQA head pairs, hybrid layouts, compressed caches) with their laws, and choosing among them."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from costlaw.analysis.fits import FITS_FORMAT, FitOptions, fit_fields, header, store_rows
from costlaw.analysis.recommend.guards import weaknesses
from costlaw.analysis.recommend.intervals import Interval, interval, mean_draws
from costlaw.analysis.recommend.noise import Noise, config_groups
from costlaw.analysis.recommend.noise import estimate as estimate_noise
from costlaw.analysis.shape import Template
from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import write_atomic

HEADS = (1, 2, 4, 8, 16, 32)
PAPER_PAIRS = tuple((h, k) for h in HEADS for k in HEADS if k <= h)  # the paper's 21 candidates
FAMILIES = ("gqa", "hybrid", "compressed")
MIN_SIZES = 4
EXTRAPOLATION_WARN = 4.0
DEFAULT_STANDARD = "d/d_h,8"


# ---------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """One configuration family member the search can size: its law (or why it has none) and template."""

    label: str
    family: str
    template: Template
    law: str = "gqa-size"
    params: dict | None = None
    samples: dict | None = None  # name -> array of bootstrap draws (configs resampled with their seeds)
    ci95: dict | None = None
    r2: float | None = None
    n_points: int = 0  # points fitted: configs (each the mean over its seeds)
    ladder: list[dict] = field(default_factory=list)  # one per run: {"N", "d_model", "n_layers", "loss", ...}
    n_max: float | None = None
    reason: str | None = None  # why there is no law
    base: str | None = None  # compressed-on-dense: the dense candidate whose law it uses
    delta_nll: float = 0.0
    delta_source: str | None = None
    group: dict = field(default_factory=dict)  # the store columns that select its runs
    fit_extra: dict = field(default_factory=dict)  # the rest of its fit entry (objective, r2_ceiling, fingerprint...)
    n_runs: int | None = None  # runs behind the points (None: not known, e.g. a fits file without them)
    noise: Noise | None = None  # run-to-run noise (analysis/recommend/noise.py); None: not known
    x_extra: tuple[str, ...] = ()  # the law's variables after N (a shape-aware law in costlaw validate)
    # compressed: ΔNLL(N) = exp(a)·N^b fitted over the base sizes the policy was measured on ({"a", "b", "n_min",
    # "n_max", "sizes"}); None: the one ΔNLL `delta_nll` at every N
    delta_law: dict | None = None
    # compressed: ΔNLL(N, keep) = exp(a)·N^b·(1/keep - 1)^c over every size and keep ratio its policy was measured
    # at on this base ({"a", "b", "c", ranges, "rms_log"}); None: fewer than two sizes and two keeps
    keep_law: dict | None = None
    retrieval: float | None = None  # passkey accuracy measured on its largest runs (None: not measured)
    retrieval_source: str | None = None  # where that number comes from

    @property
    def fitted(self) -> bool:
        return self.params is not None

    def apply_fit(self, entry: dict) -> None:
        """Take a fit entry of the pipeline (analysis/fits/doc.py) as this candidate's law."""
        fit = fit_fields(entry)
        self.params = as_floats(fit["params"])
        boot = fit.get("bootstrap")
        self.samples = {k: np.asarray(v, dtype=float) for k, v in boot.items()} if boot else None
        ci = {k: [float(v[0]), float(v[1])] for k, v in (fit.get("ci95") or {}).items()
              if k in self.params and None not in v}
        self.ci95 = ci or None
        self.r2 = None if fit.get("r2") is None else float(fit["r2"])
        self.n_points = int(fit.get("n_points", self.n_points))
        self.fit_extra = {k: v for k, v in fit.items() if k not in ("params", "bootstrap", "ci95", "r2", "n_points")}
        self.reason = None

    def measure_noise(self, kind: str = "constant", lack_of_fit: bool = False) -> Noise | None:
        """Estimate the run-to-run noise from the ladder's runs about the fitted law (analysis/recommend/noise.py)."""
        from costlaw.fitting import get_law

        law = get_law(self.law)
        if self.x_extra:  # a law of more than N: the noise about it at each config's own extra values
            extra = {}
            for pt in self.ladder:
                extra.setdefault(float(pt["N"]), [pt[x] for x in self.x_extra])

            def predict(Ns):
                return law.predict(self.params, [[float(n), *extra[float(n)]] for n in Ns])
        else:
            def predict(Ns):
                return law.predict(self.params, np.asarray(Ns, dtype=float))
        self.noise = estimate_noise(config_groups(self.ladder), predict, len(law.params), kind, lack_of_fit)
        return self.noise

    @property
    def weak(self) -> list[str]:
        """Why this law is not fit to recommend from (analysis/recommend/guards.py); empty when it is."""
        return weaknesses(self)

    def delta_at(self, N: float) -> float:
        """The ΔNLL a compressed candidate adds to its base's law at N (0 for the others)."""
        d = self.delta_law
        if d is None:
            return self.delta_nll
        return math.exp(d["a"] + d["b"] * math.log(N))

    def interval(self, N: float, level: float, extra=(), widen_sd: float = 0.0) -> Interval:
        """The predicted loss at N (+ ΔNLL) with the interval of the mean and of a new run (intervals.py)."""
        from costlaw.fitting import get_law

        law = get_law(self.law)
        x = [[float(N), *extra]]
        delta = self.delta_at(N)
        point = float(law.predict(self.params, x)[0]) + delta
        draws = mean_draws(law, self.samples, N, extra) + delta
        sd = df = None
        if self.noise is not None:
            sd = math.sqrt(self.noise.sd(N) ** 2 + widen_sd ** 2)
            df = self.noise.df(N)
        return interval(point, draws, level, sd, df)

    @property
    def n_heads(self) -> int:
        return self.template.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.template.n_kv_heads

    def to_json(self) -> dict:
        t = self.template
        d: dict = {"label": self.label, "family": "compressed" if self.base else self.family,
                   "n_heads": t.n_heads, "n_kv_heads": t.n_kv_heads, "head_dim": t.head_dim,
                   "vocab_size": t.vocab_size, "tied_embeddings": t.tied_embeddings, "rope_theta": t.rope_theta}
        if t.ffn_ratio is not None:
            d["ffn_ratio"] = t.ffn_ratio
        if t.sparse is not None:
            d.update(sparse=t.sparse, full_fraction=t.full_fraction)
        if t.kv_policy is not None:
            d["kv_policy"] = t.kv_policy
        if self.params is not None:
            d["params"] = as_floats(self.params)
        if self.reason:
            d["reason"] = self.reason
        if self.samples is not None:
            d["bootstrap"] = {k: [float(x) for x in np.asarray(v)] for k, v in self.samples.items()}
            d["bootstrap_over"] = "configs"  # the points are config means: resampling them resamples configs
        if self.ci95 is not None:
            d["ci95"] = {k: [float(x) for x in v] for k, v in self.ci95.items()}
        if self.r2 is not None:
            d["r2"] = float(self.r2)
        d["n_points"] = int(self.n_points)
        if self.n_runs is not None:
            d["n_runs"] = int(self.n_runs)
        if self.noise is not None:
            d["noise"] = self.noise.to_json()
        if self.x_extra:
            d["x_extra"] = list(self.x_extra)
        if self.fitted and not self.base:
            d["weak"] = self.weak
        if self.ladder:
            d["ladder"] = [{k: (float(v) if k in ("N", "loss") else v) for k, v in p.items()} for p in self.ladder]
        if self.n_max is not None:
            d["n_max"] = float(self.n_max)
        if self.retrieval is not None:
            d.update(retrieval=float(self.retrieval), retrieval_source=self.retrieval_source)
        if self.base:
            d.update(base=self.base, delta_nll=self.delta_nll, delta_source=self.delta_source)
            if self.delta_law is not None:
                d["delta_law"] = self.delta_law
            if self.keep_law is not None:
                d["keep_law"] = self.keep_law
        elif self.group:
            d["group"] = self.group
        if not self.base:
            d.update(self.fit_extra)
        return d


def as_floats(d: dict) -> dict:
    return {k: float(v) for k, v in d.items()}


def pair_label(n_heads: int, n_kv_heads: int, head_dim: int | None = None) -> str:
    return f"{n_heads},{n_kv_heads}" + (f" d_h={head_dim}" if head_dim is not None else "")


def hybrid_label(base: str, full_fraction: float, sparse: str) -> str:
    return f"{base} full={full_fraction:.2f} {sparse}"


def policy_label(base: str, policy: dict, trained: bool = False) -> str:
    amount = f"keep={policy['keep']:g}" if policy.get("keep") is not None else f"budget={policy['budget']}"
    return f"{base} {policy['method']} {amount}" + (" trained" if trained else "")


def norm_label(label: str) -> str:
    return re.sub(r"\s+", " ", label.strip()).lower()


@dataclass
class FitSet:
    """Candidates with their laws, from the store or a fits file."""

    candidates: list[Candidate]
    source: str
    notes: list[str] = field(default_factory=list)
    law: str = "gqa-size"
    train_context: int | None = None  # the seq_len the laws were fitted at (None: unknown, e.g. a fits file)
    options: FitOptions | None = None  # how the laws were fitted (None: a fits file that does not say)
    # from the store: {"reused": [labels], "fitted": [labels], "stored": rows written, "refit": --refit given}
    fit_status: dict = field(default_factory=dict)
    # what the store's own extension pairs say of reusing these laws at a longer context (validate --mode context)
    context_evidence: str | None = None

    def get(self, label: str) -> Candidate | None:
        key = norm_label(label)
        return next((c for c in self.candidates if norm_label(c.label) == key), None)

    def to_json(self) -> dict:
        """The fits-file form (module doc); compressed-on-dense candidates become `kv_policies` entries."""
        dense = [c.to_json() for c in self.candidates if not c.base]
        pol = [{"base": c.base, "method": c.template.kv_policy["method"], "keep": c.template.kv_policy["keep"],
                "delta_nll": c.delta_nll, "source": c.delta_source,
                **({"delta_law": c.delta_law} if c.delta_law is not None else {}),
                **({"keep_law": c.keep_law} if c.keep_law is not None else {}),
                **({"retrieval": c.retrieval, "retrieval_source": c.retrieval_source} if c.retrieval is not None
                   else {})} for c in self.candidates if c.base]
        head = header(self.options, self.source) if self.options else {"format": FITS_FORMAT, "law": self.law,
                                                                            "source": self.source}
        return {**head, "notes": self.notes, "train_context": self.train_context, "candidates": dense,
                "kv_policies": pol}

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        write_atomic(p, json.dumps(self.to_json(), indent=1) + "\n")
        return p

    def fit_rows(self, source_query: str | None = None) -> list[dict]:
        """Rows for `analysis.store.write_fits`: one per law with a data fingerprint (analysis.fits.store_rows)."""
        return store_rows(self.to_json(), source_query)


def fit_status_line(status: dict) -> str | None:
    """One line on where a store's laws came from: reused from its fits table, or fitted (and stored) now."""
    if not status:
        return None
    reused, fitted = status.get("reused", []), status.get("fitted", [])
    parts = []
    if reused:
        parts.append(f"{len(reused)} reused from the fits table (same runs, options and fitter)")
    if fitted:
        parts.append(f"{len(fitted)} fitted" + (" (--refit)" if status.get("refit") else "")
                     + (", stored in the fits table" if status.get("stored") else "")
                     + (f", not stored ({status['not_stored']})" if status.get("not_stored") else ""))
    return "fits: " + ("; ".join(parts) if parts else "none (no candidate has enough sizes)")


# ---------------------------------------------------------------- selection
def select(fs: FitSet, spec: str = "all", families=FAMILIES) -> list[Candidate]:
    """`all`: every candidate of the chosen families; `paper`: the paper's 21 GQA pairs (absent ones listed
    as unfit); else labels separated by ';' (e.g. "32,8;8,1;8,1 snapkv keep=0.25")."""
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        raise CostlawError(f"--families: unknown family {bad[0]!r}; choose from {', '.join(FAMILIES)}")
    pool = [c for c in fs.candidates if c.family in families]
    spec = (spec or "all").strip()
    if spec == "all":
        return pool
    if spec == "paper":
        if "gqa" not in families:
            raise CostlawError("--candidates: paper names GQA pairs; add gqa to --families")
        out = []
        missing = "no runs in the store" if fs.source.startswith("store") else "not in the fits file"
        for h, k in PAPER_PAIRS:
            found = [c for c in pool if c.family == "gqa" and (c.n_heads, c.n_kv_heads) == (h, k)]
            out.extend(found or [Candidate(label=pair_label(h, k), family="gqa", template=Template(h, k),
                                           reason=missing)])
        return out
    out = []
    for item in (s for s in spec.split(";") if s.strip()):
        c = next((c for c in fs.candidates if norm_label(c.label) == norm_label(item)), None)
        if c is None:
            known = ", ".join(c.label for c in fs.candidates)
            raise CostlawError(f"--candidates: unknown candidate {item.strip()!r}; known: {known}")
        if c.family not in families:
            raise CostlawError(f"--candidates: {c.label} is {c.family}, outside --families {','.join(families)}")
        if c not in out:
            out.append(c)
    return out
