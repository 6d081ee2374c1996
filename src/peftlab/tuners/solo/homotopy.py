"""The homotopy step: explicit, saved with the adapter, advanced by the training loop.

The step counter of a Solo adapter is a non-trainable integer parameter in the adapter's hub site (saved in
``adapter_model.safetensors`` as ``<hub block>.solo.step``), never a hidden global. ``t_mode="schedule"`` reads it as
``t = min(1, step / ramp_steps)``. Advance it once per optimizer step, either by hand::

    loss.backward(); optimizer.step(); advance_homotopy(peft_model)

or with an optimizer hook that does exactly that after every ``optimizer.step()``::

    handle = attach_homotopy_schedule(optimizer, peft_model)   # handle.remove() to detach

Inference uses whatever t the saved step gives (the end of the schedule if training ran >= ramp_steps steps);
:func:`complete_homotopy` sets the schedule to its end (t = 1) explicitly.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn

from ...errors import AdapterError
from .config import SoloConnectionConfig
from .layer import SoloState, solo_states


def _selected(model: nn.Module, adapter_name: str | None) -> list[SoloState]:
    """The named adapter; else the PeftModel's active adapter(s) that are Solo; else every Solo adapter."""
    states = solo_states(model)
    if not states:
        raise AdapterError(f"{type(model).__name__} has no Solo Connection adapter")
    if adapter_name is not None:
        if adapter_name not in states:
            raise AdapterError(f"no Solo Connection adapter named {adapter_name!r}; Solo adapters: {sorted(states)}")
        return [states[adapter_name]]
    active = getattr(model, "active_adapters", None)
    if isinstance(active, list):
        chosen = [states[name] for name in active if name in states]
        if not chosen:
            raise AdapterError(f"the active adapter(s) {active} are not Solo Connection adapters; pass adapter_name= "
                               f"one of {sorted(states)}")
        return chosen
    return list(states.values())


def advance_homotopy(model: nn.Module, steps: int = 1, adapter_name: str | None = None) -> int:
    """Add ``steps`` optimizer steps to the adapter's saved step counter; returns the new step.

    ``adapter_name`` None: the active adapter of a PeftModel (every Solo adapter for a bare model)."""
    if steps < 0:
        raise AdapterError(f"advance_homotopy: steps must be >= 0, got {steps}")
    new = 0
    for state in _selected(model, adapter_name):
        assert state.step is not None
        with torch.no_grad():
            state.step.add_(steps)
        new = state.step_value()
    return new


def set_homotopy_step(model: nn.Module, step: int, adapter_name: str | None = None) -> None:
    """Set the saved step counter (e.g. to resume a schedule, or 0 to restart it)."""
    if step < 0:
        raise AdapterError(f"set_homotopy_step: step must be >= 0, got {step}")
    for state in _selected(model, adapter_name):
        assert state.step is not None
        with torch.no_grad():
            state.step.fill_(step)


def complete_homotopy(model: nn.Module, adapter_name: str | None = None) -> None:
    """Move the schedule to its end (schedule factor t = 1) if it is not there yet. A learned t keeps its trained
    value, and t_mode="constant" keeps t_constant: both are part of the trained adapter."""
    for state in _selected(model, adapter_name):
        assert state.step is not None
        with torch.no_grad():
            state.step.clamp_(min=state.effective_ramp_steps())


def resolve_ramp_steps(model: nn.Module, total_steps: int, warmup_steps: int = 0,
                       adapter_name: str | None = None) -> dict[str, int]:
    """Fix T_h of every selected adapter whose ramp_steps is "auto" for a run of ``total_steps`` optimizer steps
    with ``warmup_steps`` of warm-up (see ``SoloConnectionConfig.ramp_steps``); the PeftModel's config records the
    number, so the saved adapter has it. An explicit T_h longer than the run is kept and warned about (the run
    would end at t < 1). Returns {adapter name: T_h}."""
    configs = getattr(model, "peft_config", {})
    resolved: dict[str, int] = {}
    for state in _selected(model, adapter_name):
        config = configs.get(state.adapter_name)
        if state.ramp_steps is None:
            rule = config if isinstance(config, SoloConnectionConfig) else SoloConnectionConfig()
            state.ramp_steps = rule.auto_ramp_steps(total_steps, warmup_steps)
            if config is not None:
                config.ramp_steps = state.ramp_steps
        elif state.t_mode in ("schedule", "schedule*learned") and state.ramp_steps > total_steps:
            warnings.warn(f"Solo adapter {state.adapter_name!r}: ramp_steps={state.ramp_steps} is longer than the "
                          f"run's {total_steps} optimizer steps, so training ends (and the adapter infers) at "
                          f"t = {total_steps / state.ramp_steps:.3f} < 1; use ramp_steps='auto' or at most "
                          f"{total_steps}", UserWarning, stacklevel=2)
        resolved[state.adapter_name] = state.ramp_steps
    return resolved


def unfinished_ramps(model: nn.Module) -> dict[str, float]:
    """{adapter: schedule t} of every Solo adapter whose schedule has not reached t = 1 (empty when all have)."""
    out: dict[str, float] = {}
    for name, state in solo_states(model).items():
        if state.t_mode in ("schedule", "schedule*learned") and state.step is not None:
            t = state.schedule_value()
            if t < 1.0:
                out[name] = t
    return out


def homotopy_step(model: nn.Module, adapter_name: str | None = None) -> int:
    """The saved step counter of one adapter (default: the active one)."""
    return _selected(model, adapter_name)[0].step_value()


def current_t(model: nn.Module, adapter_name: str | None = None) -> dict[str, float]:
    """For logging: ``{"step": s, "t[i->j]": t_ij, ...}`` of one adapter (default: the active one)."""
    state = _selected(model, adapter_name)[0]
    assert state.step is not None
    out: dict[str, float] = {"step": float(state.step_value())}
    with torch.no_grad():
        for pair in state.pairs:
            t = state.t(pair)
            out[f"t[{pair[0]}->{pair[1]}]"] = float(t) if isinstance(t, float) else float(t.detach().cpu())
    return out


def attach_homotopy_schedule(optimizer: torch.optim.Optimizer, model: nn.Module, adapter_name: str | None = None,
                             steps_per_call: int = 1) -> Any:
    """Advance the adapter's step after every ``optimizer.step()`` (``register_step_post_hook``).

    The adapter is fixed when attaching (default: the active one). A step skipped by an AMP ``GradScaler`` (inf or
    NaN gradients) does not call ``optimizer.step`` and so does not advance t. Returns the hook handle
    (``handle.remove()`` detaches it)."""
    names = [state.adapter_name for state in _selected(model, adapter_name)]

    def hook(opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        for name in names:
            advance_homotopy(model, steps_per_call, adapter_name=name)

    return optimizer.register_step_post_hook(hook)
