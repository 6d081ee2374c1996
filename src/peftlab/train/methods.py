"""Method names used by recipes and the CLI -> peftlab configs (through the open registry)."""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ..config import PeftConfig
from ..errors import ConfigError
from ..registry import get_method, list_methods

# name -> (peft_type, preset or None). Any registered peft_type also works as a name (e.g. "lora", "LORA").
METHOD_NAMES: dict[str, tuple[str, str | None]] = {
    "lora": ("LORA", None),
    "bitfit": ("BITFIT", None),
    "full": ("FULL", None),
    "prefix": ("PREFIX_TUNING", None),
    "gated-prefix": ("GATED_PREFIX", None),
    "solo": ("SOLO", None),
    "kernel-mix": ("KERNEL_MIX", None),
    "houlsby": ("BOTTLENECK", "houlsby"),
    "pfeiffer": ("BOTTLENECK", "pfeiffer"),
    "parallel": ("BOTTLENECK", "parallel"),
}


def available_methods() -> list[str]:
    registered = set(list_methods())
    return sorted(n for n, (peft_type, _) in METHOD_NAMES.items() if peft_type in registered)


def build_method_config(method: str, method_args: dict[str, Any], task_type: str) -> PeftConfig:
    """The config for ``method`` with ``method_args`` (a ``preset`` key picks a preset of the config class)."""
    key = method.lower()
    peft_type, preset = METHOD_NAMES.get(key, (method.upper(), None))
    try:
        entry = get_method(peft_type)
    except ConfigError:
        close = ", ".join(available_methods())
        raise ConfigError(f"unknown method {method!r}; valid methods: {close}") from None
    args = dict(method_args)
    preset = args.pop("preset", preset)
    args.setdefault("task_type", task_type)
    config_cls = entry.config_cls
    fields = [f.name for f in dataclasses.fields(config_cls) if f.init]
    for key in args:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid fields: {', '.join(sorted(fields))}"
            raise ConfigError(f"method_args.{key}: not a field of {config_cls.__name__} ({hint}); see "
                              f"`peftlab methods {method.lower()}`")
    try:
        if preset is not None:
            if not hasattr(config_cls, "preset"):
                raise ConfigError(f"method_args.preset: {config_cls.__name__} has no presets")
            return config_cls.preset(preset, **args)
        return config_cls(**args)
    except TypeError as err:  # unknown field names
        raise ConfigError(f"method_args for {method!r}: {err}; see `peftlab methods {key}`") from None
