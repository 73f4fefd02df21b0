"""Recommended configs -> a sweep spec that trains them with the ladder's own recipe on a seed the ladder never used,
so the measured losses test the prediction intervals (the closed loop: record, train, ingest, `closed_loop` view).

`spec_text(points, recipe, seed)` keeps everything of the recipe (the ladder's sweep spec) that is not the model:
its [base] data/train/eval tables, its [derived] formulas for data/train/eval fields (a batch that grows with
N, tokens = 20·N, ...), its [resources] and its contexts; each point is a recommended ModelConfig written out in
full (a [derived] formula for a model field is dropped: the recommendation states every model field), and the
sweep runs once, at `seed`. `merge_points` adds the points of an earlier file this wrote, so several recommend
calls (targets, contexts, budgets) build one spec; a config already there is not added twice.

A recipe that trains in stages (pretrain at 2K, extend to 16K: laws fitted on the extensions) is followed stage by
stage: each point is the winner as the pretraining stage trains it (every layer full, and each model field a
later stage sets, e.g. RoPE theta, at the recipe's base value), the extend stage keeps the recipe's settings and
formulas, and a hybrid winner's sparse layers come in there (`model.attention`: its pattern and full-layer count,
centred, as the ladder's hybrids got them), so the extension run is the recommended config itself (its model_id).
One file holds one such chain: dense winners, or hybrids of one pattern and full-layer count. The recipe's compress
stage is left out: a KV policy is evaluated on the trained dense extension with costlaw kv-eval.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.tomlw import dumps

HEADER = "# costlaw recommend --spec-out"
_RECIPE = re.compile(r"^# recipe: (.*) seed: (-?\d+)$", re.M)
_CHAIN = re.compile(r"^# chain: (.*)$", re.M)
LATER = ("extend",)  # the recipe stages a staged spec keeps after pretrain
_POINT = re.compile(r"^  (\{.*\}),(  # .*)?$")


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise CostlawError(f"--spec-out: {v} cannot be a sweep value")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise CostlawError(f"--spec-out: cannot write {type(v).__name__} into a sweep spec")


def model_fields(model: dict) -> dict:
    """A ModelConfig.to_dict() as the spec's dotted paths; a KV policy is left out (it is evaluated on the trained
    dense model with costlaw kv-eval, not trained)."""
    return {f"model.{k}": v for k, v in model.items() if v is not None and k != "kv_policy"}


def point_line(model: dict, comment: str) -> str:
    body = ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in model_fields(model).items())
    return f"  {{ {body} }}," + (f"  # {' '.join(comment.split())}" if comment else "")


def staged(raw: dict) -> bool:
    return any(isinstance(st, dict) and st.get("name") in LATER for st in raw.get("stages") or [])


def chain_of(model: dict) -> str:
    """What the extension adds to a winner's pretraining model: "dense", or "<pattern> full_layers=<k>"."""
    from costlaw.costmodel import ModelConfig
    from costlaw.costmodel.config import centred_full_layers

    m = ModelConfig.from_dict(model)
    if m.family != "hybrid":
        return "dense"
    patterns = m.sparse_patterns
    if len(patterns) != 1 or m.full_layer_ids != centred_full_layers(m.n_layers, m.n_full_layers):
        raise CostlawError("--spec-out: a hybrid winner with several sparse patterns or full layers not centred cannot "
                           "come from a staged recipe's extension; train it by hand")
    return f"{patterns[0].spec()} full_layers={m.n_full_layers}"


def pretrain_model(model: dict, raw: dict) -> dict:
    """The winner as a staged recipe's pretraining stage trains it: all layers full, and each model field a later
    stage sets at the recipe's [base.model] value (left out where the base has none: its default)."""
    later = {k.split(".", 1)[1] for st in raw.get("stages") or [] if st.get("name") in LATER
             for k in _sets(st) if k.startswith("model.")}
    base = raw["base"].get("model", {})
    out = {k: v for k, v in model.items() if k != "layout" and k.split(".")[0] not in later}
    out.update({k: base[k] for k in later if k in base and "." not in k})
    return out


def _sets(stage: dict) -> dict:
    """A recipe stage's `set` as dotted field paths (nested tables or dotted keys, as a spec may write them)."""
    from costlaw.sweeps.spec import flatten

    return flatten(stage.get("set", {}), "--recipe-from: stages.set", until_list=False)


def later_stages(raw: dict, chain: str) -> list[dict]:
    """The recipe's extend stage for one chain: its settings and formulas, without its axes and anything it
    derived for model.attention / model.layout; a hybrid chain sets the winner's sparse pattern and count."""
    out = []
    for st in raw.get("stages") or []:
        if st.get("name") not in LATER:
            continue
        sets = _sets(st)
        derived = {k: v for k, v in st.get("derived", {}).items()
                   if not k.startswith(("model.attention", "model.layout"))}
        if chain != "dense":
            pattern, k = chain.rsplit(" full_layers=", 1)
            sets["model.attention"] = {"sparse": pattern, "full_layers": int(k)}
        out.append({"name": st["name"], "from": st.get("from", "pretrain"), "set": sets, "derived": derived,
                    **({"resources": st["resources"]} if isinstance(st.get("resources"), dict) else {})})
    return out


def _stage_text(st: dict) -> str:
    return "\n".join(["[[stages]]"] + [f"{k} = {_value(v)}" for k, v in st.items() if v not in ({}, None)])


def read_recipe(recipe: str | Path) -> dict:
    p = Path(recipe)
    if not p.is_file():
        raise CostlawError(f"--recipe-from: no such file {str(p)!r}; give the ladder's sweep spec (TOML)")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CostlawError(f"--recipe-from: {p} is not valid TOML ({e}); give the ladder's sweep spec") from None
    if not isinstance(raw.get("base"), dict) or not isinstance(raw.get("sweep"), dict):
        raise CostlawError(f"--recipe-from: {p} has no [sweep] and [base] tables; give the ladder's sweep spec")
    return raw


def merge_points(path: str | Path, recipe: str | Path, seed: int, chain: str | None = None) -> list[str]:
    """The point lines of an existing spec this module wrote from the same recipe and seed ([] when `path` does not
    exist); CostlawError when it is another file, another recipe or seed, another chain, or was edited."""
    p = Path(path)
    if not p.exists():
        return []
    text = p.read_text()
    c = _CHAIN.search(text)
    if c is not None and chain is not None and c.group(1) != chain:
        raise CostlawError(f"--spec-out: {p} trains {c.group(1)} extensions and this winner needs {chain}; write it "
                           "to another file (one --context at a time, if contexts pick different families)")
    m = _RECIPE.search(text)
    if not text.startswith(HEADER) or m is None:
        raise CostlawError(f"--spec-out: {p} exists and was not written by --spec-out; give a new file name")
    if Path(m.group(1)).resolve() != Path(recipe).resolve() or int(m.group(2)) != int(seed):
        raise CostlawError(f"--spec-out: {p} was written from recipe {m.group(1)} at seed {m.group(2)}; give the same "
                           "--recipe-from and --train-seed to add to it, or a new file name")
    lines = [line for line in text.splitlines() if _POINT.match(line)]
    try:
        n = sum(len(a.get("list", [])) for a in tomllib.loads(text).get("axes", []))
    except tomllib.TOMLDecodeError:
        n = -1
    if n != len(lines):
        raise CostlawError(f"--spec-out: {p} was edited by hand (its points no longer read back); give a new file name")
    return lines


def spec_text(lines: list[str], recipe: str | Path, seed: int, name: str | None = None,
              chain: str | None = None) -> str:
    """The sweep spec (module doc) of point lines (`point_line`) trained with `recipe`'s settings at `seed`; with a
    staged recipe, `chain` (chain_of) is the extension every point gets."""
    if not lines:
        raise CostlawError("--spec-out: no recommended config to write (no context has a winner)")
    raw = read_recipe(recipe)
    stages = later_stages(raw, chain or "dense") if staged(raw) else []
    sweep = raw["sweep"]
    name = name or f"{sweep.get('name', 'ladder')}-recommended-s{seed}"
    base = {k: v for k, v in raw["base"].items() if k in ("data", "train", "eval")}
    dropped = [k for k in raw.get("derived", {}) if k.startswith("model.")]
    derived = {k: v for k, v in raw.get("derived", {}).items() if not k.startswith("model.")}
    first = json.loads(json.dumps(tomllib.loads("p = " + _POINT.match(lines[0]).group(1))["p"]))
    head = [HEADER + f": {len(lines)} recommended config(s), trained with the ladder's own recipe on a seed it never "
                     "used, so the measured losses test the prediction intervals.",
            f"# recipe: {Path(recipe).resolve()} seed: {int(seed)}",
            "# Kept from the recipe: [base] data/train/eval, [derived] formulas for them, [resources], contexts."
            + (f" Dropped (the configs state every model field): {', '.join(dropped)}." if dropped else ""),
            "# Each point's comment: candidate, context, target, predicted loss and its intervals. Train, then "
            "ingest into the store that recorded them and read: costlaw query --db FILE \"select * from closed_loop\""]
    if stages:
        head += [f"# chain: {chain or 'dense'}",
                 "# Staged like the recipe: each point is pretrained as the recipe pretrains (all layers full, its "
                 "base model values), then extended as the recipe extends; the extension run is the recommended "
                 "config. The recipe's compress stage is left out (kv-eval evaluates a KV policy on the extension)."]
    doc: dict = {"sweep": {"name": name, "description": f"{len(lines)} recommended configs on seed {int(seed)}, "
                                                       f"recipe of {sweep.get('name', Path(recipe).name)}",
                           "runs_cap": len(lines) * (1 + len(stages)), "seeds": [int(seed)]}}
    if sweep.get("contexts") is not None:
        doc["sweep"]["contexts"] = sweep["contexts"]
    body = [dumps(doc).rstrip()]
    for section, table in base.items():
        body.append(f"[base.{section}]\n" + dumps(table).rstrip())
    body.append("[base.model]\n" + "\n".join(f"{k.split('.', 1)[1]} = {_value(v)}" for k, v in first.items()))
    body.append("[[axes]]\nlist = [\n" + "\n".join(lines) + "\n]")
    if derived:
        body.append("[derived]\n" + "\n".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in derived.items()))
    if isinstance(raw.get("resources"), dict):
        body.append("[resources]\n" + dumps(raw["resources"]).rstrip())
    if stages:
        body.append('[[stages]]\nname = "pretrain"')
        body += [_stage_text(st) for st in stages]
    return "\n".join(head) + "\n" + "\n\n".join(body) + "\n"
