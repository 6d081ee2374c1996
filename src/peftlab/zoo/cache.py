"""The zoo's cache folder: location, manifest, integrity checks, atomic publication and an install lock.

Layout: `<cache root>/models/<name>/` holds a plain Hugging Face folder plus `peftlab-manifest.json`, which is
written last and lists every file with its size and sha256. A folder without a valid manifest is never treated as
installed, and a build happens in a staging folder next to it that is renamed into place only when complete, so an
interrupted conversion can never look installed.

The cache root is `$PEFTLAB_CACHE` if set, else `$XDG_CACHE_HOME/peftlab`, else `~/.cache/peftlab`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from ..errors import ModelInstallError

MANIFEST_NAME = "peftlab-manifest.json"
MANIFEST_FORMAT = 1
CACHE_ENV_VAR = "PEFTLAB_CACHE"
_STAGING_PREFIX = ".staging-"
_TRASH_PREFIX = ".trash-"
_HASH_CHUNK_BYTES = 1 << 20


def cache_root() -> Path:
    """Root of peftlab's user cache (`$PEFTLAB_CACHE`, else `$XDG_CACHE_HOME/peftlab`, else `~/.cache/peftlab`)."""
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "peftlab"


def models_dir() -> Path:
    """Folder holding one sub-folder per installed zoo model."""
    return cache_root() / "models"


def model_cache_dir(name: str) -> Path:
    """Cache folder of the zoo model `name` (whether installed or not)."""
    return models_dir() / name


@dataclass(frozen=True)
class FileRecord:
    """Size and content hash of one file of an installed model."""

    size: int
    sha256: str


@dataclass
class Manifest:
    """What a successful install wrote; its presence (and agreement with the files) means "installed"."""

    name: str
    recipe_version: int
    files: dict[str, FileRecord]
    source: dict[str, str] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    build_seconds: float = 0.0
    format: int = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        raw = json.loads(text)
        raw["files"] = {path: FileRecord(**record) for path, record in raw["files"].items()}
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in raw.items() if key in known})


CacheState = Literal["installed", "missing", "damaged", "stale"]


@dataclass(frozen=True)
class CacheStatus:
    """Result of checking a cache folder: `installed` (usable), `missing`, `damaged` or `stale` (other recipe)."""

    state: CacheState
    reason: str
    path: Path
    manifest: Manifest | None = None

    @property
    def ok(self) -> bool:
        return self.state == "installed"


def sha256_of_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _human_size(num_bytes: int) -> str:
    size = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{num_bytes} B"  # pragma: no cover


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest of `directory`, or None if absent or unreadable."""
    try:
        return Manifest.from_json((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def inspect_cache(
    directory: Path,
    *,
    name: str,
    recipe_version: int,
    required_files: tuple[str, ...],
    verify_hashes: bool = False,
) -> CacheStatus:
    """Check a cache folder against its manifest.

    The cheap check (every load) compares file presence and sizes; `verify_hashes=True` also recomputes every
    sha256 (about 0.5 s per 500 MB).
    """
    if not directory.is_dir():
        return CacheStatus("missing", f"{directory} does not exist", directory)
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        return CacheStatus("damaged", f"{manifest_path.name} is missing (an interrupted or foreign install)", directory)
    manifest = read_manifest(directory)
    if manifest is None or manifest.format != MANIFEST_FORMAT or manifest.name != name:
        return CacheStatus("damaged", f"{manifest_path} is unreadable or belongs to another model", directory)
    if manifest.recipe_version != recipe_version:
        return CacheStatus(
            "stale",
            f"built by recipe version {manifest.recipe_version}, this peftlab uses version {recipe_version}",
            directory,
            manifest,
        )
    for required in required_files:
        if required not in manifest.files:
            return CacheStatus("damaged", f"the manifest does not list {required}", directory, manifest)
    for relative_path, record in manifest.files.items():
        file_path = directory / relative_path
        try:
            size = file_path.stat().st_size
        except OSError:
            return CacheStatus("damaged", f"{relative_path} is missing", directory, manifest)
        if size != record.size:
            return CacheStatus(
                "damaged",
                f"{relative_path} is {_human_size(size)} ({size} bytes), the manifest says {record.size} bytes",
                directory,
                manifest,
            )
    if verify_hashes:
        for relative_path, record in manifest.files.items():
            if sha256_of_file(directory / relative_path) != record.sha256:
                return CacheStatus(
                    "damaged", f"{relative_path} has the right size but a different sha256", directory, manifest
                )
    return CacheStatus("installed", "all files match the manifest", directory, manifest)


def record_files(directory: Path) -> dict[str, FileRecord]:
    """Size and sha256 of every file under `directory` (except the manifest), flushed to disk first."""
    records: dict[str, FileRecord] = {}
    for file_path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative_path = file_path.relative_to(directory).as_posix()
        if relative_path == MANIFEST_NAME:
            continue
        with open(file_path, "rb") as handle:
            with contextlib.suppress(OSError):
                os.fsync(handle.fileno())
        records[relative_path] = FileRecord(size=file_path.stat().st_size, sha256=sha256_of_file(file_path))
    return records


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write the manifest atomically (temp file + rename); call it after every other file is in place."""
    temporary = directory / f".{MANIFEST_NAME}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(manifest.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, directory / MANIFEST_NAME)


def new_staging_dir(name: str) -> Path:
    """A fresh empty folder next to the final cache folder (same file system, so the final rename is atomic)."""
    parent = models_dir()
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f"{_STAGING_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def publish(staging: Path, final: Path) -> None:
    """Move a complete staging folder to `final`, replacing (then deleting) whatever was there."""
    trash: Path | None = None
    if final.exists() or final.is_symlink():
        trash = final.with_name(f"{_TRASH_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, trash)
    os.rename(staging, final)
    if trash is not None:
        remove_tree(trash)


def remove_tree(path: Path) -> None:
    """Delete a file, symlink or folder if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def remove_leftovers(name: str) -> list[Path]:
    """Delete staging/trash folders of `name` left by interrupted installs (call while holding the lock)."""
    parent = models_dir()
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for prefix in (_STAGING_PREFIX, _TRASH_PREFIX):
        for leftover in parent.glob(f"{prefix}{name}-*"):
            remove_tree(leftover)
            removed.append(leftover)
    return removed


@contextlib.contextmanager
def install_lock(name: str, *, announce: bool = True) -> Iterator[None]:
    """Exclusive per-model lock, so concurrent processes (e.g. DDP ranks) do not convert the same model twice.

    Uses `fcntl.flock` where available (POSIX); elsewhere it is a no-op.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    parent = models_dir()
    try:
        parent.mkdir(parents=True, exist_ok=True)
        handle = open(parent / f".{name}.lock", "a+")
    except OSError as err:
        raise ModelInstallError(
            f"cannot write to the model cache {parent} to install '{name}' ({err}). "
            f"Make it writable or point ${CACHE_ENV_VAR} at a writable folder."
        ) from err
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if announce:
                print(f"peftlab: {name}: another process is installing it; waiting ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            if announce:
                print(f"peftlab: {name}: lock acquired after {time.monotonic() - started:.1f} s", file=sys.stderr)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
