"""Solo Connection in the shared contract matrix (tests/test_method_contract.py).

The tiny models have 3 blocks. Both cases are exact identities at init *and* get non-zero gradients at init (a bare
``t_mode="schedule"`` at step 0 would be an identity whose every gradient is 0):

* ``solo-span``: span-2 plus the embeddings pair ((-1, 1), (0, 2)), rank 4, constant t = 1; identity because B = 0.
* ``solo-learned-t``: to-last plus the embeddings ((-1, 2), (0, 2), (1, 2)), one shared full-rank map with bias,
  t = schedule x learned (per-pair clamp thetas); identity because t = 0, trainable because B starts non-zero.

``init_weights=False`` gives random B and, for the second case, the homotopy's end (step = ramp_steps, t = 1).
"""
from __future__ import annotations

from method_cases import MethodCase

from peftlab import PeftConfig, SoloConnectionConfig


def _span(arch: str, init: bool) -> PeftConfig:
    return SoloConnectionConfig(topology="span-2", include_embeddings=True, rank=4, t_mode="constant",
                                init_weights=init)


def _learned(arch: str, init: bool) -> PeftConfig:
    return SoloConnectionConfig(topology="to-last", include_embeddings=True, rank=None, share_maps=True, bias=True,
                                t_mode="schedule*learned", ramp_steps=10, init_weights=init)


CASES = [
    MethodCase("solo-span", _span, mergeable=False),
    MethodCase("solo-learned-t", _learned, mergeable=False),
]
