"""Synthetic-image generators (``register_generators`` hook) and the generation cache.

Built-ins: ``elastic`` (the default: local, free, a non-learned baseline) and ``folder`` (replays
pre-generated images). The OpenAI generator is a separate distribution, ``synthmed-openai``.
"""

from synthmed.generators.base import Generator, coerce_option, item_seed, source_hash
from synthmed.generators.cache import FillStats, GenerationCache, cache_key, fill, generation_seed

__all__ = [
    "FillStats",
    "GenerationCache",
    "Generator",
    "cache_key",
    "coerce_option",
    "fill",
    "generation_seed",
    "item_seed",
    "source_hash",
]
