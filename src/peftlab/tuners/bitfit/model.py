"""BitFit tuner: wrap every selected module that has (or is given) a bias."""
from __future__ import annotations

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from ...errors import TargetModuleError
from ...layout import ResolvedLayout
from ...registry import register_method
from ..base import AdapterLayer, Tuner, replace_module
from ..targets import PROJECTION_TYPES, resolve_targets
from .config import BitFitConfig
from .layer import BitFitLayer

NORM_TYPES = (nn.LayerNorm,)


def _has_bias(module: nn.Module) -> bool:
    return isinstance(getattr(module, "bias", None), torch.Tensor)


@register_method
class BitFitTuner(Tuner):
    config_cls = BitFitConfig
    mergeable = True

    @classmethod
    def _candidates(cls, model: nn.Module, config: BitFitConfig, layout: ResolvedLayout) -> list[tuple[str, nn.Module]]:
        if config.target_modules is not None:
            targets = resolve_targets(model, layout, config.target_modules, config.layers_to_transform,
                                      allowed_types=PROJECTION_TYPES + NORM_TYPES + (BitFitLayer,))
            return [(t.path, t.module) for t in targets]
        kinds = PROJECTION_TYPES + (NORM_TYPES if config.include_norms else ()) + (BitFitLayer,)
        body = layout.body_prefix
        wanted = None if config.layers_to_transform is None else set(config.layers_to_transform)
        found = []
        for path, module in model.named_modules():
            if body and not path.startswith(body + "."):
                continue
            if not isinstance(module, kinds) or _inside_adapter_layer(model, path):
                continue
            if _inside_saved_module(path, config.modules_to_save):  # trains whole (e.g. the pooler of a head)
                continue
            if wanted is not None:
                prefix = layout.body_path(layout.layout.blocks) + "."
                head = path[len(prefix):].split(".", 1)[0] if path.startswith(prefix) else None
                if head is None or int(head) not in wanted:
                    continue
            found.append((path, module))
        return found

    @classmethod
    def inject(cls, model: nn.Module, config: BitFitConfig, adapter_name: str, layout: ResolvedLayout,
               trainable: bool) -> None:
        chosen = []
        for path, module in cls._candidates(model, config, layout):
            base = module.base_layer if isinstance(module, BitFitLayer) else module
            if _has_bias(base) or (config.add_missing_bias and isinstance(base, (nn.Linear, Conv1D))):
                chosen.append((path, module))
        if not chosen:
            raise TargetModuleError(
                f"BitFitConfig: no bias to train in {type(model).__name__} with target_modules="
                f"{config.target_modules!r}; this model's projections may have no biases (Llama-family): "
                "set add_missing_bias=True to add zero-initialised biases")
        for path, module in chosen:
            layer = module
            if not isinstance(layer, BitFitLayer):
                layer = BitFitLayer(module)
                replace_module(model, path, layer)
            layer.add_adapter(adapter_name, init_weights=config.init_weights, trainable=trainable)

    @classmethod
    def describe(cls, config: BitFitConfig) -> str:
        where = "all body biases" if config.target_modules is None else f"biases of {config.target_modules}"
        return f"bias deltas: {where}" + (" (+ added biases)" if config.add_missing_bias else "")


def _inside_saved_module(path: str, names: list[str] | None) -> bool:
    """True if ``path`` is, or is inside, a module that ``modules_to_save`` names (matched as peft matches them: the
    whole path or its last components)."""
    parts = path.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(prefix == name or prefix.endswith("." + name) for name in names or () for prefix in prefixes)


def _inside_adapter_layer(model: nn.Module, path: str) -> bool:
    """True if ``path`` is the base_layer of an adapter layer, or inside one (don't wrap a wrapped module twice)."""
    parts = path.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), AdapterLayer):
            return True
    return False
