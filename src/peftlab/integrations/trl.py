"""TRL's ``SFTTrainer`` for peftlab models (needs ``pip install trl``; tested with the version in constraints.txt).

``trl.SFTTrainer`` replaces the model's forward with a fused LM-head forward that calls ``model.base_model`` and
expects the transformers *backbone* there (``GPT2Model``, ``LlamaModel``). On a peftlab model ``base_model`` is the
tuner model (peft's meaning), so the patched forward returns the wrong output type. TRL special-cases HF peft's
``PeftModel`` for this; :class:`PeftlabSFTTrainer` does the same for peftlab's: the fused head goes on the wrapped
transformers model (adapters inside it), and :class:`~peftlab.integrations.PeftlabCallback` is added::

    from peftlab.integrations.trl import PeftlabSFTTrainer
    trainer = PeftlabSFTTrainer(model=peft_model, args=trl.SFTConfig(...), train_dataset=ds, processing_class=tok)
"""
from __future__ import annotations

from typing import Any

import trl
from trl.trainer.utils import add_fused_lm_head

from ..errors import AdapterError
from .trainer import PeftlabCallback, find_peft_model

__all__ = ["PeftlabSFTTrainer"]

# what trl.SFTTrainer asks the fused head for (trl 1.16: its loss, entropy and token-accuracy metrics)
FUSED_OUTPUTS = ("log_probs", "entropy", "is_top1")


class PeftlabSFTTrainer(trl.SFTTrainer):
    """``trl.SFTTrainer`` whose fused LM head sits on the wrapped transformers model of a peftlab ``PeftModel``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        peft_model = find_peft_model(self.model)
        if peft_model is None:
            raise AdapterError(f"PeftlabSFTTrainer trains a peftlab PeftModel; got {type(self.model).__name__}")
        if "forward" in peft_model.__dict__:  # SFTTrainer patched the PeftModel instance itself: undo that
            del peft_model.__dict__["forward"]
            add_fused_lm_head(peft_model.base_model.model, outputs=FUSED_OUTPUTS)
        if not any(isinstance(cb, PeftlabCallback) for cb in self.callback_handler.callbacks):
            self.add_callback(PeftlabCallback())
