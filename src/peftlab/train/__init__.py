"""Training utilities (the full pipeline lives here as it grows: recipes, loop, checkpoints)."""
from .batching import CausalLMBatch, collate_causal_lm

__all__ = ["CausalLMBatch", "collate_causal_lm"]
