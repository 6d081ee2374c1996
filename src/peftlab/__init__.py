"""peftlab: parameter-efficient fine-tuning in peft's vocabulary."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    AdapterError,
    AdapterLoadError,
    ConfigError,
    DataError,
    ModelInstallError,
    PeftlabError,
    TargetModuleError,
    UnsupportedModelError,
)
