"""What this machine is, for the choices that depend on it and for the record of every run.

bf16 on a CPU is fast only where the CPU multiplies bf16 natively (x86: AVX512-BF16 or AMX; Arm: the BF16
extension). Elsewhere oneDNN emulates it, and bf16 training is several times *slower* than fp32: on an AVX2-only
AMD EPYC, a (720 x 576) x (576 x 1536) product ran at ~8 GFLOP/s in bf16 against ~46 in fp32, while on an
AVX512-BF16 EPYC the same products ran at ~500-900 GFLOP/s in bf16 against ~160-220 in fp32 (docs/training.md,
Speed). ``run.bf16=auto`` uses :func:`bf16_matmul_native` to choose, and every run records :func:`describe` in its
``meta.json`` (and the quality suite in its result lines), so numbers from different machines are never mixed up.
(torch is imported inside the functions: the docs generator reads :func:`summary` without it.)
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux), else {}."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name() -> str:
    """The CPU's model name (``AMD EPYC``, ``Intel(R) Xeon(R) ...``), or the machine type where unknown."""
    info = _cpuinfo()
    return info.get("model name") or info.get("Model name") or platform.processor() or platform.machine()


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels run with (``AVX2``, ``AVX512``, ``DEFAULT``, ...)."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # an older torch, or a build without it
        return "unknown"


def cpu_bf16_native() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware: x86 AVX512-BF16 or AMX, Arm's BF16 extension."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # a private helper that changed: fall through to the flags
            pass
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def bf16_matmul_native(device: "str | torch.device | None" = None) -> bool:
    """Whether bf16 matrix products are fast on ``device`` (default: CUDA when available, else the CPU): a CUDA
    device that supports bf16, or a CPU with :func:`cpu_bf16_native`."""
    import torch

    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":  # Ampere or newer; older GPUs (T4, V100) emulate it
        if not torch.cuda.is_available():
            return False
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # a torch without the argument
            return bool(torch.cuda.is_bf16_supported())
    return cpu_bf16_native()


def describe() -> dict[str, Any]:
    """The machine in a few JSON-friendly fields: CPU name, its vector ISA, native bf16, CPUs, torch threads, and the
    CUDA device (None without one)."""
    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cpu_capability": cpu_capability(), "cpu_bf16_native": cpu_bf16_native(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cuda": cuda}


def summary(info: dict[str, Any]) -> str:
    """One line for a :func:`describe` dict: ``AMD EPYC (AVX2, bf16 emulated), 2 CPUs``."""
    bf16 = "bf16 native" if info.get("cpu_bf16_native") else "bf16 emulated"
    text = f"{info.get('cpu', '?')} ({info.get('cpu_capability', '?')}, {bf16}), {info.get('cpus', '?')} CPUs"
    return text + (f", CUDA {info['cuda']}" if info.get("cuda") else "")
