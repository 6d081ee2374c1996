from .config import BottleneckConfig, bottleneck_parameter_count
from .layer import BottleneckAdapter, BottleneckLayer, InputCaptureLayer, NormDeltaLayer
from .model import BottleneckTuner

__all__ = ["BottleneckAdapter", "BottleneckConfig", "BottleneckLayer", "BottleneckTuner", "InputCaptureLayer",
           "NormDeltaLayer", "bottleneck_parameter_count"]
