from .config import KernelMixConfig, kernel_mix_parameter_count
from .layer import KernelMixLayer, KeyStash
from .model import KernelMixTuner

__all__ = ["KernelMixConfig", "KernelMixLayer", "KernelMixTuner", "KeyStash", "kernel_mix_parameter_count"]
