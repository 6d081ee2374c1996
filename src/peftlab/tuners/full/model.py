"""Full fine-tuning tuner: unfreeze the base model; save all of it.

The "adapter" is the base weights themselves, so this tuner overrides what :class:`~peftlab.tuners.base.Tuner`
says an adapter is: every parameter of the model, saved and loaded in full; the base is not frozen, a
classifier head needs no ``modules_to_save``, and the adapter can neither share the model nor be deleted or
disabled.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ...errors import AdapterError
from ...layout import ResolvedLayout
from ...registry import register_method
from ..base import SAVED_KEY_PREFIX, Tuner
from .config import FullFinetuneConfig


@register_method
class FullFinetuneTuner(Tuner):
    config_cls = FullFinetuneConfig
    mergeable = True  # nothing to merge: the weights are already the model

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

    # --- the adapter is the model ----------------------------------------------------------------------------
    @classmethod
    def freeze_base(cls, model: nn.Module) -> None:
        """Nothing to freeze: :meth:`inject` sets every parameter's ``requires_grad``."""

    @classmethod
    def default_modules_to_save(cls, model: nn.Module) -> list[str] | None:
        return None  # a classifier head trains and is saved with the rest of the model

    @classmethod
    def check_operation(cls, operation: str) -> None:
        if operation == "share":
            raise AdapterError("full fine-tuning trains the base weights themselves; it cannot share a model with "
                               "other adapters")
        if operation == "delete_adapter":
            raise AdapterError("a full fine-tuning 'adapter' is the model itself and cannot be deleted")
        raise AdapterError(f"{operation} is not possible with full fine-tuning: the base weights were trained")

    @classmethod
    def adapter_parameters(cls, peft_model, adapter_name: str) -> dict[str, nn.Parameter]:
        return {SAVED_KEY_PREFIX + name: param for name, param in peft_model.model.named_parameters()}

    @classmethod
    def state_for_save(cls, peft_model, adapter_name: str) -> dict[str, torch.Tensor]:
        return {SAVED_KEY_PREFIX + key: tensor for key, tensor in cls.base_state_for_save(peft_model.model).items()}

    @classmethod
    def load_targets(cls, peft_model, adapter_name: str) -> tuple[dict[str, torch.Tensor], set[str]]:
        """Any of the model's tensors under any of its names (tied weights have several); each saved one once."""
        expected = {SAVED_KEY_PREFIX + key: t for key, t in peft_model.model.state_dict(keep_vars=True).items()}
        return expected, set(cls.state_for_save(peft_model, adapter_name))

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
