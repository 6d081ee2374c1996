"""Method names used by recipes and the CLI -> peftlab configs, through the open registry: a method's one name
(``kernel-mix``), a registered alias that expands to a method and its preset (``houlsby``), or the peft_type."""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ..config import PeftConfig
from ..errors import ConfigError
from ..registry import method_names, resolve_method


def available_methods() -> list[str]:
    """Every name `--method` takes: each method's name and the registered aliases (presets)."""
    return method_names()


def build_method_config(method: str, method_args: dict[str, Any], task_type: str) -> PeftConfig:
    """The config for ``method`` with ``method_args`` (a ``preset`` key picks a preset of the config class; an
    alias brings its own)."""
    entry, alias_args = resolve_method(method)
    args = {**alias_args, **dict(method_args)}
    preset = args.pop("preset", None)
    args.setdefault("task_type", task_type)
    config_cls = entry.config_cls
    fields = [f.name for f in dataclasses.fields(config_cls) if f.init]
    for key in args:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid fields: {', '.join(sorted(fields))}"
            raise ConfigError(f"method_args.{key}: not a field of {config_cls.__name__} ({hint}); see "
                              f"`peftlab methods {entry.name}`")
    try:
        if preset is not None:
            if not hasattr(config_cls, "preset"):
                raise ConfigError(f"method_args.preset: {config_cls.__name__} has no presets")
            return config_cls.preset(preset, **args)
        return config_cls(**args)
    except TypeError as err:  # a field the config's __init__ does not take
        raise ConfigError(f"method_args for {method!r}: {err}; see `peftlab methods {entry.name}`") from None
