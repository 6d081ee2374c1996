"""Config of prefix tuning with residual reparameterization and a prefix-token gate (Jung, Hwang & Lee, IEEE Access
2025). Only the abstract is available: everything below the title is reconstructed ([RECON], spec section 4.2) and
every unknown is a knob with a documented default (docs/methods/gated-prefix.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ...errors import ConfigError
from ..prefix.config import PrefixSpec, PrefixTuningConfig


@dataclass
class GatedPrefixConfig(PrefixTuningConfig):
    """Prefix tuning with a residual reparameterization (R-a..R-d) and per-layer, per-token gates (G-a..G-c).
    residual="none" and gate="none" is plain prefix tuning; the 2x2 ablation is these two switches."""

    peft_type: ClassVar[str] = "GATED_PREFIX"

    residual: Literal["none", "R-a", "R-b", "R-c", "R-d"] = "R-a"
    """[RECON] Residual reparameterization. R-a: free vector e_j in R^(2*L*d_kv) + LN(MLP(e_j)) (Residual Prompt
    Tuning style, the spec's default). R-b: Li&Liang MLP + a directly trained term. R-c: per-layer e_j + a residual
    MLP shared by all layers. R-d: W2 (e + tanh(W1 e + b1)) + b2 with m = d. "none": Li&Liang MLP if
    prefix_projection, else the prefix itself."""
    residual_activation: Literal["relu", "tanh", "gelu"] = "relu"
    """[RECON] Activation inside the R-a / R-c residual MLP (ReLU is ResidualPrompts' ResMLP default)."""
    residual_layer_norm: bool = True
    """[RECON] LayerNorm on the R-a / R-c residual branch (on in ResidualPrompts' ResMLP)."""
    residual_ln_gain: float = 0.25
    """[RECON] Initial weight (gain) of that LayerNorm, i.e. the rms of every prefix coordinate at init (the LN
    output has unit variance, so gain 1 gives keys and values of rms 1 in every layer)."""
    residual_embedding_std: float = 0.02
    """[RECON] Init std of R-a / R-c's free vectors e_j (N(0, std^2))."""
    direct_init: Literal["zeros", "normal"] = "zeros"
    """[RECON] Init of R-b's direct term: zeros, so training starts from plain Li&Liang prefix tuning."""
    gate: Literal["none", "G-a", "G-b", "G-c"] = "G-a"
    """[RECON] Gate over prefix tokens, per layer. G-a: one free logit per layer and token. G-b: l*softmax over a
    layer's tokens ("balanced"). G-c: content gate from the prefix vector itself. "none": no gate."""
    gate_application: Literal["kv", "values", "logit_bias", "separate"] = "kv"
    """[RECON] Where the gate acts: "kv" scales prefix keys and values (spec default); "values" only values;
    "logit_bias" adds log g to the prefix columns of the attention logits; "separate" is a separate softmax over the
    prefix whose gated output is added to the attention output (LLaMA-Adapter style; with gate_init="zero" the
    adapter is exactly the base model at init)."""
    gate_init: Literal["one", "half", "zero"] = "one"
    """[RECON] Gate squashing and its value at init: "one" g = 2*sigmoid (g = 1: starts as the ungated prefix),
    "half" g = sigmoid (g = 0.5), "zero" g = tanh (g = 0; only with gate_application="separate"). G-b is always 1
    at init ("one")."""
    init_weights: bool = True
    """True: gates start at gate_init. False: random gates (tests: a zero-init gate becomes visibly non-identity)."""

    def validate(self) -> None:
        super().validate()
        if self.gate == "none":
            return
        if self.gate == "G-b" and self.gate_init != "one":
            raise ConfigError(f"GatedPrefixConfig.gate_init: G-b (l*softmax) is 1 for every token at init; allowed "
                              f"'one', got {self.gate_init!r}")
        if self.gate_init == "zero" and self.gate_application != "separate":
            raise ConfigError(
                "GatedPrefixConfig.gate_init: 'zero' is allowed only with gate_application='separate' (got "
                f"{self.gate_application!r}): zero-gated keys still take softmax mass, and log 0 cannot train; "
                "allowed with this application: 'one', 'half'")

    def prefix_spec(self) -> PrefixSpec:
        if self.residual == "none":
            reparameterization = "mlp" if self.prefix_projection else "direct"
        else:
            reparameterization = self.residual
        return PrefixSpec(
            num_virtual_tokens=self.num_virtual_tokens, hidden=self.encoder_hidden_size,
            reparameterization=reparameterization, activation=self.residual_activation,
            layer_norm=self.residual_layer_norm,
            layer_norm_gain=self.residual_ln_gain,
            embedding_std=self.residual_embedding_std, direct_init=self.direct_init, gate=self.gate,
            gate_application=self.gate_application, gate_init=self.gate_init, dropout=self.prefix_dropout,
            position_offset=self.prefix_position_offset, init_weights=self.init_weights,
        )
