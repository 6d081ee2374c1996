"""Gated prefix tuner: the prefix tuner's code path with the gated config (residual/gate knobs switched on)."""
from __future__ import annotations

from ...registry import register_method
from ..prefix.model import PrefixTuningTuner
from .config import GatedPrefixConfig
from .gate_log import gate_values


@register_method
class GatedPrefixTuner(PrefixTuningTuner):
    config_cls = GatedPrefixConfig
    mergeable = False

    @classmethod
    def training_log(cls, peft_model, adapter_name: str) -> dict[str, object]:
        """Gate values per layer and prefix token, (L, l) as nested lists (the paper's gate-trend analysis)."""
        if peft_model.peft_config[adapter_name].gate == "none":
            return {}
        return {"gate": [[round(v, 5) for v in row] for row in gate_values(peft_model, adapter_name).tolist()]}
