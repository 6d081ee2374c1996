"""Kernel-mix in the shared contract matrix (tests/method_cases.py).

The method's default ("houlsby") init perturbs the model at step 0, so the identity contract uses the "he" option
(A random, B's and biases zero: identity, yet gradients reach every A through B once B moves).
"""
from __future__ import annotations

from method_cases import MethodCase

from peftlab import KernelMixConfig, PeftConfig


def _kernel_mix(arch: str, init: bool) -> PeftConfig:
    return KernelMixConfig(r_q=2, r_v=3, s_q=4, s_v=2, dropout=0.0, init_scheme="he", init_weights=init)


def _kernel_mix_bandwidth(arch: str, init: bool) -> PeftConfig:
    # per-head "kernel" bandwidth on q and k, O-head rank of its own, dropout on (train-mode tests use one seed)
    return KernelMixConfig(r_q=1, r_v=2, s_q=0, s_v=3, r_o=1, s_o=0, dropout=0.1, init_scheme="he",
                           bandwidth="kernel", bandwidth_per_head=True, init_weights=init)


CASES = [
    MethodCase("kernel-mix", _kernel_mix, mergeable=False),
    MethodCase("kernel-mix-bandwidth", _kernel_mix_bandwidth, mergeable=False),
]
