"""Resumable training checkpoints through accelerate, written atomically (temp folder + renames).

A checkpoint folder (format 2) holds::

    params.safetensors        every trainable tensor and the adapters' saved state (e.g. Solo's step), by module-tree
                              name; written by peftlab, not by accelerate (its model file would be the whole model)
    best.safetensors          the best step's snapshot, same names
    optimizer.bin             accelerator.save_state: the optimizer,
    scheduler.bin               the learning-rate schedule,
    random_states_<rank>.pkl    each process's RNG (python, numpy, torch, CUDA) and accelerate's step counter,
    custom_checkpoint_0.pkl     and the loop's TrainState (registered with register_for_checkpointing)
    state.json                the TrainState again, readable, with "format": 2; written last, so a folder without it
                              is a torn save

Folders of format 1 (``trainer_state.pt`` in place of accelerate's files, written by peftlab before accelerate's
save_state was used) still load. Every pickle is read with ``torch.load(weights_only=True)``: accelerate does so for
the optimizer, schedule and RNG files; it unpickles the TrainState file fully, so that file is checked with
``weights_only=True`` before accelerate reads it.
"""
from __future__ import annotations

import json
import pickle
import random
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import AdapterLoadError
from ..io import write_safetensors


BEST_FILE = "best.safetensors"
"""The best step's snapshot inside a checkpoint folder."""
PARAMS_FILE = "params.safetensors"
STATE_FILE = "state.json"
FORMAT = 2
ACCELERATE_FILES = ("optimizer.bin", "scheduler.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl")
"""What accelerator.save_state writes for one optimizer, one scheduler and one registered object (rank 0's RNG)."""
LEGACY_FILE = "trainer_state.pt"  # format 1: optimizer, scheduler and RNG in one file


@dataclass
class TrainState:
    """Where the loop is: what a checkpoint must bring back besides weights, optimizer, schedule and RNG."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    """Micro-batches done in the current epoch (the data position)."""
    best: dict[str, Any] | None = None
    """The best dev scores so far and their step."""
    tokens: int = 0
    train_seconds: float = 0.0
    window: list = field(default_factory=lambda: [0.0, 0])
    """The open log window (loss sum, micro-batches) when the checkpoint was written."""

    def state_dict(self) -> dict[str, Any]:
        """Plain data only (numpy scalars in scores become floats), so it loads with ``weights_only=True``."""
        return json.loads(json.dumps(asdict(self)))

    def load_state_dict(self, data: dict[str, Any]) -> None:
        defaults = TrainState()
        for item in fields(self):
            setattr(self, item.name, data.get(item.name, getattr(defaults, item.name)))


def training_state_params(peft_model) -> dict[str, torch.nn.Parameter]:
    """Every trainable parameter plus the adapters' non-trainable saved state (e.g. Solo's step), once each,
    under the module-tree name."""
    wanted = {id(p) for p in peft_model.parameters() if p.requires_grad}
    for name in peft_model.peft_config:
        wanted.update(id(p) for p in peft_model._tuner(name).added_parameters(peft_model, name).values())
    return {n: p for n, p in peft_model.named_parameters() if id(p) in wanted}


def adapter_snapshot(peft_model) -> dict[str, torch.Tensor]:
    """The adapters' training state (trainable tensors and saved counters such as Solo's step), copied."""
    return {n: p.detach().clone() for n, p in training_state_params(peft_model).items()}


def restore_adapter(peft_model, snapshot: dict[str, torch.Tensor]) -> None:
    params = training_state_params(peft_model)
    with torch.no_grad():
        for name, tensor in snapshot.items():
            params[name].copy_(tensor)


def nonfinite_tensors(peft_model) -> list[str]:
    """The names of the training-state tensors holding NaN/inf."""
    return [name for name, p in training_state_params(peft_model).items()
            if p.is_floating_point() and not bool(torch.isfinite(p).all())]


def prepare_checkpointing(accelerator, state: TrainState) -> None:
    """Register ``state`` with ``accelerator`` and keep the prepared models out of its save_state/load_state: their
    state dicts are the whole model (frozen base included; accelerate drops tied tensors from it with a warning),
    while a checkpoint only needs the training state, which :func:`save_checkpoint` writes itself."""
    accelerator.register_for_checkpointing(state)
    accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear())


def save_checkpoint(accelerator, directory: Path, peft_model, state: TrainState,
                    best: dict[str, torch.Tensor] | None = None) -> None:
    """Write the checkpoint (every process calls this: each saves its RNG). ``best`` is the best step's snapshot
    (same names as the training state), kept so a resumed run can still restore it when no later step improves."""
    main = accelerator.is_main_process
    tmp = directory.with_name(directory.name + ".tmp")
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process's RNG file is in
    if main:
        write_safetensors({n: p.detach() for n, p in training_state_params(peft_model).items()}, tmp / PARAMS_FILE)
        if best is not None:
            write_safetensors(best, tmp / BEST_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({**state.state_dict(), "format": FORMAT}) + "\n", encoding="utf-8")
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def checkpoint_step(directory: Path) -> int | None:
    """The step of a complete checkpoint folder (its files there; state.json, written last, parses), else None."""
    try:
        state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        needed = (PARAMS_FILE, *ACCELERATE_FILES) if state.get("format") == FORMAT else (PARAMS_FILE, LEGACY_FILE)
        if not all((directory / name).is_file() for name in needed):
            return None
        return int(state["step"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
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


def load_checkpoint(accelerator, directory: Path, peft_model, state: TrainState, optimizer, scheduler) -> None:
    """Restore a checkpoint into the live model, optimizer, schedule, RNGs and ``state`` (every process calls this).
    ``optimizer`` and ``scheduler`` are only used for format-1 folders; format 2 goes through accelerator.load_state."""
    try:
        saved = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        legacy = saved.get("format") != FORMAT
        if not legacy:  # accelerate unpickles this file fully: refuse anything but plain data first
            torch.load(directory / ACCELERATE_FILES[-1], weights_only=True)
        _load_params(directory / PARAMS_FILE, peft_model)
        if legacy:
            _load_legacy(directory, saved, state, optimizer, scheduler)
        else:
            accelerator.load_state(str(directory))
    except AdapterLoadError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, AttributeError, EOFError, pickle.UnpicklingError,
            SafetensorError) as err:
        raise AdapterLoadError(f"{directory}: unreadable checkpoint ({type(err).__name__}: {err})") from None


def _load_params(path: Path, peft_model) -> None:
    tensors = load_file(str(path))
    params = training_state_params(peft_model)
    missing = sorted(set(tensors) ^ set(params))
    if missing:
        raise AdapterLoadError(f"{path.parent}: checkpoint does not match this model/method (differing tensors: "
                               f"{missing[:3]})")
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)


def _load_legacy(directory: Path, saved: dict[str, Any], state: TrainState, optimizer, scheduler) -> None:
    """Format 1: ``trainer_state.pt`` (optimizer, scheduler, torch and numpy RNG) and the python RNG in state.json."""
    trainer_state = torch.load(directory / LEGACY_FILE, weights_only=True)
    optimizer.load_state_dict(trainer_state["optimizer"])
    scheduler.load_state_dict(trainer_state["scheduler"])
    rng = trainer_state["rng"]
    torch.set_rng_state(rng["torch"])
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = saved.pop("python_rng")
    random.setstate((version, tuple(internal), gauss))
    state.load_state_dict(saved)


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
