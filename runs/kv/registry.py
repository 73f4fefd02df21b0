"""KV policies by method name: the policy for a config's `kv_policy`, the module holding a trained method's
parameters, and attaching that module to a model so the trainer can find, freeze around and checkpoint it.

A trained method's parameters live in one nn.Module attached to the model as `model.kv_policy` (so they are
in `model.state_dict()` under `kv_policy.*` and in every checkpoint), and `model.policy_parameters()` returns
them (what runs.task's `trainable_parameters` and runs.train's `init_from` look for). How a trained method
trains is its task, registered with runs.task by runs/kv/tasks.py.
"""

from __future__ import annotations

import torch

from costlaw.costmodel import ModelConfig
from costlaw.costmodel.core.errors import ConfigError
from costlaw.runs.kv.base import Policy, PolicyModel
from costlaw.runs.kv.baselines import H2O, RandomEviction, SnapKV, StreamingLLM
from costlaw.runs.kv.infinipot import InfiniPot
from costlaw.runs.kv.kv_distill import KVDistill, KVDistillAdapter
from costlaw.runs.kv.locret import Locret, RetainingHeads

POLICIES: dict[str, type[Policy]] = {p.method: p for p in (StreamingLLM, SnapKV, H2O, RandomEviction, Locret,
                                                          KVDistill, InfiniPot)}
MODULE_PREFIX = "kv_policy."


def _policy(cfg: ModelConfig):
    if cfg.kv_policy is None:
        raise ConfigError("model.kv_policy", "none set; give a policy, e.g. kv_policy = {method = \"snapkv\", "
                                             "keep = 0.25}")
    return cfg.kv_policy


def policy_module(cfg: ModelConfig) -> torch.nn.Module | None:
    """A freshly initialised module with the policy's own parameters (None for training-free methods).
    `sum(p.numel())` equals costmodel.policy_params(cfg)."""
    p = _policy(cfg)
    if p.method == "locret":
        return RetainingHeads(cfg, p.option("hidden"))
    if p.method == "kv_distill":
        return KVDistillAdapter(cfg, p.option("rank"), p.option("alpha"))
    return None


def attach_policy(model, cfg: ModelConfig) -> torch.nn.Module | None:
    """Give `model` the policy's module (on the model's device and dtype) as `model.kv_policy`, and
    `model.policy_parameters()`. Returns the module (None for training-free methods)."""
    module = policy_module(cfg)
    if module is None:
        return None
    w = model.embed.weight
    module = module.to(device=w.device, dtype=w.dtype)
    model.kv_policy = module
    model.policy_parameters = module.parameters
    return module


def module_state(model_state: dict) -> dict:
    """The policy module's entries of a model state dict (a checkpoint's "model")."""
    return {k[len(MODULE_PREFIX):]: v for k, v in model_state.items() if k.startswith(MODULE_PREFIX)}


def build_policy(cfg: ModelConfig, module: torch.nn.Module | None = None, tokenizer=None) -> Policy:
    """The policy for `cfg.kv_policy`; trained methods need their module (their constructor says how to get one)."""
    return POLICIES[_policy(cfg).method](cfg, module, tokenizer)


def policy_model(model, cfg: ModelConfig, module: torch.nn.Module | None = None, tokenizer=None) -> PolicyModel:
    """`model` (the dense backbone) decoding under `cfg.kv_policy`; trained methods need their `module`."""
    return PolicyModel(model, build_policy(cfg, module, tokenizer))
