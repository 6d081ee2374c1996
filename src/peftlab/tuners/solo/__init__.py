from .config import SoloConnectionConfig
from .homotopy import (
    advance_homotopy,
    attach_homotopy_schedule,
    complete_homotopy,
    current_t,
    homotopy_step,
    resolve_ramp_steps,
    set_homotopy_step,
    unfinished_ramps,
)
from .layer import SoloBlock, SoloMap, SoloSite, SoloState
from .model import SoloTuner, solo_states

__all__ = [
    "SoloConnectionConfig",
    "SoloBlock",
    "SoloMap",
    "SoloSite",
    "SoloState",
    "SoloTuner",
    "advance_homotopy",
    "attach_homotopy_schedule",
    "complete_homotopy",
    "current_t",
    "homotopy_step",
    "resolve_ramp_steps",
    "unfinished_ramps",
    "set_homotopy_step",
    "solo_states",
]
