"""The shared method matrix. A new method joins every contract test by adding one MethodCase here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from peftlab import BitFitConfig, FullFinetuneConfig, LoraConfig, PeftConfig


@dataclass(frozen=True)
class MethodCase:
    id: str
    make_config: Callable[[str, bool], PeftConfig]  # (arch, init_weights) -> config
    identity_at_init: bool = True  # the method defines an exact identity at default init
    has_init_switch: bool = True  # init_weights=False gives a non-identity adapter
    mergeable: bool = True
    adapter_only: bool = True  # False: the "adapter" is the base model itself (full fine-tuning)
    archs: tuple[str, ...] = ("gpt2", "llama", "bert")  # architectures the case runs on

    def __str__(self) -> str:
        return self.id


def _lora(arch: str, init: bool) -> PeftConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], init_weights=init)


def _lora_all(arch: str, init: bool) -> PeftConfig:
    return LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", use_rslora=True, init_weights=init)


def _bitfit(arch: str, init: bool) -> PeftConfig:
    return BitFitConfig(add_missing_bias=(arch == "llama"), init_weights=init)


def _full(arch: str, init: bool) -> PeftConfig:
    return FullFinetuneConfig()


METHOD_CASES = [
    MethodCase("lora-qv", _lora),
    MethodCase("lora-all-rslora", _lora_all),
    MethodCase("bitfit", _bitfit),
    MethodCase("full", _full, has_init_switch=False, adapter_only=False),
]


def _discover() -> list[MethodCase]:
    """Cases from tests/cases_<method>.py files (each defines ``CASES: list[MethodCase]``)."""
    import importlib
    from pathlib import Path

    found = []
    for path in sorted(Path(__file__).parent.glob("cases_*.py")):
        found.extend(importlib.import_module(path.stem).CASES)
    return found


METHOD_CASES += _discover()
