"""When two quality-suite recipes are the same run: a result line's (or run folder's) stored recipe against the one
the suite gives now, with the machine-local fields ignored and fields added since filled in by their defaults."""
from __future__ import annotations

import json
from typing import Any

__all__ = ["IGNORED_RECIPE_FIELDS", "comparable_recipe", "normalised_recipe", "same_recipe"]

IGNORED_RECIPE_FIELDS = (("run", "output_dir"), ("data", "data_dir"))
"""Recipe fields that may differ between machines without making a result stale."""


def comparable_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(recipe))
    for section, key in IGNORED_RECIPE_FIELDS:
        data.get(section, {}).pop(key, None)
    return data


_ABSENT = object()


def same_recipe(stored: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a result line's (or run folder's) ``stored`` recipe is the ``current`` one (both normalised, every
    field spelled out). A field the stored recipe lacks counts as equal when the current value is that field's
    default: the line was written before the field existed, and a new field's default keeps the old behaviour, so
    adding a recipe field does not make every result stale (method_args are kept as the suite gives them, not filled
    in, so a new method field never shows up). A field whose default is not what older recipes ran with
    (``recipe.LEGACY_VALUES``, e.g. ``optim.fused``) is read from a stored recipe without it as that older value.
    Any other difference does."""
    from ..train.recipe import with_legacy_values

    stored, current = comparable_recipe(with_legacy_values(stored)), comparable_recipe(current)
    defaults: dict[str, Any] | None = None
    for section in set(stored) | set(current):
        old, new = stored.get(section, _ABSENT), current.get(section, _ABSENT)
        if not (isinstance(old, dict) and isinstance(new, dict)):
            if old != new:
                return False
            continue
        for key in set(old) | set(new):
            if key in old and key in new:
                if old[key] != new[key]:
                    return False
            elif key in old:  # a field the current recipe no longer has: cannot tell what it meant
                return False
            else:
                if defaults is None:
                    defaults = normalised_recipe({"task": current.get("task", "e2e"), "method": current.get("method")})
                if new[key] != (defaults.get(section) or {}).get(key, _ABSENT):
                    return False
    return True


def normalised_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe as the run folder's config.yaml spells it (every field, defaults filled in)."""
    from ..train.recipe import recipe_from_dict

    return recipe_from_dict(recipe).to_dict()
