"""The suite's results file: one JSON object a line (``benchmarks/results/quality.jsonl``), appended, never
rewritten.

Keys of a line (others allowed): ``protocol``, ``task``, ``arm``, ``method``, ``seed``, ``trainable_params``,
``stored_params``, ``steps``, ``n_inputs``, ``prefix_length``, ``metrics``, ``dev``, ``train_seconds``,
``peak_memory_mb``, ``recipe``, ``git_revision``; and from the run's log ``curves`` (``loss``, ``dev``, ``solo_t``,
``gate`` as [step, value] pairs), ``best_step``, ``lr``, ``selection`` (the best dev score, higher is better); an
lr-grid extension run (``lr_grid_extend``) also has ``grid_extension`` (k) and ``grid_extension_side`` (up | down).
A later line with the same (protocol, task, arm, seed) supersedes an earlier one (a deliberate re-run).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

from ..errors import DataError
from ..io import read_jsonl_objects
from .suite import result_key

REQUIRED_KEYS = ("protocol", "task", "arm", "method", "seed", "metrics")


class ResultsFileError(DataError):
    """A results line does not parse or lacks a required key (the message names the file and line)."""


def line_key(record: dict[str, Any]) -> str:
    return result_key(record["protocol"], record["task"], record["arm"], int(record["seed"]))


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Every result line of ``path`` in file order (a missing file is empty). Raises ResultsFileError naming the
    file and line of a line that is not a JSON object with the required keys."""
    path = Path(path)
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    for number, record in read_jsonl_objects(path, ResultsFileError):
        missing = [key for key in REQUIRED_KEYS if key not in record]
        if missing:
            raise ResultsFileError(f"{path}:{number}: missing key(s) {', '.join(missing)} "
                                   f"(a result line needs {', '.join(REQUIRED_KEYS)})")
        if not isinstance(record["seed"], int) or not isinstance(record["metrics"], dict):
            raise ResultsFileError(f"{path}:{number}: 'seed' must be an integer and 'metrics' an object")
        record["_line"] = number
        records.append(record)
    return records


def latest_by_key(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest line of every (protocol, task, arm, seed); earlier lines of a key are superseded."""
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        out[line_key(record)] = record
    return out


def append_result(path: str | Path, record: dict[str, Any]) -> None:
    """Append one line (written whole, then flushed and synced, so a killed runner leaves no half line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in record.items() if not k.startswith("_")}
    for key in REQUIRED_KEYS:
        if key not in clean:
            raise ValueError(f"append_result: the record lacks {key!r}")
    text = json.dumps(clean, sort_keys=False, separators=(",", ":")) + "\n"
    _drop_partial_last_line(path)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _drop_partial_last_line(path: Path) -> None:
    """A runner killed in the middle of a write leaves a last line without its newline: cut it off (with a
    warning) so the next line starts on a line of its own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    warnings.warn(f"{path}: dropping an incomplete last line ({len(data) - keep} bytes, from an interrupted write)",
                  UserWarning, stacklevel=3)
    with path.open("r+b") as handle:
        handle.truncate(keep)
