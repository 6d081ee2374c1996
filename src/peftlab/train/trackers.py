"""Experiment trackers through accelerate (TensorBoard, W&B, MLflow, ...), next to the run folder's JSONL log.

``run.report_to`` picks them: ``auto`` (default) turns on TensorBoard when it is installed and W&B when it is
installed *and* configured (``WANDB_API_KEY`` or ``WANDB_MODE`` set, so an unattended run never stops at a login
prompt); ``none`` turns them off; otherwise a comma-separated list of accelerate tracker names
(``tensorboard,wandb``), each of which must be installed.
"""
from __future__ import annotations

import importlib.util
import numbers
import os
from pathlib import Path
from typing import Any

from ..config import flatten_dotted
from ..errors import ConfigError

# accelerate's tracker name -> the package it imports (any one of them is enough)
TRACKER_PACKAGES: dict[str, tuple[str, ...]] = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
    "comet_ml": ("comet_ml",),
    "aim": ("aim",),
    "clearml": ("clearml",),
    "dvclive": ("dvclive",),
    "trackio": ("trackio",),
    "swanlab": ("swanlab",),
}
PROJECT_NAME = "peftlab"


def _installed(name: str) -> bool:
    return any(importlib.util.find_spec(package) is not None for package in TRACKER_PACKAGES[name])


def resolve_trackers(report_to: str) -> list[str]:
    """The accelerate tracker names ``report_to`` asks for (see the module docstring)."""
    spec = report_to.strip().lower()
    if spec in ("", "none", "off"):
        return []
    if spec == "auto":
        chosen = ["tensorboard"] if _installed("tensorboard") else []
        if _installed("wandb") and (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")):
            chosen.append("wandb")
        return chosen
    names = [part.strip() for part in spec.split(",") if part.strip()]
    for name in names:
        if name not in TRACKER_PACKAGES:
            raise ConfigError(f"run.report_to: unknown tracker {name!r} (valid: auto, none, "
                              f"{', '.join(TRACKER_PACKAGES)})")
        if not _installed(name):
            raise ConfigError(f"run.report_to: tracker {name!r} is not installed (pip install "
                              f"{TRACKER_PACKAGES[name][0]}), or use run.report_to=auto/none")
    return list(dict.fromkeys(names))


def flatten_scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """A JSONL record as flat scalars for a tracker: nested dicts become ``eval/dev_loss``; a list of numbers (a
    gate matrix, Solo's t per pair) becomes its ``/mean``, ``/min`` and ``/max``; strings and ``None`` are dropped."""
    flat: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            flat[name] = float(value)
        elif isinstance(value, numbers.Real):
            flat[name] = float(value)
        elif isinstance(value, dict):
            flat.update(flatten_scalars(value, prefix=f"{name}/"))
        elif isinstance(value, (list, tuple)):
            numbers_in = _numbers(value)
            if numbers_in:
                flat[f"{name}/mean"] = sum(numbers_in) / len(numbers_in)
                flat[f"{name}/min"] = min(numbers_in)
                flat[f"{name}/max"] = max(numbers_in)
    return flat


def _numbers(value: Any) -> list[float]:
    if isinstance(value, (list, tuple)):
        return [n for item in value for n in _numbers(item)]
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return [float(value)]
    return []


def hparams(recipe_dict: dict[str, Any]) -> dict[str, Any]:
    """The resolved recipe with dotted keys, its values as the scalar types trackers store as hyper-parameters."""
    return {name: value if isinstance(value, (bool, int, float, str)) else str(value)
            for name, value in flatten_dotted(recipe_dict).items()}


def tracker_dir(output_dir: Path) -> Path:
    """Where file-based trackers (TensorBoard) write: ``<run folder>/trackers/peftlab/``."""
    return output_dir / "trackers"
