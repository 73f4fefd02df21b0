"""Spec -> points -> RunConfigs: axes multiplied out, seeds, derived formulas, stages, then each run
validated by `RunConfig.from_dict` with its errors re-raised under the spec key that set the bad value.

A later stage's run starts from a run of its parent stage (the same point and seed): from that run's config
(the parent's settings carry over) and its weights: `train.init_from` is the parent's directory,
`<root>/runs/<parent run_id>`, so a later stage's run id depends on the sweep root.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import typing
from dataclasses import dataclass
from pathlib import Path

from costlaw.costmodel import ConfigError, ModelConfig, params_embedding, params_non_embedding, params_total
from costlaw.costmodel.core.rundir import run_path
from costlaw.sweeps.formula import compile_formula, evaluate
from costlaw.sweeps.spec import FIELD_TYPES, SECTIONS, Resources, Spec, Stage, run_count


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    stage: str
    point: int  # index of the point (axes combination) it belongs to
    seed: int
    label: str  # e.g. "n_heads=4 n_kv_heads=2 seed=0"
    values: dict  # the axis values that made this run (the sweep's and its stages'): field path -> value
    config: typing.Any  # runs.config.RunConfig
    parent_id: str | None
    resources: Resources

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "stage": self.stage, "point": self.point, "seed": self.seed,
                "label": self.label, "values": self.values, "parent_id": self.parent_id,
                "resources": self.resources.to_dict(), "config": self.config.to_dict()}


def _combos(axes) -> list[dict]:
    return [dict(itertools.chain.from_iterable(p.items() for p in combo))
            for combo in itertools.product(*(list(a.points()) for a in axes))]


def count(spec: Spec) -> int:
    """Runs the spec expands to (spec.parse has checked it against runs_cap)."""
    return run_count(spec.axes, len(spec.seeds), spec.stages)


def expand(spec: Spec, root: str | Path) -> list[PlannedRun]:
    """Every run of the sweep, parents before children; raises ConfigError naming the spec key.

    A first stage runs every point (axes multiplied) for every seed. A stage with `from` runs once per run of
    its parent stage (times its own axes), starting from that run's config: the parent's settings carry over,
    then the stage's axes, set and derived apply, and train.init_from points at the parent's directory."""
    from costlaw.runs.config import RunConfig

    total = count(spec)
    if total > spec.runs_cap:  # a Spec built by hand rather than parsed
        raise ConfigError("sweep.runs_cap", f"the spec expands to {total} runs (points x seeds x stages), more than "
                                            f"runs_cap {spec.runs_cap}; raise runs_cap or trim the axes")
    root = Path(root).resolve()
    points = _combos(spec.axes)
    where_of = {p: f"{a.where}.{p}" for a in spec.axes for p in a.paths}
    for st in spec.stages:
        where_of.update({p: f"{a.where}.{p}" for a in st.axes for p in a.paths})
    short = _short_names(list(where_of))
    derived = {p: compile_formula(t, f"derived.{p}") for p, t in spec.derived.items()}
    label_seed = len(spec.seeds) > 1 or spec.seeds_given
    runs: list[PlannedRun] = []
    built: dict[str, list[tuple[PlannedRun, dict, dict]]] = {}  # stage -> (run, its config dict, origins)
    by_id: dict[str, PlannedRun] = {}
    for st in spec.stages:
        formulas = {p: compile_formula(t, f"{st.where}.derived.{p}") for p, t in st.derived.items()}
        own = _combos(st.axes)
        if st.parent:
            sources = [(r.point, r.seed, r.values, r, d, o) for r, d, o in built[st.parent]]
        else:
            sources = []
            for i, values in enumerate(points):
                for seed in spec.seeds:
                    d, o = _point_dict(spec, values, seed, where_of)
                    label = _label(values, seed, short, label_seed)
                    _apply_derived(d, o, derived, "derived", label)
                    sources.append((i, seed, values, None, d, o))
        built[st.name] = []
        for i, seed, values, parent, pd, po in sources:
            for extra in own:
                all_values = {**values, **extra}
                label = _label(all_values, seed, short, label_seed)
                d, origins = copy.deepcopy(pd), dict(po)
                d = _stage_dict(d, origins, st, extra, where_of, formulas, label, parent, root)
                d["name"] = f"{spec.name}:{st.name}:{label}" if label else f"{spec.name}:{st.name}"
                try:
                    cfg = RunConfig.from_dict(d)
                except ConfigError as e:
                    raise _blame(e, origins, label, st) from None
                run = PlannedRun(run_id=cfg.run_id, stage=st.name, point=i, seed=seed, label=label,
                                 values=all_values, config=cfg, parent_id=parent.run_id if parent else None,
                                 resources=st.resources)
                if run.run_id in by_id:
                    other = by_id[run.run_id]
                    where = "axes" if not st.axes else f"{st.where}.axes"
                    raise ConfigError(where, f"points {other.label or 'base'!r} and {label or 'base'!r} give the same "
                                             f"{st.name} run {run.run_id}; remove the duplicate point")
                by_id[run.run_id] = run
                built[st.name].append((run, d, origins))
                runs.append(run)
    if spec.where:
        from costlaw.sweeps.select import select

        keep = select(runs, spec.where, "sweep.where")
        runs = [r for r in runs if r.run_id in keep]
    return runs


def _label(values: dict, seed: int, short: dict, with_seed: bool) -> str:
    parts = [f"{short[p]}={_fmt(v)}" for p, v in values.items()]
    if with_seed:
        parts.append(f"seed={seed}")
    return " ".join(parts)


# ---------------------------------------------------------------- building one run's dict
def _point_dict(spec: Spec, values: dict, seed: int, where_of: dict) -> tuple[dict, dict]:
    d = copy.deepcopy(spec.base)
    d.pop("seed", None)
    origins = {}
    for sec in SECTIONS:
        for k in d.get(sec, {}):
            origins[f"{sec}.{k}"] = f"base.{sec}.{k}"
    d["seed"] = seed
    origins["seed"] = "sweep.seeds" if spec.seeds_given else "base.seed"
    for p, v in values.items():
        set_path(d, p, copy.deepcopy(v))
        origins[p] = where_of[p]
    return d, origins


def _stage_dict(d: dict, origins: dict, st: Stage, extra: dict, where_of: dict, formulas: dict, label: str, parent,
                root: Path) -> dict:
    """The stage's set, then its axis values (which may refine a table the set gave), then its formulas."""
    for p, v in st.set.items():
        set_path(d, p, copy.deepcopy(v))
        origins[p] = f"{st.where}.set.{p}"
    for p, v in extra.items():
        set_path(d, p, copy.deepcopy(v))
        origins[p] = where_of[p]
    _apply_derived(d, origins, formulas, f"{st.where}.derived", label)
    d["stage"] = st.name
    if parent is not None:
        set_path(d, "train.init_from", str(run_path(root, parent.run_id)))
        origins["train.init_from"] = f"{st.where}.from"
    return d


def _apply_derived(d: dict, origins: dict, formulas: dict, where: str, label: str) -> None:
    for path, f in formulas.items():
        at = f"{where}.{path}"
        try:
            value = evaluate(f, lambda name, at=at: lookup(d, name, at, origins), at)
        except ConfigError as e:
            raise ConfigError(e.field, f"{e.problem}{_at(label)}") from None
        set_path(d, path, coerce(path, value, at, f.text))
        origins[path] = at


def set_path(d: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    cur = d
    for k in parents:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[k] = nxt
        cur = nxt
    cur[last] = value


def coerce(path: str, value, where: str, text: str):
    """A formula's number as the field's type: int fields take the rounded value."""
    t = FIELD_TYPES[path]
    if t is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, f"formula {text!r} gives {value!r}, but {path} is true/false; use a comparison")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(where, f"formula {text!r} gives {value!r}; it must give a number")
    if t is int:
        return int(round(value))
    if t is float:
        return float(value)
    kind = getattr(t, "__name__", None) or str(t)
    raise ConfigError(where, f"{path} takes a {kind}, not a number; set it in [base], an axis or a stage's set")


# ---------------------------------------------------------------- formula lookups
def _model_dict(d: dict, where: str, origins: dict) -> dict:
    from costlaw.costmodel.presets import preset

    md = dict(d.get("model", {}))
    if "preset" in md:
        try:
            base = preset(md.pop("preset")).to_dict()
        except ConfigError as e:
            raise _blame(e.under("model"), origins, "", None) from None
        if "n_layers" in md or "attention" in md:  # as ModelConfig.from_dict: the preset's layout no longer fits
            base.pop("layout", None)
        md = {**base, **md}
    return md


def lookup(d: dict, name: str, where: str, origins: dict, *, text: bool = False):
    """The value of a point name or field path at this point; a number, or with `text` (a --where, which may
    compare strings) also a string or None."""
    if name == "seed":
        return d.get("seed", 0)
    if name in ("stage", "family", "sparse"):
        if not text:
            raise ConfigError(where, f"{name} is text; formulas read numbers (a --where may compare it: "
                                     f"{name} == '...')")
        if name == "stage":
            return d.get("stage", "pretrain")
        try:
            m = ModelConfig.from_dict(d.get("model", {}))
        except ConfigError as e:
            raise ConfigError(where, f"{name} needs a complete model here, but model.{e.field}: {e.problem}") \
                from None
        return m.family if name == "family" else "+".join(p.spec() for p in m.sparse_patterns) or "none"
    if name in ("N", "N_total", "N_embedding"):
        try:
            m = ModelConfig.from_dict(d.get("model", {}))
        except ConfigError as e:
            raise ConfigError(where, f"{name} needs a complete model here, but model.{e.field}: {e.problem}; "
                                     "derive model fields before formulas that use N") from None
        return {"N": params_non_embedding, "N_total": params_total, "N_embedding": params_embedding}[name](m)
    if name == "tokens_per_step":
        return (lookup(d, "train.batch_size", where, origins) * lookup(d, "train.grad_accum", where, origins)
                * lookup(d, "data.seq_len", where, origins))
    sec, *rest = name.split(".")
    if sec == "model":
        cur = _model_dict(d, where, origins)
        defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    else:
        cur = d.get(sec, {})
        defaults = _section_defaults(sec)
    for j, k in enumerate(rest):
        if text and cur is None and j > 0:  # a field of an absent table (no kv_policy): compares unequal
            return None
        if isinstance(cur, dict) and k in cur:
            cur = cur[k]
        elif j == 0 and k in defaults and defaults[k] is not dataclasses.MISSING:
            cur = defaults[k]
        elif text:  # a --where: a field this point does not set (model.attention.* on a pretrain run) is unequal
            return None
        else:
            raise ConfigError(where, f"{name} is not set at this point; give it in [base] or an axis")
    if text and (cur is None or isinstance(cur, str)):
        return cur
    if isinstance(cur, bool) or not isinstance(cur, (int, float)):
        raise ConfigError(where, f"{name} is {cur!r}, not a number; formulas read numeric fields")
    return cur


def _section_defaults(sec: str) -> dict:
    from costlaw.runs.config import SECTIONS

    return {f.name: f.default for f in dataclasses.fields(SECTIONS[sec])}


# ---------------------------------------------------------------- errors and labels
def _blame(e: ConfigError, origins: dict, label: str, stage: Stage | None) -> ConfigError:
    """A RunConfig error under the spec key that set the offending value."""
    field = e.field
    if field == "train.init_from" and stage is not None and stage.parent is None:
        return ConfigError(f"{stage.where}.from", f"stage {stage.name!r} starts from a finished run; set from = "
                                                  "\"pretrain\" (a stage of this sweep) or base.train.init_from")
    best = max((k for k in origins if field == k or field.startswith(k + ".")), key=len, default=None)
    if best is not None:
        where = origins[best] + field[len(best):]
    elif field.startswith("model.") and "model.preset" in origins:
        where = f"{origins['model.preset']} ({field})"
    else:
        where = f"base.{field}"
    return ConfigError(where, f"{e.problem}{_at(label)}")


def _at(label: str) -> str:
    return f" (at point {label})" if label else ""


def _short_names(paths: list[str]) -> dict[str, str]:
    last = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (s if last.count(s) == 1 else p) for p, s in zip(paths, last)}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_fmt(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)
