"""Bottleneck adapters in the shared contract matrix (tests/method_cases.py)."""
from __future__ import annotations

from method_cases import MethodCase

from peftlab import BottleneckConfig, PeftConfig


def _houlsby(arch: str, init: bool) -> PeftConfig:
    # sequential after attention and FFN, with trainable block norms (LayerNorm on GPT-2/BERT, RMSNorm on Llama)
    return BottleneckConfig.preset("houlsby", bottleneck_size=4, init_weights=init)


def _parallel(arch: str, init: bool) -> PeftConfig:
    # He et al.'s parallel adapter on both sub-layers, with adapter LayerNorms and dropout
    return BottleneckConfig.preset("parallel", positions=["attn", "ffn"], bottleneck_size=6, adapter_norm=True,
                                   dropout=0.1, init_weights=init)


CASES = [
    MethodCase("bottleneck-houlsby", _houlsby, mergeable=False),
    MethodCase("bottleneck-parallel", _parallel, mergeable=False),
]
