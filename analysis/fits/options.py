"""`FitOptions`: every setting of the group-fit pipeline that changes what a fit entry holds."""

from __future__ import annotations

from dataclasses import dataclass, fields

from costlaw.costmodel.core.errors import CostlawError

METHODS = ("joint", "varpro")
# Fields held as sorted tuples of pairs (hashable, canonical) and written as JSON objects.
_MAPPINGS = ("fix", "tie", "bounds", "init", "start_box")


@dataclass(frozen=True)
class FitOptions:
    """law: a registered law name (a formula law's name is "formula(VARS): TEXT", see fitting/formula.py);
    law_sha256: the content hash of the --law-file that defined it; x: one column per law variable; y: the loss
    column; loss/delta/starts/refine/seed/residuals: as `costlaw.fitting.fit`; weights: the column whose values
    multiply each point's loss; fix {name: value}, tie {name: name}, bounds {name: [lo, hi]}, init {name: value},
    start_box {name: [lo, hi]}, random_starts: as fitting.fit (natural units); method: "joint" (the start grid and
    L-BFGS-B) or "varpro" (variable projection, fitting/varpro.py); bootstrap: resamples (0: none; 1 counts as none,
    a spread needs 2); bootstrap_by: resample groups of rows sharing this column's value instead of rows;
    holdout_largest/holdout_by: also refit without the K largest rows ranked by that column (default: x[0]);
    holdout_where: or without the rows this expression selects; best_of/best_by: of the rows sharing the best_by
    columns' values, only the one with the least best_of was kept; derived: names of extra quantities bootstrapped
    beside the parameters (their functions are the caller's)."""

    law: str = "gqa-size"
    x: tuple[str, ...] = ("params_non_embedding",)
    y: str = "loss"
    loss: str = "huber"
    delta: float = 1e-3
    starts: int | None = None
    refine: int = 10
    seed: int = 0
    bootstrap: int = 0
    holdout_largest: int | None = None
    holdout_by: str | None = None
    derived: tuple[str, ...] = ()
    residuals: str = "log"
    weights: str | None = None
    fix: tuple = ()
    tie: tuple = ()
    bounds: tuple = ()
    init: tuple = ()
    start_box: tuple = ()
    random_starts: int = 0
    method: str = "joint"
    bootstrap_by: str | None = None
    holdout_where: str | None = None
    best_of: str | None = None
    best_by: tuple[str, ...] = ()
    law_sha256: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "x", tuple(self.x))
        object.__setattr__(self, "derived", tuple(self.derived))
        object.__setattr__(self, "best_by", tuple(self.best_by))
        for name in _MAPPINGS:
            v = getattr(self, name)
            items = v.items() if isinstance(v, dict) else v
            object.__setattr__(self, name, tuple(sorted((k, tuple(b) if isinstance(b, list) else b)
                                                        for k, b in items)))
        if self.bootstrap < 2:
            object.__setattr__(self, "bootstrap", 0)
        if self.method not in METHODS:
            raise CostlawError(f"method: unknown {self.method!r}; choose one of {', '.join(METHODS)}")

    @property
    def holdout_column(self) -> str | None:
        return (self.holdout_by or self.x[0]) if (self.holdout_largest or self.holdout_where) else None

    def fit_kwargs(self) -> dict:
        """Keyword arguments of fitting.fit (and holdout) for these options, weights aside."""
        return {"loss": self.loss, "delta": self.delta, "starts": self.starts, "seed": self.seed,
                "refine": self.refine, "residuals": self.residuals, "fix": dict(self.fix) or None,
                "tie": dict(self.tie) or None, "bounds": dict(self.bounds) or None, "init": dict(self.init) or None,
                "start_box": dict(self.start_box) or None, "random_starts": self.random_starts}

    def key(self) -> dict:
        """What the fingerprint hashes: everything, but delta where the loss is not Huber (l1/l2 ignore it)."""
        d = self.to_json()
        if self.loss != "huber":
            d["delta"] = None
        return d

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["x"], d["derived"], d["best_by"] = list(self.x), list(self.derived), list(self.best_by)
        for name in _MAPPINGS:
            d[name] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in getattr(self, name)}
        return d

    @classmethod
    def from_json(cls, d, where: str = "options") -> FitOptions:
        if not isinstance(d, dict):
            raise CostlawError(f"{where}: must be an object of fit options ({', '.join(f.name for f in fields(cls))})")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise CostlawError(f"{where}.{unknown[0]}: unknown fit option; known: "
                               f"{', '.join(f.name for f in fields(cls))}")
        try:
            return cls(**{k: tuple(v) if k in ("x", "derived", "best_by") and isinstance(v, list) else v
                          for k, v in d.items()})
        except (TypeError, ValueError, AttributeError) as e:
            raise CostlawError(f"{where}: {e}; fix the options") from None
