"""`peftlab` command line: one sub-command per area, each registered by the module that owns it.

A module that adds a sub-command exposes `register_cli(subparsers)`, which adds its parser and sets
`func=<callable(args) -> int>` as the parser default.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ._version import __version__
from .errors import PeftlabError

# Modules that contribute sub-commands (imported lazily so `peftlab --help` stays fast and a missing
# optional dependency of one area does not break the others).
_CLI_MODULES = (
    "peftlab.zoo",
    "peftlab.metrics.cli",
    "peftlab.demo",
    "peftlab.describe",
    "peftlab.train.cli",
    "peftlab.report",
    "peftlab.bench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftlab", description="Parameter-efficient fine-tuning lab.")
    parser.add_argument("--version", action="version", version=f"peftlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _CLI_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:  # an area not built yet, or its optional dependency missing
            if err.name and (err.name == module_name or module_name.startswith(err.name)):
                continue
            raise
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # KEY=VALUE overrides may come after options (`peftlab train e2e --method lora optim.lr=1e-3`)
        if hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PeftlabError as err:
        print(f"peftlab: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
