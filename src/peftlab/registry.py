"""Open method registry: a method registers itself; there is no closed enum of method types.

A method is a config class (a :class:`~peftlab.config.PeftConfig` subclass with a ``peft_type``) and a tuner class
(:class:`~peftlab.tuners.base.Tuner`) that injects its layers into a model. Third-party code registers new methods
the same way the built-in ones do::

    @register_method
    class MyTuner(Tuner):
        config_cls = MyConfig
        ...

This module imports no method: it is the bottom of the dependency order (config -> registry <- tuners/<method>).
The built-in methods register themselves when :mod:`peftlab.tuners` is imported, and ``import peftlab`` (which
runs before any ``peftlab.<module>`` import) imports it, so every lookup below sees them.
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
    name: str = ""
    """The method's one user-facing name (CLI, recipes, docs page, `peftlab methods`), e.g. ``kernel-mix``."""


@dataclass(frozen=True)
class MethodAlias:
    """A registered preset name that expands to a method and arguments (``houlsby`` = bottleneck, preset houlsby)."""

    name: str
    method: str  # the canonical method name
    args: dict


_METHODS: dict[str, MethodEntry] = {}  # PEFT_TYPE -> entry
_NAMES: dict[str, str] = {}  # normalized spelling (name or peft_type) -> PEFT_TYPE
_ALIASES: dict[str, MethodAlias] = {}  # normalized alias -> alias


def normalize(name: str) -> str:
    """How spellings are compared: case-insensitive, ``_`` and ``-`` alike (``GATED_PREFIX`` ~ ``gated-prefix``)."""
    return str(name).strip().lower().replace("_", "-")


def register_method(tuner_cls: type["Tuner"]) -> type["Tuner"]:
    """Register ``tuner_cls``. Its ``config_cls.peft_type`` is the file-format id (``adapter_config.json``) and its
    ``method_name`` (default: the peft_type in lower case with ``-``) the one name users type. A decorator."""
    config_cls = tuner_cls.config_cls
    peft_type = config_cls.peft_type
    if not peft_type:
        raise ValueError(f"{config_cls.__name__}.peft_type is empty; set it to the method's name, e.g. 'MY_METHOD'")
    existing = _METHODS.get(peft_type.upper())
    if existing is not None and existing.tuner_cls is not tuner_cls:
        raise ValueError(f"method {peft_type!r} is already registered by {existing.tuner_cls.__name__}")
    name = tuner_cls.__dict__.get("method_name") or normalize(peft_type)  # own attribute: not a parent tuner's
    taken = _NAMES.get(normalize(name)) or (normalize(name) in _ALIASES and "an alias")
    if taken and taken != peft_type.upper():
        raise ValueError(f"method name {name!r} is already taken by {taken}")
    _METHODS[peft_type.upper()] = MethodEntry(peft_type, config_cls, tuner_cls, name)
    _NAMES[normalize(name)] = peft_type.upper()
    _NAMES[normalize(peft_type)] = peft_type.upper()
    return tuner_cls


def register_alias(alias: str, method: str, **args: object) -> None:
    """Register ``alias`` as a name for ``method`` with ``args`` (e.g. ``register_alias("houlsby", "bottleneck",
    preset="houlsby")``): ``--method houlsby`` and ``peftlab methods houlsby`` expand to them."""
    key = normalize(alias)
    if key in _NAMES:
        raise ValueError(f"alias {alias!r} would hide the method {_NAMES[key]}")
    existing = _ALIASES.get(key)
    if existing is not None and (existing.method, existing.args) != (method, args):
        raise ValueError(f"alias {alias!r} is already registered for {existing.method} {existing.args}")
    _ALIASES[key] = MethodAlias(alias, method, dict(args))


def resolve_method(name: str) -> tuple[MethodEntry, dict]:
    """The method and the preset arguments a name means: a method name, an alias, or the peft_type. Another
    spelling of a name (``gated_prefix``, ``Kernel_Mix``) still works, with a DeprecationWarning naming the one
    to use. Unknown names raise ConfigError listing the valid ones."""
    key = normalize(name)
    if key in _ALIASES:
        alias = _ALIASES[key]
        if name != alias.name:
            _deprecated(name, alias.name)
        return _METHODS[_NAMES[normalize(alias.method)]], dict(alias.args)
    peft_type = _NAMES.get(key)
    if peft_type is None:
        import difflib

        close = difflib.get_close_matches(key, method_names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown method {name!r}; {hint}valid methods: {', '.join(method_names())} (peft_type "
                          f"ids in adapter_config.json: {', '.join(sorted(_METHODS))})")
    entry = _METHODS[peft_type]
    if name not in (entry.name, entry.peft_type):
        _deprecated(name, entry.name)
    return entry, {}


def _deprecated(spelling: str, name: str) -> None:
    import warnings

    warnings.warn(f"method name {spelling!r} is an old spelling; use {name!r}", DeprecationWarning, stacklevel=3)


def method_names(aliases: bool = True) -> list[str]:
    """Every method's one name (and the registered aliases), sorted."""
    names = {entry.name for entry in _METHODS.values()}
    if aliases:
        names |= {alias.name for alias in _ALIASES.values()}
    return sorted(names)


def aliases_of(method: str) -> list[MethodAlias]:
    return sorted((a for a in _ALIASES.values() if normalize(a.method) == normalize(method)), key=lambda a: a.name)


def get_method(name_or_config: "str | PeftConfig") -> MethodEntry:
    """The registered method for a name, alias or peft_type (case-insensitive), or a config instance."""
    if not isinstance(name_or_config, str):
        name = type(name_or_config).peft_type
        entry = _METHODS.get(str(name).upper())
        if entry is None:
            raise ConfigError(f"peft_type {name!r} is not a registered method; known methods: "
                              f"{', '.join(method_names(aliases=False))}")
        return entry
    if str(name_or_config).upper() in _METHODS:  # the file format's id, as written in adapter_config.json
        return _METHODS[str(name_or_config).upper()]
    return resolve_method(name_or_config)[0]


def list_methods() -> list[str]:
    """The registered methods' peft_type ids (the file format's; users type :func:`method_names`)."""
    return sorted(_METHODS)


def registered_methods() -> list[MethodEntry]:
    """Every registered method, in registration order."""
    return list(_METHODS.values())
