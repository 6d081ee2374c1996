"""Training: recipes, the accelerate loop, checkpoints, run folders (`peftlab train`)."""
from .batching import CausalLMBatch, collate_causal_lm
from .recipe import Recipe, recipe_from_dict

__all__ = ["CausalLMBatch", "Recipe", "collate_causal_lm", "recipe_from_dict", "train"]


def train(recipe: Recipe, **kwargs):
    """Run a recipe (see :func:`peftlab.train.loop.train`)."""
    from .loop import train as _train

    return _train(recipe, **kwargs)
