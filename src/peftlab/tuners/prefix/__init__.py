from .attention import PREFIX_ATTENTION, PrefixPayload, prefix_attention
from .config import PrefixSpec, PrefixTuningConfig
from .layer import PrefixLayer
from .model import (
    REPARAMETERIZATION_NAME,
    PrefixParameterCounts,
    PrefixTuningTuner,
    prefix_layers,
    prefix_parameter_counts,
)

__all__ = ["PREFIX_ATTENTION", "PrefixLayer", "PrefixParameterCounts", "PrefixPayload", "PrefixSpec",
           "PrefixTuningConfig", "PrefixTuningTuner", "REPARAMETERIZATION_NAME", "prefix_attention",
           "prefix_layers", "prefix_parameter_counts"]
