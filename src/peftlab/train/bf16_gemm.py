"""bf16 matrix products through fp32 kernels, for CPUs that only emulate bf16 (AVX2 x86, no AVX512-BF16 or AMX).

A bf16 training step (bf16 autocast, bf16 frozen weights) on such a CPU reaches torch's generic bf16 GEMM, which was
39x slower than fp32 on an AVX2 EPYC (a LoRA step on SmolLM2: 83 s against 2.1 s; docs/training.md, Speed). What a
native bf16 GEMM computes (oneDNN on AVX512-BF16 or AMX) is: bf16 inputs, exact products, fp32 accumulation, one
rounding of the result to bf16. :class:`Fp32MatmulsForBf16` computes exactly that with fp32 kernels: it upcasts the
bf16 operands of every matrix product (``mm``, ``addmm``, ``bmm``, ``baddbmm``, forward and backward; the upcast of a
bf16 value to fp32 is exact), multiplies in fp32 and rounds the result to bf16 once. The results equal a native
kernel's up to the order of the fp32 sums, which also differs between native kernels (AVX512-BF16 vs AMX); every
other op (the elementwise and reduction ops, which AVX2 vectorizes in bf16 through fp32 anyway) runs as it would.

Upcasting a frozen weight at every product (forward, backward, every decoding step) reads and writes the whole
model each time; :class:`FrozenFp32Copies` keeps one fp32 copy of each registered frozen bf16 weight instead
(exact, as the upcast is; renewed when the weight changes in place), which costs 4 bytes a frozen parameter of memory.
``peftlab train`` and :class:`~peftlab.integrations.PeftlabTrainer` register the model's frozen weights.

While a context is entered, the CPU kernels of the four product ops are Python functions (a ``torch.library``
override, removed on exit), so a step makes one Python call per product and none for its other ops; where this
torch cannot remove such an override, a :class:`~torch.utils._python_dispatch.TorchDispatchMode` (one Python call per
op of any kind) computes the same bits. A ``run.compile`` model runs its blocks eagerly under it (the loop skips
compiling and says so, and its ``metrics.json`` records ``compiled: false``). ``PEFTLAB_BF16_MATMULS`` chooses
(:func:`matmul_choice`); ``peftlab train`` turns it on by :func:`wanted`.

    with fp32_matmuls_for_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections import Counter
from typing import Any, Callable, Iterable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
# the matrix products CPU autocast and autograd reach in a transformer step: Linear (mm / addmm, 2-D after the
# flattening of F.linear), eager attention's q @ k^T and p @ v (bmm) and their backward products
MATMUL_OPS = frozenset({_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default})


class FrozenFp32Copies:
    """fp32 copies of frozen bf16 weights, for :class:`Fp32MatmulsForBf16` to use instead of upcasting them at every
    product. A product operand is served from here when it is a registered weight or a transposed view of one that
    starts where the weight starts, so it has the strides the upcast would give it (and the product the same bits);
    anything else is upcast as before. A copy is made at the first product that reads the weight and made again
    when the weight has changed in place since (its version counter); a weight replaced through ``.data`` is no
    longer the registered storage and is upcast. An in-place change made through ``.data`` (``p.data.add_(...)``)
    does not move the version counter (autograd does not see it either): after one, call :meth:`drop_copies`.
    Holding a registered weight keeps its storage alive, so its address cannot be reused by another tensor."""

    def __init__(self, tensors: Iterable[torch.Tensor] = ()) -> None:
        self._entries: dict[int, list[Any]] = {}  # storage address -> [weight alias, fp32 copy or None, version]
        self.add(tensors)

    def add(self, tensors: Iterable[torch.Tensor]) -> int:
        """Register every bf16 tensor of ``tensors`` that does not require grad, has 2 or more dims and is
        contiguous from the start of its storage (a frozen weight). Returns how many were registered."""
        added = 0
        for tensor in tensors:
            if (tensor.dtype != torch.bfloat16 or tensor.requires_grad or tensor.dim() < 2
                    or not tensor.is_contiguous() or tensor.storage_offset() != 0):
                continue
            alias = tensor.detach()  # shares the storage and the version counter
            self._entries[alias.untyped_storage().data_ptr()] = [alias, None, -1]
            added += 1
        return added

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Memory held by the fp32 copies made so far."""
        return sum(entry[1].numel() * 4 for entry in self._entries.values() if entry[1] is not None)

    def clear(self) -> None:
        """Forget every registered weight and its copy."""
        self._entries.clear()

    def drop_copies(self) -> None:
        """Keep the registrations, drop the copies: each is made again, from the weight as it is, at its next product
        (after in-place changes that bypass the version counter, such as ``p.data.copy_(...)``)."""
        for entry in self._entries.values():
            entry[1], entry[2] = None, -1

    def lookup(self, value: torch.Tensor) -> torch.Tensor | None:
        """The fp32 copy of ``value`` (a bf16 tensor) as a view with ``value``'s strides, or None."""
        if not self._entries or value.storage_offset() != 0 or value.dim() != 2:
            return None
        entry = self._entries.get(value.untyped_storage().data_ptr())
        if entry is None:
            return None
        alias, copy, version = entry
        if value.numel() != alias.numel() or not (value.is_contiguous() or value.t().is_contiguous()):
            return None
        if copy is None or version != alias._version:
            entry[1], entry[2] = alias.float(), alias._version
            copy = entry[1]
        return copy.as_strided(value.size(), value.stride())


class Fp32MatmulsForBf16:
    """Every matrix product with a bf16 operand computed in fp32 and rounded to bf16 once (see the module doc),
    frozen weights registered in ``copies`` read from their fp32 copies. A context manager.

    ``implementation``: ``"kernels"`` replaces the CPU kernels of the four product ops while entered (one Python
    call per product; the other ops of a step never leave C++), ``"mode"`` is a
    :class:`~torch.utils._python_dispatch.TorchDispatchMode` (one Python call per op of any kind: a LoRA step on
    SmolLM2 took 5 % longer, greedy decoding 24 % longer; docs/training.md), ``"auto"`` the kernels where this torch
    can register and remove them. Both compute the same bits (``tests/test_bf16_gemm.py``). The kernels are the
    process's while entered: a product on another thread then runs torch's own kernel through the same Python call.
    Enter and exit a context on the same thread.

    ``counts`` tallies the products it rerouted, by op name, so a caller can check that it did something;
    ``counts["cached operands"]`` the operands served from ``copies``."""

    def __init__(self, copies: FrozenFp32Copies | None = None, implementation: str = "auto") -> None:
        if implementation not in ("auto", "kernels", "mode"):
            raise ValueError(f"implementation: expected auto, kernels or mode, got {implementation!r}")
        if implementation == "auto":
            implementation = "kernels" if _ProductKernels.supported() else "mode"
        self.implementation = implementation
        self.counts: Counter[str] = Counter()
        self.copies = copies
        self._mode: _ProductMode | None = None

    def __enter__(self) -> "Fp32MatmulsForBf16":
        if self.implementation == "kernels":
            _ProductKernels.push(self)
        else:
            self._mode = _ProductMode(self)
            self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._mode is not None:
            mode, self._mode = self._mode, None
            mode.__exit__(*exc)
        else:
            _ProductKernels.pop(self)

    def _upcast(self, value: Any) -> Any:
        if not (isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16):
            return value
        cached = self.copies.lookup(value) if self.copies is not None else None
        if cached is None:
            return value.float()
        self.counts["cached operands"] += 1
        return cached

    def reroutes(self, args: tuple) -> bool:
        """Whether a product with these operands goes through fp32 (one of them is bf16)."""
        return any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args)

    def product(self, name: str, func: Callable[..., torch.Tensor], args: tuple, kwargs: dict) -> torch.Tensor:
        """``func`` (a product op, or its ``out=`` variant with an empty ``out`` still to give) on the upcast
        operands, rounded to bf16 once."""
        self.counts[name] += 1
        args = tuple(self._upcast(a) for a in args)
        kwargs = {k: self._upcast(v) for k, v in kwargs.items()}
        return func(*args, **kwargs).to(torch.bfloat16)


class _ProductMode(TorchDispatchMode):
    """The ``"mode"`` implementation: every aten op passes through here, the bf16 products are rerouted."""

    def __init__(self, owner: Fp32MatmulsForBf16) -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMUL_OPS and self.owner.reroutes(args):
            return self.owner.product(func.__name__, func, args, kwargs)
        return func(*args, **kwargs)


class _ProductKernels:
    """The ``"kernels"`` implementation: while a context is entered, the CPU kernels of ``mm``, ``addmm``, ``bmm`` and
    ``baddbmm`` are Python functions (a ``torch.library`` override, removed when the last context exits) that
    compute through the ops' ``out=`` variants, the same C++ kernels as the ops themselves: a bf16 product in fp32
    for the innermost context entered on this thread, anything else as torch would."""

    _local = threading.local()  # .stack: the contexts entered on this thread, innermost last
    _lock = threading.Lock()
    _library: Any = None
    _users = 0

    @staticmethod
    def supported() -> bool:
        return hasattr(torch.library, "Library") and hasattr(torch.library.Library, "_destroy")

    @classmethod
    def push(cls, owner: Fp32MatmulsForBf16) -> None:
        with cls._lock:
            if cls._users == 0:
                cls._register()
            cls._users += 1
        cls._stack().append(owner)

    @classmethod
    def pop(cls, owner: Fp32MatmulsForBf16) -> None:
        stack = cls._stack()
        if owner in stack:
            stack.remove(owner)
        with cls._lock:
            cls._users -= 1
            if cls._users == 0:
                library, cls._library = cls._library, None
                library._destroy()  # torch's own CPU kernels again

    @classmethod
    def _stack(cls) -> list[Fp32MatmulsForBf16]:
        if not hasattr(cls._local, "stack"):
            cls._local.stack = []
        return cls._local.stack

    @classmethod
    def _register(cls) -> None:
        library = torch.library.Library("aten", "IMPL")
        with warnings.catch_warnings():  # "Overriding a previously registered kernel": that is the point
            warnings.simplefilter("ignore")
            for op in MATMUL_OPS:
                library.impl(op._schema.name.split("::")[1], cls._kernel(op), "CPU")
        cls._library = library

    @classmethod
    def _kernel(cls, op: Any) -> Callable[..., torch.Tensor]:
        name, out_variant = op.__name__, op.overloadpacket.out

        def with_out(*args: Any, **kwargs: Any) -> torch.Tensor:  # the op itself; out is resized by the kernel
            first = args[0]
            return out_variant(*args, **kwargs, out=torch.empty(0, dtype=first.dtype, device=first.device))

        def kernel(*args: Any, **kwargs: Any) -> torch.Tensor:
            stack = getattr(cls._local, "stack", None)
            owner = stack[-1] if stack else None
            if owner is not None and owner.reroutes(args):
                return owner.product(name, with_out, args, kwargs)
            return with_out(*args, **kwargs)

        return kernel


@contextlib.contextmanager
def fp32_matmuls_for_bf16(enabled: bool = True, copies: FrozenFp32Copies | None = None,
                          implementation: str = "auto") -> Iterator[Fp32MatmulsForBf16 | None]:
    """Inside: :class:`Fp32MatmulsForBf16` when ``enabled`` (yields it), with the frozen weights' fp32 ``copies``
    if given and its ``implementation`` (``auto``, ``kernels`` or ``mode``); else nothing changes (yields None)."""
    if not enabled:
        yield None
        return
    with Fp32MatmulsForBf16(copies, implementation) as mode:
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
