"""Full fine-tuning tuner: unfreeze the base model; save all of it."""
from __future__ import annotations

import torch
import torch.nn as nn

from ...layout import ResolvedLayout
from ...registry import register_method
from ..base import Tuner
from .config import FullFinetuneConfig


@register_method
class FullFinetuneTuner(Tuner):
    config_cls = FullFinetuneConfig
    mergeable = True  # nothing to merge: the weights are already the model
    modifies_base_weights = True

    @classmethod
    def inject(cls, model: nn.Module, config: FullFinetuneConfig, adapter_name: str, layout: ResolvedLayout,
               trainable: bool) -> None:
        embedding_params = set()
        if not config.train_embeddings:
            embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        for param in model.parameters():
            param.requires_grad_(trainable and id(param) not in embedding_params)

    @classmethod
    def describe(cls, config: FullFinetuneConfig) -> str:
        return "all base parameters" + ("" if config.train_embeddings else " except embeddings")

    @classmethod
    def base_state_for_save(cls, model: nn.Module) -> dict[str, torch.Tensor]:
        """Every tensor of the model once (tied weights saved under their first name only)."""
        state, seen = {}, set()
        for name, tensor in model.state_dict().items():
            key = (tensor.data_ptr(), tensor.shape, tensor.stride()) if tensor.numel() else None
            if key is not None and key in seen:
                continue
            if key is not None:
                seen.add(key)
            state[name] = tensor
        return state
