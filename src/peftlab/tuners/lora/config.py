"""LoRA config (Hu et al. 2021), in peft's field names."""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import ClassVar

from ...config import PeftConfig
from ...errors import ConfigError


@dataclass
class LoraConfig(PeftConfig):
    """Low-rank update ``W x + (lora_alpha / r) * B A dropout(x)`` on the target projections."""

    peft_type: ClassVar[str] = "LORA"

    r: int = 8
    """Rank of the update. The LoRA paper's E2E recipe uses 4."""
    lora_alpha: float = 8.0
    """Scaling numerator: the update is multiplied by lora_alpha / r (lora_alpha / sqrt(r) with use_rslora)."""
    lora_dropout: float = 0.0
    """Dropout on the adapter's input x (the LoRA paper uses 0.1 on E2E)."""
    target_modules: list[str] | str = field(default_factory=lambda: ["q", "v"])
    """Layout roles ("q", "k", "v", "o", "ffn_up", "ffn_down", "ffn_gate"), module names ("c_attn", "q_proj"),
    a regex over full module paths, or "all-linear". "q", "v" on GPT-2 adapt only the q and v slices of the fused
    c_attn, as loralib's MergedLinear does in the LoRA paper."""
    layers_to_transform: list[int] | None = None
    """Only adapt these block indices (default: all blocks)."""
    use_rslora: bool = False
    """Rank-stabilized scaling lora_alpha / sqrt(r) (Kalajdzievski 2023)."""
    init_weights: bool = True
    """True: A kaiming-uniform, B = 0 (exact identity at init). False: B random too (tests: non-identity)."""
    rank_pattern: dict[str, int] = field(default_factory=dict)
    """Per-module rank overrides: {module name or path suffix: r} (peft's rank_pattern)."""
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    """Per-module lora_alpha overrides: {module name or path suffix: alpha} (peft's alpha_pattern)."""
    fan_in_fan_out: bool = False
    """Informational, peft's name: set automatically for Conv1D (transposed) weights; kept for file compatibility."""
    bias: str = "none"
    """peft's bias option; only "none" is supported (use BitFit for bias training)."""

    def validate(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"LoraConfig.r: the rank must be a positive integer, got {self.r}")
        for name, rank in self.rank_pattern.items():
            if rank <= 0:
                raise ConfigError(f"LoraConfig.rank_pattern[{name!r}]: the rank must be positive, got {rank}")
        for name, alpha in [("lora_alpha", self.lora_alpha)] + [(f"alpha_pattern[{k!r}]", v)
                                                                 for k, v in self.alpha_pattern.items()]:
            if not math.isfinite(alpha):
                raise ConfigError(f"LoraConfig.{name}: expected a finite number, got {alpha} (the update is scaled by "
                                  "alpha / r, so an infinite alpha makes every output inf/NaN)")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"LoraConfig.lora_dropout: expected a probability in [0, 1), got {self.lora_dropout}")
        if self.bias != "none":
            raise ConfigError(f"LoraConfig.bias: only 'none' is supported, got {self.bias!r}; use BitFitConfig "
                              "(alone or as a second adapter) to train biases")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ConfigError("LoraConfig.target_modules: empty list; name at least one module or role")

    def rank_and_alpha(self, path: str) -> tuple[int, float]:
        """Rank and alpha of the module at ``path`` after rank_pattern/alpha_pattern overrides."""
        def lookup(pattern: dict, default):
            for key, value in pattern.items():
                if path == key or path.endswith("." + key):
                    return value
            return default

        return lookup(self.rank_pattern, self.r), lookup(self.alpha_pattern, self.lora_alpha)
