"""Weights in and out: named checkpoints (``resolve_checkpoint``) and ``init_from`` loading."""

from nrknet.weights.cache import bundled_checkpoint, cache_home, resolve_checkpoint
from nrknet.weights.init import LoadReport, load_weights, read_model_weights
from nrknet.weights.registry import Registry, WeightsEntry, default_registry

__all__ = [
    "LoadReport",
    "Registry",
    "WeightsEntry",
    "bundled_checkpoint",
    "cache_home",
    "default_registry",
    "load_weights",
    "read_model_weights",
    "resolve_checkpoint",
]
