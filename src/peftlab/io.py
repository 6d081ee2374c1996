"""Adapter weight files: safetensors only (nothing is ever unpickled), written atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import AdapterLoadError

WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAMES = ("adapter_model.bin", "pytorch_model.bin", "adapter_model.pt")


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` via a temp file + rename, so a crash never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file(cpu, tmp, metadata={"format": "pt", **(metadata or {})})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_adapter_weights(directory: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The tensors of ``directory/adapter_model.safetensors``; AdapterLoadError names the file and the problem."""
    directory = Path(directory)
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        pickles = [name for name in PICKLE_NAMES if (directory / name).is_file()]
        if pickles:
            raise AdapterLoadError(
                f"{directory / pickles[0]}: pickle weight files are never loaded (they can run arbitrary code); "
                f"peftlab reads only {WEIGHTS_NAME}. Convert it with safetensors.torch.save_file on a trusted machine.")
        raise AdapterLoadError(f"{path}: adapter weights not found (expected {WEIGHTS_NAME} in {directory})")
    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise AdapterLoadError(f"{path}: not a readable safetensors file (truncated or another format?): {err}") \
            from None
    return tensors, path


def writable_dir(path: str | Path, what: str) -> Path:
    """``path`` as a folder this process can write into (created if missing); else a ConfigError saying why."""
    from .errors import ConfigError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: is a file, not a folder; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{what} {path}: cannot be created ({err.strerror or err})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: is not writable by this user; choose another folder")
    return path


def writable_file(path: str | Path, what: str) -> Path:
    """``path`` as a file that can be written: its folder exists and is writable, and it is not a folder."""
    from .errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a folder; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"{what} {path}: its folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{what} {path}: is not writable by this user")
    return path


def read_jsonl_objects(path: Path, error: type[Exception]) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON-lines file; ``error`` (a PeftlabError subclass)
    names ``path:line`` for a line that is not a JSON object."""
    import json

    out: list[tuple[int, dict]] = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}:{number}: not a JSON line ({err.msg} at column {err.colno})") from None
            if not isinstance(record, dict):
                raise error(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            out.append((number, record))
    return out
