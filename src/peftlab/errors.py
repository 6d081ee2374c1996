"""One exception hierarchy for everything peftlab raises on bad input.

Every message names the file, field or module at fault and what was expected, so a user can fix the input
without reading our source.
"""
from __future__ import annotations


class PeftlabError(Exception):
    """Base class of every error peftlab raises on purpose."""


class ConfigError(PeftlabError, ValueError):
    """A config field has a wrong type or value (the message names the field and the allowed values)."""


class TargetModuleError(PeftlabError, ValueError):
    """`target_modules` (or another module selector) matched nothing, or matched an unsupported module."""


class UnsupportedModelError(PeftlabError, ValueError):
    """The model's architecture has no layout in `peftlab.layout` (the message says how to add one)."""


class AdapterLoadError(PeftlabError, OSError):
    """An adapter folder or weight file cannot be loaded (missing, truncated, not safetensors, wrong shapes)."""


class AdapterError(PeftlabError, ValueError):
    """An adapter operation is not possible: unknown adapter name, merging a method that cannot merge, ..."""


class ModelInstallError(PeftlabError, RuntimeError):
    """An offline model could not be installed, converted or found."""


class DataError(PeftlabError, ValueError):
    """A data file is malformed (the message names the file, line and problem)."""
