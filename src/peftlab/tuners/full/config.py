"""Full fine-tuning through the same API and training path as the PEFT methods."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...config import PeftConfig


@dataclass
class FullFinetuneConfig(PeftConfig):
    """Every base parameter trains. The "adapter" is the whole model: it is saved in full, it cannot be disabled,
    deleted or combined with another adapter, and merging is a no-op."""

    peft_type: ClassVar[str] = "FULL"

    train_embeddings: bool = True
    """Also train the token/position embeddings (and so a tied LM head)."""
