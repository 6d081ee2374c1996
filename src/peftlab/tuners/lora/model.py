"""LoRA tuner: wrap each target projection in a :class:`LoraLayer`."""
from __future__ import annotations

import torch.nn as nn

from ...errors import ConfigError
from ...layout import ResolvedLayout
from ...registry import register_method
from ..base import Tuner, replace_module
from ..targets import PROJECTION_TYPES, resolve_targets
from .config import LoraConfig
from .layer import LoraLayer


@register_method
class LoraTuner(Tuner):
    config_cls = LoraConfig
    mergeable = True

    @classmethod
    def inject(cls, model: nn.Module, config: LoraConfig, adapter_name: str, layout: ResolvedLayout,
               trainable: bool) -> None:
        targets = resolve_targets(model, layout, config.target_modules, config.layers_to_transform,
                                  allowed_types=PROJECTION_TYPES + (LoraLayer,))
        for target in targets:
            layer = target.module
            if not isinstance(layer, LoraLayer):
                layer = LoraLayer(layer)
                replace_module(model, target.path, layer)
            r, alpha = config.rank_and_alpha(target.path)
            segments = sorted(target.out_slices, key=lambda s: s.start)
            widths = [s.stop - s.start for s in segments] or [layer.out_features]
            limit = min([layer.in_features] + widths)
            if r > limit:
                raise ConfigError(f"LoraConfig.r: {r} is larger than {target.path}'s smallest side ({layer.in_features} "
                                  f"in, {min(widths)} out) = {limit}; a rank above that adds parameters but no "
                                  f"expressiveness. Allowed: 1..{limit}")
            layer.add_adapter(adapter_name, r=r, alpha=alpha, dropout=config.lora_dropout,
                              use_rslora=config.use_rslora, segments=segments,
                              init_weights=config.init_weights, trainable=trainable)

    @classmethod
    def describe(cls, config: LoraConfig) -> str:
        targets = config.target_modules if isinstance(config.target_modules, str) else ",".join(config.target_modules)
        return f"lora_A+lora_B (r={config.r}) on {targets}"
