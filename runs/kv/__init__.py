"""KV-cache policies for the compressed family: eviction baselines (StreamingLLM, SnapKV, H2O, random), trained
policies (Locret retaining heads, KV-Distill scorer + LoRA) and InfiniPot's pot, behind one decode-path
interface (`PolicyModel`), plus the trained policies' training tasks (`tasks`, registered with runs.task on
import) and the evaluation harness (`harness`)."""

from costlaw.runs.kv import tasks  # noqa: F401  (registers the trained policies' tasks)
from costlaw.runs.kv.base import FullCacheModel, Policy, PolicyModel, make_cache
from costlaw.runs.kv.registry import POLICIES, attach_policy, build_policy, module_state, policy_model, policy_module

__all__ = ["FullCacheModel", "POLICIES", "Policy", "PolicyModel", "attach_policy", "build_policy", "make_cache",
           "module_state", "policy_model", "policy_module"]
