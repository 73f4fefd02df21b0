"""`FitOptions`: every setting of the group-fit pipeline that changes what a fit entry holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from costlaw.costmodel.core.errors import CostlawError


@dataclass(frozen=True)
class FitOptions:
    """law: a registered law name; x: one column per law variable; y: the loss column; loss/delta/starts/refine/seed:
    as `costlaw.fitting.fit`; bootstrap: resamples of the rows (0: none; 1 counts as none, a spread needs 2);
    holdout_largest/holdout_by: also refit without the K largest rows ranked by that column (default: x[0]);
    derived: names of extra quantities bootstrapped beside the parameters (their functions are the caller's)."""

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

    def __post_init__(self):
        object.__setattr__(self, "x", tuple(self.x))
        object.__setattr__(self, "derived", tuple(self.derived))
        if self.bootstrap < 2:
            object.__setattr__(self, "bootstrap", 0)

    @property
    def holdout_column(self) -> str | None:
        return (self.holdout_by or self.x[0]) if self.holdout_largest else None

    def key(self) -> dict:
        """What the fingerprint hashes: everything, but delta where the loss is not Huber (l1/l2 ignore it)."""
        d = self.to_json()
        if self.loss != "huber":
            d["delta"] = None
        return d

    def to_json(self) -> dict:
        d = asdict(self)
        d["x"], d["derived"] = list(self.x), list(self.derived)
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
            return cls(**{k: tuple(v) if k in ("x", "derived") and isinstance(v, list) else v for k, v in d.items()})
        except TypeError as e:
            raise CostlawError(f"{where}: {e}; fix the options") from None
