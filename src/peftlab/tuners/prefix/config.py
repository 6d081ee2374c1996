"""Prefix tuning config (Li & Liang 2021), in peft's field names, and the normalized spec every prefix method uses.

Plain prefix tuning and the gated, residual-reparameterized variant (:mod:`peftlab.tuners.gated_prefix`) run the
same code: a config is reduced to a :class:`PrefixSpec` with ``residual="none"``/``gate="none"`` for plain prefix
tuning, so the paper's 2x2 ablation (plain/residual x no gate/gate) is one code path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...config import PeftConfig
from ...errors import ConfigError

REPARAMETERIZATIONS = ("direct", "mlp", "R-a", "R-b", "R-c", "R-d")


@dataclass(frozen=True)
class PrefixSpec:
    """Everything the prefix layers need to know, whatever config class it came from."""

    num_virtual_tokens: int
    hidden: int  # MLP mid width m (R-d uses m = d instead)
    reparameterization: str  # one of REPARAMETERIZATIONS
    activation: str  # residual MLP activation (R-a, R-c)
    layer_norm: bool  # LayerNorm in the residual branch (R-a, R-c)
    layer_norm_gain: float  # initial LayerNorm weight (the residual branch's output scale at init)
    embedding_std: float  # init std of R-a / R-c's free vectors e_j
    direct_init: str  # R-b direct term init
    gate: str  # "none", "G-a", "G-b", "G-c"
    gate_application: str  # "kv", "values", "logit_bias", "separate"
    gate_init: str  # "one", "half", "zero"
    dropout: float
    position_offset: bool
    init_weights: bool

    @property
    def reparameterized(self) -> bool:
        """True when the trainable parameters are not the per-layer prefix itself."""
        return self.reparameterization != "direct"


@dataclass
class PrefixTuningConfig(PeftConfig):
    """Prefix tuning (Li & Liang 2021): every layer's attention also attends to l trainable key/value vectors per
    KV head, joined to the real keys/values inside the same softmax (not through past_key_values)."""

    peft_type: ClassVar[str] = "PREFIX_TUNING"

    num_virtual_tokens: int = 10
    """Prefix length l (Li & Liang's preseqlen; their E2E default is 10)."""
    encoder_hidden_size: int = 512
    """Mid width m of the reparameterization MLP (Li & Liang's mid_dim, default 512). peft's name."""
    prefix_projection: bool = True
    """Li & Liang's MLP reparameterization: embedding (l, d) -> Linear(d, m) -> tanh -> Linear(m, 2*L*d_kv). False
    trains the per-layer prefix directly (peft's default; Li & Liang report direct optimisation is unstable, hence
    True here). After training only the prefix itself is stored either way."""
    prefix_dropout: float = 0.0
    """Dropout on the prefix keys/values during training (Li & Liang's prefix_dropout, default 0.0)."""
    prefix_position_offset: bool = False
    """False: real tokens keep positions 0..N-1 (the prefix has no position). True: real tokens get l..l+N-1, what
    Li & Liang's code and HF peft do as a side effect of passing the prefix as past_key_values (use it to reproduce
    them or to match an export to peft exactly)."""

    def validate(self) -> None:
        name = type(self).__name__
        if self.num_virtual_tokens <= 0:
            raise ConfigError(f"{name}.num_virtual_tokens: the prefix length must be a positive integer (>= 1), "
                              f"got {self.num_virtual_tokens}")
        if self.encoder_hidden_size <= 0:
            raise ConfigError(f"{name}.encoder_hidden_size: the MLP width must be a positive integer, "
                              f"got {self.encoder_hidden_size}")
        if not 0.0 <= self.prefix_dropout < 1.0:
            raise ConfigError(f"{name}.prefix_dropout: expected a probability in [0, 1), got {self.prefix_dropout}")

    def prefix_spec(self) -> PrefixSpec:
        return PrefixSpec(
            num_virtual_tokens=self.num_virtual_tokens, hidden=self.encoder_hidden_size,
            reparameterization="mlp" if self.prefix_projection else "direct", activation="tanh", layer_norm=False,
            layer_norm_gain=1.0, embedding_std=0.02, direct_init="zeros", gate="none", gate_application="kv",
            gate_init="one", dropout=self.prefix_dropout,
            position_offset=self.prefix_position_offset, init_weights=True,
        )
