"""`peftlab methods [NAME]`: the registered methods and every config field with its default and help text."""
from __future__ import annotations

import dataclasses
import textwrap

from .config import field_docs
from .registry import aliases_of, get_method, method_names, resolve_method


def describe_method(name: str) -> str:
    entry, alias_args = resolve_method(name)
    config_cls = entry.config_cls
    docs = field_docs(config_cls)
    title = f"{entry.name} (peft_type {entry.peft_type}): {config_cls.__name__}"
    if alias_args:
        title = f"{name}: an alias of {entry.name} with {alias_args}\n" + title
    lines = [title, textwrap.fill(" ".join((config_cls.__doc__ or "").split()), 100)]
    aliases = aliases_of(entry.name)
    if aliases:
        lines.append("aliases: " + ", ".join(f"{a.name} ({', '.join(f'{k}={v}' for k, v in a.args.items())})"
                                             for a in aliases))
    lines.append(f"docs: docs/methods/{entry.name}.md")
    lines.append("")
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
    if not args.name:
        for name in method_names(aliases=False):
            entry = get_method(name)
            summary = " ".join((entry.config_cls.__doc__ or "").split()).split(". ")[0]
            print(f"{name:<14} {entry.config_cls.__name__:<22} {summary}")
            for alias in aliases_of(name):
                args_text = ", ".join(f"{k}={v}" for k, v in alias.args.items())
                print(f"  {alias.name:<12} alias: {name} with {args_text}")
        return 0
    print(describe_method(args.name))
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("methods", help="list methods, or show one method's config fields")
    parser.add_argument("name", nargs="?", help="method name or alias, e.g. lora, kernel-mix, houlsby")
    parser.set_defaults(func=_run)
