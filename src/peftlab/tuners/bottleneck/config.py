"""Bottleneck adapter config: Houlsby et al. 2019, Pfeiffer et al. 2021, Lin et al. 2020 (AdapterL) and He et
al. 2022's parallel adapter, as one config with presets."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ...config import PeftConfig
from ...errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # after attention and after the FFN, plus trainable block LayerNorms (the spec's AdapterH count)
    "houlsby": dict(positions=["attn", "ffn"], placement="sequential", train_block_norms=True, activation="silu",
                    reduction_factor=16.0),
    # one adapter after the FFN
    "pfeiffer": dict(positions=["ffn"], placement="sequential", activation="relu", reduction_factor=16.0),
    # Lin et al. 2020 (the LoRA paper's AdapterL): one adapter after the FFN with its own input LayerNorm
    "lin": dict(positions=["ffn"], placement="sequential", adapter_norm=True, activation="relu",
                reduction_factor=16.0),
    # He et al. 2022: parallel to the FFN, ffn_bn 512, fixed scalar 4, "lora" init (up-projection zero)
    "parallel": dict(positions=["ffn"], placement="parallel", scaling=4.0, activation="relu", bottleneck_size=512),
}


@dataclass
class BottleneckConfig(PeftConfig):
    """Bottleneck adapters h + s * W_up f(W_down h): sequential on a sub-layer's output (Houlsby, Pfeiffer) or
    parallel to the sub-layer, reading its input (He et al.)."""

    peft_type: ClassVar[str] = "BOTTLENECK"

    positions: list[Literal["attn", "ffn"]] = field(default_factory=lambda: ["attn", "ffn"])
    """Sub-layers that get an adapter: "attn" (at the attention output projection) and/or "ffn" (at the FFN down
    projection). Houlsby uses both, Pfeiffer / Lin / He et al.'s FFN adapter only "ffn"."""
    placement: Literal["sequential", "parallel"] = "sequential"
    """"sequential": the adapter reads the sub-layer's output projection's output h and adds to it (before the
    residual add; for post-LN BERT before dropout + residual + LayerNorm). "parallel": the adapter reads the
    sub-layer's input (the input of q / ffn_up) and adds to the same place (He et al.)."""
    bottleneck_size: int | None = None
    """Bottleneck width r. None: hidden_size // reduction_factor."""
    reduction_factor: float = 16.0
    """r = hidden_size // reduction_factor when bottleneck_size is None (16 in adapter-transformers' presets;
    the Kernel-mix code's Pfeiffer baseline uses 7.11, i.e. r = 108 on d = 768)."""
    activation: Literal["relu", "gelu", "silu", "tanh", "identity"] = "relu"
    """Non-linearity f between down and up projection (ReLU in Pfeiffer and He et al.; the houlsby preset uses
    swish = silu, as adapter-transformers' Houlsby config)."""
    scaling: float = 1.0
    """Fixed scalar s on the adapter output (He et al.'s parallel adapter uses 4)."""
    dropout: float = 0.0
    """Dropout on the bottleneck activations f(W_down h), where He et al.'s Adapter_Layer puts it."""
    adapter_norm: bool = False
    """A new LayerNorm on the adapter's input, trained with it (Lin et al. 2020 = the LoRA paper's AdapterL: its
    count includes one LayerNorm, 2d, per adapter)."""
    train_block_norms: bool = False
    """Also train the block's own norms next to each adapter (the attention-side norm for "attn", the FFN-side norm
    for "ffn") as zero-initialised per-adapter deltas of their weight and bias: Houlsby et al. train the layer
    norms; the spec's AdapterH count L*[2(2dr + r + d) + 4d] includes them."""
    init_weights: bool = True
    """True: W_down kaiming-uniform, W_up and both biases zero (exact identity at init, He et al.'s "lora" init).
    False: W_up and the biases random too (a visibly non-identity adapter, tests)."""
    layers_to_transform: list[int] | None = None
    """Only adapt these block indices (default: all blocks)."""

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "BottleneckConfig":
        """A config for "houlsby", "pfeiffer", "lin" (AdapterL) or "parallel"; keyword arguments override fields."""
        if name not in PRESETS:
            raise ConfigError(f"BottleneckConfig.preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"BottleneckConfig.preset: unknown fields {unknown}")
        return cls(**{**PRESETS[name], **overrides})

    def validate(self) -> None:
        if not self.positions:
            raise ConfigError("BottleneckConfig.positions: empty; choose from ['attn', 'ffn']")
        if len(set(self.positions)) != len(self.positions):
            raise ConfigError(f"BottleneckConfig.positions: duplicates in {self.positions}")
        if self.bottleneck_size is not None and self.bottleneck_size < 1:
            raise ConfigError(f"BottleneckConfig.bottleneck_size: must be >= 1 (or None to use reduction_factor), "
                              f"got {self.bottleneck_size}")
        if not (self.reduction_factor > 0 and math.isfinite(self.reduction_factor)):
            raise ConfigError(f"BottleneckConfig.reduction_factor: must be a positive number, got "
                              f"{self.reduction_factor}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"BottleneckConfig.dropout: expected a probability in [0, 1), got {self.dropout}")
        if not math.isfinite(self.scaling):
            raise ConfigError(f"BottleneckConfig.scaling: must be a finite number, got {self.scaling}")

    def bottleneck_dim(self, hidden_size: int) -> int:
        """The bottleneck width r for a model of ``hidden_size``."""
        if self.bottleneck_size is not None:
            return self.bottleneck_size
        r = int(hidden_size // self.reduction_factor)
        if r < 1:
            raise ConfigError(f"BottleneckConfig.reduction_factor: {self.reduction_factor:g} leaves no bottleneck on "
                              f"hidden size {hidden_size}; allowed range (0, {hidden_size}]")
        return r


def bottleneck_parameter_count(config: BottleneckConfig, hidden_size: int, n_layers: int,
                               block_norm_params: int | None = None) -> int:
    """Trainable parameters on ``n_layers`` blocks of width d (methods.md §1.6): per adapter 2dr + r + d
    (W_down, b_down, W_up, b_up), + 2d with adapter_norm, + the block norm's parameters with train_block_norms
    (``block_norm_params``, default 2d: a LayerNorm's weight and bias; d for an RMSNorm)."""
    d = hidden_size
    r = config.bottleneck_dim(d)
    per_adapter = 2 * d * r + r + d + (2 * d if config.adapter_norm else 0)
    if config.train_block_norms:
        per_adapter += 2 * d if block_norm_params is None else block_norm_params
    return n_layers * len(config.positions) * per_adapter
