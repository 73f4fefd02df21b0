"""The sweep spec (TOML): parse it and check its structure before anything expands or runs.

```toml
[sweep]
name = "tiny"            # [A-Za-z0-9._-]+; names the sweep in run directories and the store
runs_cap = 16            # refuse to plan more runs than this (default 1000)
contexts = [256, "1K"]   # where plan prices C_infer / M_infer / KV bytes (default: each run's seq_len)
seeds = [0, 1]           # every point runs once per seed (default [base.seed or 0])
where = "stage != 'compress' or model.n_kv_heads == 2"   # only these runs (and their parents), as --where reads

[base]                   # a run config: the tables of a run TOML (model, data, train, eval, seed)
model = { preset = "gqa-3m" }

[[axes]]                 # each entry is one of grid (product), zip (paired lists), list (explicit points);
grid = { "model.n_heads" = [4, 8], "model.n_kv_heads" = [1, 2] }   # the entries multiply together
[[axes]]
zip = { "model.d_model" = [128, 256], "model.n_layers" = [2, 4] }
[[axes]]
list = [{ "train.lr" = 1e-3 }, { "train.lr" = 3e-3, "train.warmup_frac" = 0.2 }]

[derived]                # formulas per point, in order (sweeps.formula: arithmetic + whitelisted calls)
"model.ffn_dim" = "paper_ffn(model.d_model)"
"train.tokens" = "20 * N"

[resources]              # defaults for every stage
gpus = 1
time_min = 60

[[stages]]               # optional; default one stage, pretrain
name = "pretrain"
[[stages]]
name = "extend"          # pretrain | extend | compress
from = "pretrain"        # one run per run of that stage, from its checkpoint (train.init_from) and its settings
set = { "data.seq_len" = 1024 }
derived = { "train.tokens" = "0.1 * train.tokens" }   # evaluated on the parent's values
resources = { time_min = 30 }
[[stages.axes]]          # a stage's own axes: several children per parent run (e.g. KV keep ratios)
grid = { "model.kv_policy.keep" = [0.1, 0.25] }
```

Field paths are dotted run-config paths: `model.<field>` (and `model.preset`, `model.attention.*`,
`model.kv_policy.*`), `data.*`, `train.*`, `eval.*`, `seed`. A table value written as `model = {n_heads = 4}`
is the same as `"model.n_heads" = 4`.

Everything here raises `ConfigError(key_path, problem)` with the full dotted path of the offending key.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import tomllib
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from costlaw.costmodel import ConfigError, KVPolicy, ModelConfig
from costlaw.costmodel.config import ATTENTION_KEYS
from costlaw.costmodel.core import validate
from costlaw.costmodel.core.units import parse_tokens
from costlaw.costmodel.core.validate import SCALARS, bounded, conform, integer, optional_arm
from costlaw.costmodel.kvpolicy import METHODS
from costlaw.runs.config import SECTIONS as RUN_SECTIONS
from costlaw.runs.config import STAGES, RunConfig

TOP_KEYS = ("sweep", "base", "axes", "derived", "resources", "stages")
SWEEP_KEYS = ("name", "description", "runs_cap", "contexts", "seeds", "where")
BASE_KEYS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name != "stage")  # stages set the stage
STAGE_KEYS = ("name", "from", "axes", "set", "derived", "resources")
AXIS_KINDS = ("grid", "zip", "list")
DEFAULT_RUNS_CAP = 1000
# the most runs one spec may plan: each run is a RunConfig in memory and about 3 KB of sweep.json, so 10^5 runs
# plan in seconds and a few hundred MB; a larger study is several sweeps (rounds, --where)
MAX_RUNS_CAP = 100_000
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ---------------------------------------------------------------- field paths
def _section_fields() -> dict[str, dict[str, typing.Any]]:
    return {s: typing.get_type_hints(c) for s, c in RUN_SECTIONS.items()}


def settable(hint) -> typing.Any:
    """How a spec gives a field of type `hint`: the scalar type itself (also for `X | None`), list for a tuple
    field, None for anything else (a table, e.g. kv_policy, checked when the run config is built)."""
    hint = optional_arm(hint) or hint
    if hint in SCALARS:
        return hint
    if typing.get_origin(hint) is tuple:
        return list
    return None


def field_types() -> dict[str, typing.Any]:
    """Every settable dotted field path of a run config -> its Python type (None: a table or free form),
    from the type hints of RunConfig, ModelConfig, KVPolicy and the run config's sections."""
    types: dict[str, typing.Any] = {"seed": settable(typing.get_type_hints(RunConfig)["seed"])}
    types.update({f"model.{k}": settable(t) for k, t in typing.get_type_hints(ModelConfig).items()})
    types["model.preset"] = str
    types["model.attention"] = None
    types.update({f"model.attention.{k}": t for k, t in ATTENTION_KEYS.items()})
    types.update({f"model.kv_policy.{k}": settable(t) for k, t in typing.get_type_hints(KVPolicy).items()
                  if k != "options"})  # options are written flat, as the method's own keys below
    for opts in METHODS.values():
        types.update({f"model.kv_policy.{k}": type(o.default) for k, o in opts.items()})
    for section, hints in _section_fields().items():
        types.update({f"{section}.{k}": settable(t) for k, t in hints.items()})
    return types


FIELD_TYPES = field_types()
SECTIONS = ("model", *RUN_SECTIONS)


def check_path(path: str, where: str) -> str:
    """`path` must name a settable field; `where` is the key path to blame."""
    if path in FIELD_TYPES:
        return path
    if path == "stage":
        raise ConfigError(where, "the stage is set by [[stages]], not by an axis or formula")
    if path == "name":
        raise ConfigError(where, "run names are set by the sweep; vary a config field instead")
    head = path.split(".")[0]
    if head not in SECTIONS:
        raise ConfigError(where, f"unknown field path {path!r}; paths start with model., data., train., eval. "
                                 "or are seed")
    close = sorted(p for p in FIELD_TYPES if p.startswith(head + "."))
    raise ConfigError(where, f"unknown field path {path!r}; {head} has "
                             f"{', '.join(p.split('.', 1)[1] for p in close if p.count('.') == 1)}")


def flatten(table: dict, where: str, *, until_list: bool) -> dict[str, typing.Any]:
    """`{"model": {"n_heads": 4}}` or `{"model.n_heads": 4}` -> `{"model.n_heads": 4}`, paths checked.

    Descends through tables until a known field path (its value may itself be a table, e.g. a kv_policy)
    or, with `until_list` (grid/zip value lists), until a non-table."""
    out: dict[str, typing.Any] = {}

    def walk(prefix: str, v):
        if isinstance(v, dict) and (prefix not in FIELD_TYPES or until_list) and (prefix == "" or v):
            for k, sub in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), sub)
            return
        at = f"{where}.{prefix}"
        if isinstance(v, dict) and not v:
            raise ConfigError(at, "empty table; give a value")
        check_path(prefix, at)
        if prefix in out:
            raise ConfigError(at, "given twice (as a dotted key and inside a table); keep one")
        out[prefix] = v

    walk("", table)
    return out


# ---------------------------------------------------------------- parsed spec
@dataclass(frozen=True)
class Resources:
    gpus: int = bounded(0, lo=0)
    cpus: int = bounded(1, lo=1)
    mem_gb: float | None = bounded(None, lo=0, lo_open=True)
    time_min: int = bounded(60, lo=1)
    partition: str | None = None  # the text fields are Slurm names: one word each
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = bounded(256, lo=1)
    signal_delay_s: int = bounded(90, lo=0)  # preemption/timeout signal this long before the kill: room to checkpoint
    max_num_timeout: int = bounded(3, lo=0)  # requeues after hitting the time limit
    setup: tuple[str, ...] = ()  # shell lines run in the job before python (module load, source venv, ...)

    def __post_init__(self):
        conform(self)
        for k, hint in typing.get_type_hints(Resources).items():
            v = getattr(self, k)
            if optional_arm(hint) is str and v is not None and (not v.strip() or any(c.isspace() for c in v)):
                raise ConfigError(k, f"{v!r} must be one non-empty word (a Slurm {k} name)")
        if self.signal_delay_s >= self.time_min * 60:
            raise ConfigError("signal_delay_s", f"{self.signal_delay_s} s is not less than time_min "
                                                f"({self.time_min} min); the job would be signalled at start")

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


RESOURCE_KEYS = tuple(f.name for f in dataclasses.fields(Resources))


@dataclass(frozen=True)
class Axis:
    """One entry of [[axes]]. A grid keeps each path's values and multiplies them only when iterated, so its
    size is known (and checked against runs_cap) without building a point."""
    kind: str
    where: str  # e.g. axes[0].grid
    paths: tuple[str, ...]
    columns: tuple[tuple, ...] = ()  # grid and zip: each path's values, in path order
    items: tuple[dict, ...] = ()  # list: the explicit points (path -> value)

    @property
    def size(self) -> int:
        if self.kind == "grid":
            return math.prod(len(c) for c in self.columns)
        if self.kind == "zip":
            return len(self.columns[0])
        return len(self.items)

    def points(self) -> Iterator[dict]:
        """The axis's partial points (path -> value), in order."""
        if self.kind == "grid":
            return (dict(zip(self.paths, combo)) for combo in itertools.product(*self.columns))
        if self.kind == "zip":
            return (dict(zip(self.paths, combo)) for combo in zip(*self.columns))
        return iter(self.items)


@dataclass(frozen=True)
class Stage:
    name: str
    parent: str | None
    where: str  # stages[i]
    set: dict = field(default_factory=dict)
    derived: dict = field(default_factory=dict)  # path -> formula text
    resources: Resources = field(default_factory=Resources)
    axes: tuple[Axis, ...] = ()  # this stage's own axes: each parent run gets one child per combination


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    runs_cap: int
    contexts: tuple[int, ...]
    seeds: tuple[int, ...]
    seeds_given: bool
    base: dict
    axes: tuple[Axis, ...]
    derived: dict
    stages: tuple[Stage, ...]  # in dependency order (parents first)
    raw: dict  # the parsed TOML, for sweep.json
    # [sweep] where: the runs of the multiplied-out axes and stages that belong to the sweep (with their parents),
    # e.g. a stage for some parents only; runs_cap bounds the runs before it
    where: str | None = None


# ---------------------------------------------------------------- parsing
def load(path: str | Path) -> Spec:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("spec", f"no such file {str(p)!r}; give the path of a sweep TOML")
    return parse(p.read_text())


def parse(text: str) -> Spec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("toml", f"not valid TOML ({e}); fix the spec file's syntax") from None
    return from_dict(raw)


def from_dict(raw: dict) -> Spec:
    for k in raw:
        if k not in TOP_KEYS:
            raise ConfigError(k, f"unknown top-level key; a sweep spec has {', '.join(TOP_KEYS)}")
    sweep = _table(raw, "sweep", required=True)
    for k in sweep:
        if k not in SWEEP_KEYS:
            raise ConfigError(f"sweep.{k}", f"unknown key; [sweep] has {', '.join(SWEEP_KEYS)}")
    if "name" not in sweep:
        raise ConfigError("sweep.name", "missing; name the sweep, e.g. name = \"gqa-ladder\"")
    name = validate.text("sweep.name", sweep["name"])
    if not NAME_RE.match(name):
        raise ConfigError("sweep.name", f"{name!r} must be letters, digits, '.', '_' or '-' (it names directories)")
    description = validate.text("sweep.description", sweep.get("description", ""))
    runs_cap = integer("sweep.runs_cap", sweep.get("runs_cap", DEFAULT_RUNS_CAP), lo=1, hi=MAX_RUNS_CAP)
    contexts = tuple(_context(c, f"sweep.contexts[{i}]") for i, c in enumerate(_list(sweep, "contexts", "sweep")))
    base = _base(raw)
    seeds_given = "seeds" in sweep
    if seeds_given:
        seeds = tuple(integer(f"sweep.seeds[{i}]", s, lo=0) for i, s in enumerate(_list(sweep, "seeds", "sweep")))
        if not seeds:
            raise ConfigError("sweep.seeds", "empty; give at least one seed or leave seeds out")
        if len(set(seeds)) != len(seeds):
            raise ConfigError("sweep.seeds", f"repeats a seed: {list(seeds)}; list each seed once")
        if "seed" in base:
            raise ConfigError("base.seed", "sweep.seeds is given too; keep one of them")
    else:
        seeds = (base.get("seed", 0),)
    axes = _axes(raw.get("axes", []))
    if seeds_given and any("seed" in a.paths for a in axes):
        where = next(f"{a.where}.seed" for a in axes if "seed" in a.paths)
        raise ConfigError(where, "sweep.seeds is given too; vary seeds in one place")
    set_by_axes = {p: a.where for a in axes for p in a.paths}
    derived = _derived(raw.get("derived", {}), "derived", set_by_axes)
    defaults = _resources(raw.get("resources", {}), "resources", Resources())
    stages = _stages(raw.get("stages"), defaults, set_by_axes)
    total = run_count(axes, len(seeds), stages)
    if total > runs_cap:  # counted from the axes' lengths: nothing is multiplied out before this check
        raise ConfigError("sweep.runs_cap", f"the spec expands to {total} runs (points x seeds x stages), more than "
                                            f"runs_cap {runs_cap}; raise runs_cap or trim the axes")
    where = sweep.get("where")
    if where is not None:
        from costlaw.sweeps.formula import compile_formula

        compile_formula(validate.text("sweep.where", where), "sweep.where", strings=True)  # refused here if malformed
    return Spec(name=name, description=description, runs_cap=runs_cap, contexts=contexts, seeds=seeds,
                seeds_given=seeds_given, base=base, axes=axes, derived=derived, stages=stages, raw=raw, where=where)


def run_count(axes: tuple[Axis, ...], n_seeds: int, stages: tuple[Stage, ...]) -> int:
    """Runs a spec expands to: points x seeds for a first stage, times each stage's own axes down the chain,
    from the axes' sizes alone (exact integers, however large)."""
    n_points = math.prod(a.size for a in axes)
    per_stage: dict[str, int] = {}
    for st in stages:
        own = math.prod(a.size for a in st.axes)
        per_stage[st.name] = (per_stage[st.parent] if st.parent else n_points * n_seeds) * own
    return sum(per_stage.values())


def _base(raw: dict) -> dict:
    base = _table(raw, "base", required=True)
    for k in base:
        if k == "stage":
            raise ConfigError("base.stage", "stages are declared with [[stages]] (name = \"extend\", from = ...)")
        if k not in BASE_KEYS:
            raise ConfigError(f"base.{k}", f"unknown key; [base] is a run config with {', '.join(BASE_KEYS)}")
    if "model" not in base:
        raise ConfigError("base.model", "missing; add [base.model] with fields or preset = \"gqa-3m\"")
    for s in SECTIONS:
        if s in base and not isinstance(base[s], dict):
            raise ConfigError(f"base.{s}", f"must be a table, got {type(base[s]).__name__}")
    for s, hints in _section_fields().items():
        for k in base.get(s, {}):
            if k not in hints:
                raise ConfigError(f"base.{s}.{k}", f"unknown key; {s} has {', '.join(hints)}")
    if "seed" in base:
        integer("base.seed", base["seed"], lo=0)
    return base


def _axes(axes, where: str = "axes", seen: dict[str, str] | None = None) -> tuple[Axis, ...]:
    if not isinstance(axes, list):
        raise ConfigError(where, f"must be an array of tables: [[{where}]] with grid = {{...}}, zip = {{...}} "
                                 "or list = [...]")
    out: list[Axis] = []
    seen = dict(seen or {})
    for i, entry in enumerate(axes):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(at, f"must be a table with grid, zip or list, got {type(entry).__name__}")
        for k in entry:
            if k not in AXIS_KINDS:
                raise ConfigError(f"{at}.{k}", f"unknown key; an axis has exactly one of {', '.join(AXIS_KINDS)}")
        kinds = [k for k in AXIS_KINDS if k in entry]
        if len(kinds) != 1:
            raise ConfigError(at, "give exactly one of grid, zip or list" + (f" (got {', '.join(kinds)})"
                                                                              if kinds else " (it is empty)"))
        kind = kinds[0]
        here = f"{at}.{kind}"
        axis = _grid_or_zip(entry[kind], here, kind) if kind != "list" else _list_axis(entry[kind], here)
        for p in axis.paths:
            if p in seen:
                raise ConfigError(f"{here}.{p}", f"already varied by {seen[p]}; vary each field in one axis")
            seen[p] = here
        out.append(axis)
    return tuple(out)


def _grid_or_zip(table, where: str, kind: str) -> Axis:
    if not isinstance(table, dict):
        raise ConfigError(where, f"must be a table of field path = [values], got {type(table).__name__}")
    if not table:
        raise ConfigError(where, "empty; give at least one field path = [values]")
    values = flatten(table, where, until_list=True)
    for p, v in values.items():
        if not isinstance(v, list):
            raise ConfigError(f"{where}.{p}", f"must be a list of values, got {type(v).__name__} {v!r}")
        if not v:
            raise ConfigError(f"{where}.{p}", "empty list; give at least one value")
    paths = tuple(values)
    if kind == "zip":
        lengths = {p: len(v) for p, v in values.items()}
        if len(set(lengths.values())) > 1:
            first = paths[0]
            odd = next(p for p in paths if lengths[p] != lengths[first])
            raise ConfigError(f"{where}.{odd}", f"has {lengths[odd]} values but {first} has {lengths[first]}; "
                                                "zip pairs lists of equal length")
    return Axis(kind=kind, where=where, paths=paths, columns=tuple(tuple(values[p]) for p in paths))


def _list_axis(items, where: str) -> Axis:
    if not isinstance(items, list):
        raise ConfigError(where, f"must be a list of point tables, got {type(items).__name__}")
    if not items:
        raise ConfigError(where, "empty list; give at least one point table")
    points = []
    for j, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"{where}[{j}]", f"must be a table of field path = value, got {type(item).__name__}")
        if not item:
            raise ConfigError(f"{where}[{j}]", "empty point; give at least one field path = value")
        points.append(flatten(item, f"{where}[{j}]", until_list=False))
    paths = tuple(dict.fromkeys(p for pt in points for p in pt))
    return Axis(kind="list", where=where, paths=paths, items=tuple(points))


def _derived(table, where: str, taken: dict[str, str]) -> dict[str, str]:
    from costlaw.sweeps.formula import compile_formula

    if not isinstance(table, dict):
        raise ConfigError(where, f"must be a table of field path = \"formula\", got {type(table).__name__}")
    out = flatten(table, where, until_list=False)
    for p, text in out.items():
        at = f"{where}.{p}"
        if not isinstance(text, str):
            raise ConfigError(at, f"must be a formula string like \"20 * N\", got {type(text).__name__} {text!r}")
        if p in taken:
            raise ConfigError(at, f"also set by {taken[p]}; a field is either varied or derived")
        compile_formula(text, at)
    return out


def _resources(table, where: str, defaults: Resources) -> Resources:
    if not isinstance(table, dict):
        raise ConfigError(where, f"must be a table, got {type(table).__name__}")
    for k in table:
        if k not in RESOURCE_KEYS:
            raise ConfigError(f"{where}.{k}", f"unknown key; resources has {', '.join(RESOURCE_KEYS)}")
    try:
        return dataclasses.replace(defaults, **table)
    except ConfigError as e:
        raise e.under(where) from None


def _stages(stages, defaults: Resources, set_by_axes: dict[str, str]) -> tuple[Stage, ...]:
    if stages is None:
        return (Stage(name="pretrain", parent=None, where="stages", resources=defaults),)
    if not isinstance(stages, list) or not stages:
        raise ConfigError("stages", "must be a non-empty array of tables: [[stages]] name = \"pretrain\"")
    parsed: dict[str, Stage] = {}
    for i, st in enumerate(stages):
        at = f"stages[{i}]"
        if not isinstance(st, dict):
            raise ConfigError(at, f"must be a table, got {type(st).__name__}")
        for k in st:
            if k not in STAGE_KEYS:
                raise ConfigError(f"{at}.{k}", f"unknown key; a stage has {', '.join(STAGE_KEYS)}")
        if "name" not in st:
            raise ConfigError(f"{at}.name", f"missing; one of {', '.join(STAGES)}")
        name = validate.text(f"{at}.name", st["name"])
        if name not in STAGES:
            raise ConfigError(f"{at}.name", f"{name!r} is not one of {', '.join(STAGES)}")
        if name in parsed:
            raise ConfigError(f"{at}.name", f"stage {name!r} is declared twice; declare each stage once")
        parent = st.get("from")
        if parent is not None:
            parent = validate.text(f"{at}.from", parent)
            if parent == name:
                raise ConfigError(f"{at}.from", f"stage {name!r} cannot start from itself")
        if name == "pretrain" and parent is not None:
            raise ConfigError(f"{at}.from", "pretrain starts from scratch; remove from (or name the stage extend)")
        sets = st.get("set", {})
        if not isinstance(sets, dict):
            raise ConfigError(f"{at}.set", f"must be a table of field path = value, got {type(sets).__name__}")
        sets = flatten(sets, f"{at}.set", until_list=False)
        axes = _axes(st.get("axes", []), f"{at}.axes", set_by_axes)
        by_axes = {p: a.where for a in axes for p in a.paths}
        for p in sets:
            if p in by_axes:
                raise ConfigError(f"{at}.set.{p}", f"also varied by {by_axes[p]}; a field is either set or varied")
        derived = _derived(st.get("derived", {}), f"{at}.derived", {**{p: f"{at}.set" for p in sets}, **by_axes})
        resources = _resources(st.get("resources", {}), f"{at}.resources", defaults)
        parsed[name] = Stage(name=name, parent=parent, where=at, set=sets, derived=derived, resources=resources,
                             axes=axes)
    for st in parsed.values():
        if st.parent is not None and st.parent not in parsed:
            raise ConfigError(f"{st.where}.from", f"no stage named {st.parent!r}; declared: {', '.join(parsed)}")
    ordered: list[Stage] = []
    for st in parsed.values():  # follow parents; a chain longer than the stage count is a cycle
        chain, cur = [], st
        while cur is not None and cur not in ordered:
            if cur in chain:
                raise ConfigError(f"{st.where}.from", "stages form a cycle: "
                                                      + " <- ".join(s.name for s in chain + [cur]))
            chain.append(cur)
            cur = parsed[cur.parent] if cur.parent else None
        ordered.extend(reversed(chain))
    return tuple(ordered)


# ---------------------------------------------------------------- small checkers
def _table(raw: dict, key: str, required: bool = False) -> dict:
    if key not in raw:
        if required:
            raise ConfigError(key, f"missing; add a [{key}] table")
        return {}
    v = raw[key]
    if not isinstance(v, dict):
        raise ConfigError(key, f"must be a table ([{key}]), got {type(v).__name__}")
    return v


def _list(table: dict, key: str, where: str) -> list:
    v = table.get(key, [])
    if not isinstance(v, list):
        raise ConfigError(f"{where}.{key}", f"must be a list, got {type(v).__name__} {v!r}")
    return v


def _context(v, where: str) -> int:
    return parse_tokens(v, where)
