"""Open method registry: a method registers itself; there is no closed enum of method types.

A method is a config class (a :class:`~peftlab.config.PeftConfig` subclass with a ``peft_type``) and a tuner class
(:class:`~peftlab.tuners.base.Tuner`) that injects its layers into a model. Third-party code registers new methods
the same way the built-in ones do::

    @register_method
    class MyTuner(Tuner):
        config_cls = MyConfig
        ...
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .config import PeftConfig
    from .tuners.base import Tuner


@dataclass(frozen=True)
class MethodEntry:
    peft_type: str
    config_cls: type["PeftConfig"]
    tuner_cls: type["Tuner"]


_METHODS: dict[str, MethodEntry] = {}


def register_method(tuner_cls: type["Tuner"]) -> type["Tuner"]:
    """Register ``tuner_cls`` (its ``config_cls.peft_type`` is the method's name). Usable as a decorator."""
    config_cls = tuner_cls.config_cls
    peft_type = config_cls.peft_type
    if not peft_type:
        raise ValueError(f"{config_cls.__name__}.peft_type is empty; set it to the method's name, e.g. 'MY_METHOD'")
    existing = _METHODS.get(peft_type.upper())
    if existing is not None and existing.tuner_cls is not tuner_cls:
        raise ValueError(f"method {peft_type!r} is already registered by {existing.tuner_cls.__name__}")
    _METHODS[peft_type.upper()] = MethodEntry(peft_type, config_cls, tuner_cls)
    return tuner_cls


def get_method(name_or_config: "str | PeftConfig") -> MethodEntry:
    """The registered method for a name (case-insensitive) or a config instance."""
    _load_builtin_methods()
    name = name_or_config if isinstance(name_or_config, str) else type(name_or_config).peft_type
    entry = _METHODS.get(str(name).upper())
    if entry is None:
        raise ConfigError(f"peft_type {name!r} is not a registered method; known methods: {', '.join(list_methods())}")
    return entry


def list_methods() -> list[str]:
    _load_builtin_methods()
    return sorted(_METHODS)


def _load_builtin_methods() -> None:
    from . import tuners  # noqa: F401  (importing the package registers the built-in methods)
