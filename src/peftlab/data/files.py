"""Where the data lives, and strict text decoding with errors that name the file and line."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError

__all__ = ["DATA_DIR_ENV", "decode_text", "default_data_dir", "read_text", "resolve_data_dir"]

#: Environment variable naming the data directory (the folder holding ``e2e/`` and ``glue/``).
DATA_DIR_ENV = "PEFTLAB_DATA_DIR"


def default_data_dir() -> Path:
    """``$PEFTLAB_DATA_DIR``; a :class:`DataError` explaining the options when it is not set."""
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        raise DataError(
            f"no data directory given: pass --data-dir DIR (or data_dir=...) or set ${DATA_DIR_ENV} to the folder "
            "that holds e2e/ (the official E2E release CSVs) and glue/ (GLUE TSVs, one folder per task). "
            "With network access, peftlab.data.e2e.download_e2e(DIR) fetches the official E2E release."
        )
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(f"${DATA_DIR_ENV}={value!r} is not a directory")
    return path


def resolve_data_dir(data_dir: str | os.PathLike[str] | None, subdir: str, markers: str | tuple[str, ...]) -> Path:
    """The folder of one dataset: ``data_dir/subdir`` if it exists, else ``data_dir`` itself if it holds one of the
    ``markers`` (glob patterns), so both ``--data-dir shared/data`` and ``--data-dir shared/data/e2e`` work."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if not root.is_dir():
        raise DataError(f"data directory {str(root)!r} does not exist")
    if (root / subdir).is_dir():
        return root / subdir
    markers = (markers,) if isinstance(markers, str) else markers
    if any(next(root.glob(m), None) is not None for m in markers):
        return root
    raise DataError(
        f"{str(root)!r} holds neither {subdir}/ nor {' / '.join(markers)}: point the data directory at the right folder"
    )


def decode_text(data: bytes, name: str) -> str:
    """Decode UTF-8 (an initial BOM is dropped); undecodable bytes raise a :class:`DataError` naming the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        line_start = data.rfind(b"\n", 0, err.start) + 1
        raise DataError(
            f"{name}: line {line}: not valid UTF-8 (byte 0x{data[err.start]:02x} at column {err.start - line_start + 1}: "
            f"{err.reason}); re-encode the file as UTF-8"
        ) from None


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a whole UTF-8 text file strictly (see :func:`decode_text`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    return decode_text(data, str(path))
