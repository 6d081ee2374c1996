"""peftlab: parameter-efficient fine-tuning in peft's vocabulary.

Every name below is imported explicitly, so IDEs and type checkers see them. Importing any method's config module
imports :mod:`peftlab.tuners`, which registers every built-in method; a new method folder adds its config class
here (``tests/test_structure.py`` names any registered one that is missing).
"""
from __future__ import annotations

from ._version import __version__
from .config import PeftConfig
from .errors import (
    AdapterError,
    AdapterLoadError,
    ConfigError,
    DataError,
    ModelInstallError,
    PeftlabError,
    TargetModuleError,
    UnsupportedModelError,
)
from ._optional import MissingDependencyError
from .interop import export_to_peft, import_from_peft
from .layout import ModelLayout, get_layout, register_layout
from .model import (
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from .registry import get_method, list_methods, register_method
from .tuners.base import AdapterLayer, ModulesToSaveWrapper, Tuner
from .tuners.bitfit import BitFitConfig
from .tuners.bottleneck import BottleneckConfig
from .tuners.full import FullFinetuneConfig
from .tuners.gated_prefix import GatedPrefixConfig
from .tuners.kernel_mix import KernelMixConfig
from .tuners.lora import LoraConfig
from .tuners.prefix import PrefixTuningConfig
from .tuners.solo import SoloConnectionConfig

__all__ = [
    "__version__",
    # errors
    "AdapterError",
    "AdapterLoadError",
    "ConfigError",
    "DataError",
    "ModelInstallError",
    "PeftlabError",
    "MissingDependencyError",
    "TargetModuleError",
    "UnsupportedModelError",
    # models, adapters, state dicts
    "PeftModel",
    "get_peft_model",
    "get_peft_model_state_dict",
    "set_peft_model_state_dict",
    "export_to_peft",
    "import_from_peft",
    # configs: the base class and one per built-in method
    "PeftConfig",
    "BitFitConfig",
    "BottleneckConfig",
    "FullFinetuneConfig",
    "GatedPrefixConfig",
    "KernelMixConfig",
    "LoraConfig",
    "PrefixTuningConfig",
    "SoloConnectionConfig",
    # extending: methods and model layouts
    "AdapterLayer",
    "ModulesToSaveWrapper",
    "Tuner",
    "get_method",
    "list_methods",
    "register_method",
    "ModelLayout",
    "get_layout",
    "register_layout",
]
