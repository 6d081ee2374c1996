"""Prefix tuning and gated prefix tuning in the shared method matrix.

The matrix saves and reloads with ``adapter_model.safetensors == the adapter's parameters``, which holds for prefixes
trained directly (the stored form). Reparameterized variants (Li & Liang MLP, R-a..R-d) store the ejected prefix
instead and run the same properties in tests/test_prefix.py.
"""
from __future__ import annotations

from method_cases import MethodCase

from peftlab import GatedPrefixConfig, PeftConfig, PrefixTuningConfig


def _prefix_direct(arch: str, init: bool) -> PeftConfig:
    return PrefixTuningConfig(num_virtual_tokens=3, prefix_projection=False)  # no identity: init is irrelevant


def _gated_zero_gate(arch: str, init: bool) -> PeftConfig:
    # a gate that is exactly 0 at init on a separate prefix term: the base model, bit for bit
    return GatedPrefixConfig(num_virtual_tokens=3, residual="none", prefix_projection=False, gate="G-a",
                             gate_application="separate", gate_init="zero", init_weights=init)


def _gated_content_logit_bias(arch: str, init: bool) -> PeftConfig:
    return GatedPrefixConfig(num_virtual_tokens=4, residual="none", prefix_projection=False, gate="G-c",
                             gate_application="logit_bias", gate_init="half", prefix_position_offset=True,
                             init_weights=init)


CASES = [
    MethodCase("prefix-direct", _prefix_direct, identity_at_init=False, mergeable=False),
    MethodCase("gated-prefix-zero-gate", _gated_zero_gate, identity_at_init=True, mergeable=False),
    MethodCase("gated-prefix-content-logit-bias", _gated_content_logit_bias, identity_at_init=False,
               mergeable=False),
]
