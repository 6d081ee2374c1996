"""BitFit config (Ben Zaken et al. 2022): train bias terms only."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...config import PeftConfig


@dataclass
class BitFitConfig(PeftConfig):
    """Bias terms only. Each adapted bias gets a per-adapter additive delta (zero at init), so several BitFit
    adapters can coexist, `disable_adapter` is exact and merging adds the delta into the base bias."""

    peft_type: ClassVar[str] = "BITFIT"

    target_modules: list[str] | str | None = None
    """Which biases: None = every bias in the transformer body (attention and FFN projections, norms, embedding
    norm); or layout roles / module names / a regex, as for LoRA (e.g. ["q", "v", "ffn_up"])."""
    include_norms: bool = True
    """With target_modules=None, also train LayerNorm biases (BitFit trains all biases)."""
    add_missing_bias: bool = False
    """Give targeted projections that have no bias (Llama-family) a new zero bias. Without it, a model with no
    biases has nothing to train and get_peft_model raises an error."""
    layers_to_transform: list[int] | None = None
    """Only adapt these block indices (default: all blocks)."""
    init_weights: bool = True
    """True: deltas start at 0 (identity). False: small random deltas (tests)."""
