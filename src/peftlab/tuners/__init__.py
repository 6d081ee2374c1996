"""Built-in methods, one sub-package each (``config.py``, ``layer.py``, ``model.py``).

Importing this package imports every sub-package, and each registers its tuner with
:func:`peftlab.registry.register_method`: a method folder needs no list of methods to be registered. Every
registered config class is re-exported here; ``peftlab`` exports them by name (``tests/test_structure.py`` checks
that none is missing there).
"""
from __future__ import annotations

import importlib
import pkgutil

from ..registry import registered_methods
from .base import AdapterLayer, ModulesToSaveWrapper, Tuner

for _module in pkgutil.iter_modules(__path__):
    if _module.ispkg:
        importlib.import_module(f"{__name__}.{_module.name}")

for _entry in registered_methods():
    globals()[_entry.config_cls.__name__] = _entry.config_cls

__all__ = ["AdapterLayer", "ModulesToSaveWrapper", "Tuner"] + sorted(
    e.config_cls.__name__ for e in registered_methods())
