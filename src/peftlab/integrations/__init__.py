"""peftlab inside other training engines: ``transformers.Trainer`` / TRL (:mod:`.trainer`)."""
from __future__ import annotations

from .trainer import PeftlabCallback, PeftlabTrainer, find_peft_model

__all__ = ["PeftlabCallback", "PeftlabTrainer", "find_peft_model"]
