"""Torch models built from a `costmodel.ModelConfig`: the Llama-style decoder, its attention masks and its
layout-shaped KV cache (the interface KV policies in runs/kv plug into)."""

from costlaw.runs.models.kv_cache import CacheFullError, KVCache, LayerCache
from costlaw.runs.models.transformer import IGNORE_INDEX, Transformer, build_model, lm_loss

__all__ = ["CacheFullError", "IGNORE_INDEX", "KVCache", "LayerCache", "Transformer", "build_model", "lm_loss"]
