"""Base config: a dataclass with documented fields, JSON round-trip in peft's `adapter_config.json` shape.

* ``to_dict`` stamps ``peft_type`` and ``peftlab_version``;
* ``from_dict`` / ``from_pretrained`` find the config class through the method registry, drop unknown keys with a
  warning (configs written by a newer version still load) and check every field's type, raising
  :class:`~peftlab.errors.ConfigError` that names the field, the expected type and the value.
"""
from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

from ._version import __version__
from .errors import AdapterLoadError, ConfigError
from .registry import get_method

CONFIG_NAME = "adapter_config.json"


def _version_tuple(text: str) -> tuple[int, int] | None:
    """``"0.1.0"`` -> ``(0, 1)``; None if it does not start with ``major.minor``."""
    match = re.match(r"\s*(\d+)\.(\d+)", str(text))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _warn_if_newer(saved: Any, source: str) -> None:
    """A config written by a newer peftlab may use fields or semantics this one does not know: say so."""
    if saved is None:
        return
    theirs, ours = _version_tuple(saved), _version_tuple(__version__)
    if theirs is None:
        warnings.warn(f"{source}: unreadable peftlab_version {saved!r}", stacklevel=3)
    elif ours is not None and theirs > ours:
        warnings.warn(f"{source}: written by peftlab {saved}, newer than this peftlab {__version__}; fields or "
                      "defaults it relies on may be missing here (upgrade peftlab to load it faithfully)",
                      stacklevel=3)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(option) for option in typing.get_args(tp))
    if origin is Literal:
        return " | ".join(repr(v) for v in typing.get_args(tp))
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (JSON-friendly subset); return it, lists turned to tuples etc."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected None, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: expected one of {list(typing.get_args(tp))}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r} ({type(value).__name__})")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, key_tp, f"{where} key"): _coerce(v, val_tp, f"{where}[{k!r}]") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r} ({type(value).__name__})")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r} ({type(value).__name__})")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r} ({type(value).__name__})")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r} ({type(value).__name__})")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


@dataclass
class PeftConfig:
    """Fields every method shares (peft's names)."""

    peft_type: ClassVar[str] = ""  # set by each method's config class, e.g. "LORA"

    task_type: str | None = None
    """peft's task type: "CAUSAL_LM", "SEQ_CLS", ... (informational; also written to adapter_config.json)."""
    base_model_name_or_path: str | None = None
    """The base model the adapter was trained on (filled in by `get_peft_model` when known)."""
    revision: str | None = None
    """Revision of the base model, for hub users."""
    inference_mode: bool = False
    """If true, the adapter's parameters are frozen (loaded for inference)."""
    modules_to_save: list[str] | None = None
    """Extra base modules (e.g. a classifier head "classifier") trained in full and saved with the adapter."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            setattr(self, f.name, _coerce(value, hints[f.name], f"{type(self).__name__}.{f.name}"))
        self.validate()

    def validate(self) -> None:
        """Value checks beyond types; subclasses extend (raise ConfigError naming the field)."""

    # --- serialization -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data = json.loads(json.dumps(data))  # tuples -> lists, a plain JSON tree
        data["peft_type"] = self.peft_type
        data["peftlab_version"] = __version__
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "PeftConfig":
        """Build the right config class (by ``peft_type``) from a dict; unknown keys are dropped with a warning."""
        data = dict(data)
        peft_type = data.pop("peft_type", None) or cls.peft_type
        _warn_if_newer(data.pop("peftlab_version", None), source)
        config_cls = cls
        if not cls.peft_type or (peft_type and peft_type != cls.peft_type):
            config_cls = get_method(peft_type).config_cls
        names = {f.name for f in dataclasses.fields(config_cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            warnings.warn(f"{source}: ignoring keys unknown to {config_cls.__name__}: {', '.join(unknown)}",
                          stacklevel=2)
        try:
            return config_cls(**{k: v for k, v in data.items() if k in names})
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    def save_pretrained(self, directory: str | Path) -> None:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "PeftConfig":
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise AdapterLoadError(f"{path}: no adapter config found (expected {CONFIG_NAME} in {directory})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise AdapterLoadError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise AdapterLoadError(f"{path}: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes: Any) -> "PeftConfig":
        return dataclasses.replace(self, **changes)


def field_docs(config_cls: type) -> dict[str, str]:
    """Attribute docstrings of a config dataclass (the string literal under each field), for CLI help and docs."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, following in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def flatten_dotted(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping (a recipe) with dotted keys: ``{"optim": {"lr": 1e-3}}`` -> ``{"optim.lr": 1e-3}``; an empty
    mapping stays a value."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_dotted(value, name + "."))
        else:
            out[name] = value
    return out
