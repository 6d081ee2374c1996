"""peftlab: parameter-efficient fine-tuning in peft's vocabulary."""
from __future__ import annotations

from ._version import __version__
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
from .config import PeftConfig  # noqa: E402
from .layout import ModelLayout, get_layout, register_layout  # noqa: E402
from .model import (  # noqa: E402
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from .registry import get_method, list_methods, register_method  # noqa: E402
from .tuners import *  # noqa: E402,F401,F403  (every registered method's config class)
from .interop import export_to_peft, import_from_peft  # noqa: E402
