"""`peftlab methods [NAME]`: the registered methods and every config field with its default and help text."""
from __future__ import annotations

import dataclasses
import textwrap

from .config import field_docs
from .registry import get_method, list_methods


def describe_method(name: str) -> str:
    entry = get_method(name)
    config_cls = entry.config_cls
    docs = field_docs(config_cls)
    lines = [f"{entry.peft_type}: {config_cls.__name__}", textwrap.fill(" ".join((config_cls.__doc__ or "").split()), 100), ""]
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "(required)"
        lines.append(f"  {f.name} = {default}")
        if f.name in docs:
            lines.extend(textwrap.wrap(docs[f.name], 96, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


def _run(args) -> int:
    names = [args.name] if args.name else list_methods()
    if not args.name:
        for name in names:
            entry = get_method(name)
            summary = " ".join((entry.config_cls.__doc__ or "").split()).split(". ")[0]
            print(f"{name:<10} {entry.config_cls.__name__:<22} {summary}")
        return 0
    print(describe_method(args.name))
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("methods", help="list methods, or show one method's config fields")
    parser.add_argument("name", nargs="?", help="method name, e.g. lora")
    parser.set_defaults(func=_run)
