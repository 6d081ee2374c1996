"""bf16 matrix products through fp32 kernels, for CPUs that only emulate bf16 (AVX2 x86, no AVX512-BF16 or AMX).

A bf16 training step (bf16 autocast, bf16 frozen weights) on such a CPU reaches torch's generic bf16 GEMM, which was
39x slower than fp32 on an AVX2 EPYC (a LoRA step on SmolLM2: 83 s against 2.1 s; docs/training.md, Speed). What a
native bf16 GEMM computes (oneDNN on AVX512-BF16 or AMX) is: bf16 inputs, exact products, fp32 accumulation, one
rounding of the result to bf16. :class:`Fp32MatmulsForBf16` computes exactly that with fp32 kernels: it upcasts the
bf16 operands of every matrix product (``mm``, ``addmm``, ``bmm``, ``baddbmm``, forward and backward; the upcast of a
bf16 value to fp32 is exact), multiplies in fp32 and rounds the result to bf16 once. The results equal a native
kernel's up to the order of the fp32 sums, which also differs between native kernels (AVX512-BF16 vs AMX); every
other op (the elementwise and reduction ops, which AVX2 vectorizes in bf16 through fp32 anyway) runs as it would.

It is a :class:`~torch.utils._python_dispatch.TorchDispatchMode`, so it costs a Python call per aten op, and
TorchDynamo does not trace under it: a ``run.compile`` model runs its blocks eagerly inside the mode (the loop
skips compiling and says so, and its ``metrics.json`` records ``compiled: false``). ``PEFTLAB_BF16_MATMULS`` chooses
(:func:`matmul_choice`); ``peftlab train`` turns the mode on by :func:`wanted`.

    with fp32_matmuls_for_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
"""
from __future__ import annotations

import contextlib
import os
from collections import Counter
from typing import Any, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
# the matrix products CPU autocast and autograd reach in a transformer step: Linear (mm / addmm, 2-D after the
# flattening of F.linear), eager attention's q @ k^T and p @ v (bmm) and their backward products
MATMUL_OPS = frozenset({_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default})


def _upcast(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:
        return value.float()
    return value


class Fp32MatmulsForBf16(TorchDispatchMode):
    """Every matrix product with a bf16 operand computed in fp32 and rounded to bf16 once (see the module doc).

    ``counts`` tallies the products it rerouted, by op name, so a caller can check that it did something."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMUL_OPS and any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
            self.counts[func.__name__] += 1
            out = func(*(_upcast(a) for a in args), **{k: _upcast(v) for k, v in kwargs.items()})
            return out.to(torch.bfloat16)
        return func(*args, **kwargs)


@contextlib.contextmanager
def fp32_matmuls_for_bf16(enabled: bool = True) -> Iterator[Fp32MatmulsForBf16 | None]:
    """Inside: :class:`Fp32MatmulsForBf16` when ``enabled`` (yields it), else nothing changes (yields None)."""
    if not enabled:
        yield None
        return
    with Fp32MatmulsForBf16() as mode:
        yield mode


ENV_VAR = "PEFTLAB_BF16_MATMULS"
CHOICES = ("auto", "fp32", "native")


def matmul_choice() -> str:
    """``PEFTLAB_BF16_MATMULS``: ``auto`` (default: fp32 kernels where the CPU only emulates bf16), ``fp32``
    (always, on a CPU), or ``native`` (never: torch's own bf16 kernels, emulated or not)."""
    from ..errors import ConfigError

    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ConfigError(f"{ENV_VAR}={value!r}: expected one of {', '.join(CHOICES)}")
    return value


def wanted(bf16: bool, device: str | torch.device = "cpu") -> bool:
    """Whether a bf16 run on ``device`` computes its matrix products with :func:`fp32_matmuls_for_bf16`: on a CPU,
    where it only emulates bf16 (or always, with ``PEFTLAB_BF16_MATMULS=fp32``); never on a GPU."""
    from ..hardware import bf16_matmul_native

    if not bf16 or torch.device(device).type != "cpu":
        return False
    choice = matmul_choice()
    return choice == "fp32" or (choice == "auto" and not bf16_matmul_native("cpu"))
