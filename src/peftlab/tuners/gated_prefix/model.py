"""Gated prefix tuner: the prefix tuner's code path with the gated config (residual/gate knobs switched on)."""
from __future__ import annotations

from ...registry import register_method
from ..prefix.model import PrefixTuningTuner
from .config import GatedPrefixConfig


@register_method
class GatedPrefixTuner(PrefixTuningTuner):
    config_cls = GatedPrefixConfig
    mergeable = False
