"""Adapter dropout that is cheap on the CPU.

``nn.Dropout`` on the CPU draws one random number per element (``bernoulli_``): for LoRA's dropout on the q and v
inputs of a 30-layer model that was ~11 % of a bf16 training step (`benchmarks/bench_train.py`). Here one 64-bit
draw gives four 16-bit uniforms, each compared with a threshold, which is ~4x cheaper. The drop probability is
rounded to a multiple of 1/65536 (0.1 -> 0.100006) and the kept values are scaled by 1 / (1 - that probability),
so the expectation is exactly preserved. On other devices, and for ``p`` outside (0, 1), it is ``F.dropout``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_LEVELS = 1 << 16  # 16-bit uniforms


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout of ``x`` with drop probability ``p`` (see the module docstring)."""
    if not training or p <= 0.0:
        return x
    dropped_levels = round(p * _LEVELS)
    if x.device.type != "cpu" or p >= 1.0 or not 0 < dropped_levels < _LEVELS:
        return F.dropout(x, p, training=True)
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    uniform16 = words.view(torch.int16)[:n].view(x.shape)  # int16 in [-32768, 32767], uniform
    keep = uniform16 >= (dropped_levels - _LEVELS // 2)  # P(keep) = 1 - dropped_levels / 65536
    scale = _LEVELS / (_LEVELS - dropped_levels)
    return x * keep * scale


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the cheaper CPU mask of :func:`dropout` (same ``p``/``train()``/``eval()`` behaviour)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)
