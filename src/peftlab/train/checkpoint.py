"""Resumable training checkpoints, written atomically (temp folder + rename).

``checkpoint/params.safetensors`` holds every trainable tensor (and the adapter's saved state) by name;
``checkpoint/trainer_state.pt`` holds optimizer/scheduler state, RNG states, step and data position, and is read
with ``torch.load(weights_only=True)`` (no arbitrary unpickling).
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..errors import AdapterLoadError
from ..io import write_safetensors


BEST_FILE = "best.safetensors"
"""The best step's snapshot inside a checkpoint folder."""


def training_state_params(peft_model) -> dict[str, torch.nn.Parameter]:
    """Every trainable parameter plus the adapters' non-trainable saved state (e.g. Solo's step), once each,
    under the module-tree name."""
    wanted = {id(p) for p in peft_model.parameters() if p.requires_grad}
    for name in peft_model.peft_config:
        wanted.update(id(p) for p in peft_model._tuner(name).added_parameters(peft_model, name).values())
    return {n: p for n, p in peft_model.named_parameters() if id(p) in wanted}


def _checkpoint_tensors(peft_model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in training_state_params(peft_model).items()}


def save_checkpoint(directory: Path, peft_model, optimizer, scheduler, state: dict[str, Any],
                    best: dict[str, torch.Tensor] | None = None) -> None:
    """Write the checkpoint; ``best`` is the best step's snapshot (same names as the trainable state), kept so a
    resumed run can still restore it when no later step improves."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_safetensors(_checkpoint_tensors(peft_model), tmp / "params.safetensors")
    if best is not None:
        write_safetensors(best, tmp / BEST_FILE)
    torch.save({
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_state()},
    }, tmp / "trainer_state.pt")
    version, internal, gauss = random.getstate()
    state = {**state, "python_rng": [version, list(internal), gauss]}
    (tmp / "state.json").write_text(json.dumps(state) + "\n", encoding="utf-8")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_step(directory: Path) -> int | None:
    """The step of a complete checkpoint folder (all three files; state.json, written last, parses), else None."""
    try:
        if not ((directory / "params.safetensors").is_file() and (directory / "trainer_state.pt").is_file()):
            return None
        return int(json.loads((directory / "state.json").read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint among ``directory`` and the ``.old`` / ``.tmp`` folders a save that was killed
    between its renames leaves behind; it is moved to ``directory`` (the others are removed). None if there is none."""
    candidates = [directory, directory.with_name(directory.name + ".old"), directory.with_name(directory.name + ".tmp")]
    steps = {path: checkpoint_step(path) for path in candidates if path.is_dir()}
    complete = {path: step for path, step in steps.items() if step is not None}
    if not complete:
        return None
    best = max(complete, key=lambda path: (complete[path], path == directory))
    if best != directory:
        shutil.rmtree(directory, ignore_errors=True)  # incomplete or older
        best.rename(directory)
    for path in candidates[1:]:
        shutil.rmtree(path, ignore_errors=True)
    return directory


def _numpy_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]


def load_checkpoint(directory: Path, peft_model, optimizer, scheduler) -> dict[str, Any]:
    """Restore a checkpoint; returns its state (step, epoch, batches done in the epoch, best score...)."""
    try:
        tensors = load_file(str(directory / "params.safetensors"))
        trainer_state = torch.load(directory / "trainer_state.pt", weights_only=True)
        state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    except (OSError, RuntimeError, ValueError) as err:
        raise AdapterLoadError(f"{directory}: unreadable checkpoint ({err})") from None
    params = training_state_params(peft_model)
    missing = sorted(set(tensors) ^ set(params))
    if missing:
        raise AdapterLoadError(f"{directory}: checkpoint does not match this model/method (differing tensors: "
                               f"{missing[:3]})")
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(trainer_state["optimizer"])
    scheduler.load_state_dict(trainer_state["scheduler"])
    rng = trainer_state["rng"]
    torch.set_rng_state(rng["torch"])
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state.pop("python_rng")
    random.setstate((version, tuple(internal), gauss))
    return state


def load_best_snapshot(directory: Path, peft_model) -> dict[str, torch.Tensor] | None:
    """The best step's snapshot saved in checkpoint ``directory``, or None if it has none (older checkpoints)."""
    path = directory / BEST_FILE
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
    except (OSError, RuntimeError, ValueError) as err:
        raise AdapterLoadError(f"{path}: unreadable best-step snapshot ({err})") from None
    differing = sorted(set(tensors) ^ set(training_state_params(peft_model)))
    if differing:
        raise AdapterLoadError(f"{path}: best-step snapshot does not match this model/method (differing tensors: "
                               f"{differing[:3]})")
    return tensors
