"""Speed options of the training loop: the attention kernel, bf16 frozen weights, the base model's dropout masks, and
torch.compile of the blocks.
Measured in ``benchmarks/bench_train.py``; see docs/training.md (Speed)."""
from __future__ import annotations

import warnings
from typing import Iterable

import torch

from ..config import PeftConfig
from ..errors import ConfigError
from ..generate import contiguous_head_input
from ..layout import get_layout
from ..registry import get_method
from .checkpoint import training_state_params


def resolve_bf16(choice: bool | str, device: str | torch.device | None = None) -> bool:
    """``run.bf16`` as a bool: ``auto`` is :func:`peftlab.hardware.bf16_matmul_native`. ``true`` where bf16 is only
    emulated warns (the run goes on as asked: a user may want bf16's numerics, or a machine like the one the results
    were made on)."""
    from ..hardware import bf16_matmul_native, describe, summary

    native = bf16_matmul_native(device)
    if choice == "auto":
        return native
    if choice and not native:
        from .bf16_gemm import ENV_VAR, wanted

        if wanted(True, device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")):
            print(f"[train] bf16 on a machine without native bf16 ({summary(describe())}): every bf16 matrix "
                  "product runs through an fp32 kernel and is rounded to bf16 once (peftlab.train.bf16_gemm; "
                  f"about 1.2x an fp32 step here; {ENV_VAR}=native for torch's emulated kernels)")
        else:
            warnings.warn(f"run.bf16=true on a machine without native bf16 ({summary(describe())}): its bf16 matrix "
                          "products are emulated and many times slower than fp32 (docs/training.md, Speed); "
                          "run.bf16=auto picks fp32 here", UserWarning, stacklevel=2)
    return bool(choice)


def fused_adamw_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether ``torch.optim.AdamW(fused=True)`` takes these tensors: floating point, on a device with the fused
    kernels (CPU and CUDA in the torch versions peftlab supports)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    devices = set(_get_fused_kernels_supported_devices())
    return all(p.is_floating_point() and p.device.type in devices for p in params)


def set_adamw_implementation(optimizer, fused: bool) -> None:
    """Make a loaded AdamW step with the fused kernel or the per-tensor loop. ``load_state_dict`` keeps the saved
    groups' choice and places each tensor's ``step`` by it (on the parameter's device for fused, else as saved, on
    the CPU): both are set here, so a checkpoint of either kind resumes with ``fused`` on any device."""
    for group in optimizer.param_groups:
        group["fused"] = fused
        if fused:
            group["foreach"] = None  # torch refuses fused together with foreach
        for param in group["params"]:
            step = optimizer.state.get(param, {}).get("step")
            if isinstance(step, torch.Tensor):
                optimizer.state[param]["step"] = step.to(dtype=torch.float32,
                                                         device=param.device if fused else "cpu")


def refuse_uncompilable(configs: Iterable[PeftConfig]) -> None:
    """Raise ConfigError for a method whose tuner does not declare ``supports_compile``."""
    for config in configs:
        if not get_method(config).tuner_cls.supports_compile:
            raise ConfigError(f"run.compile: method {config.peft_type} does not support torch.compile of the blocks "
                              "(tests/test_compile.py); set run.compile=false")


def decoding_attn_implementation(choice: str) -> str | None:
    """The attention kernel to decode with after training, when it differs from training's: with ``auto`` on the CPU,
    sdpa (decoding with a KV cache was ~15 % faster than eager there, with the same outputs), else None."""
    trained_with = resolve_attn_implementation(choice)
    return "sdpa" if choice == "auto" and trained_with != "sdpa" else None


def resolve_attn_implementation(choice: str) -> str:
    """``auto``: eager attention on the CPU, where it trained E2E batches faster than sdpa's flash kernel
    (``benchmarks/bench_train.py``), and sdpa on GPUs."""
    if choice != "auto":
        return choice
    return "sdpa" if torch.cuda.is_available() else "eager"


def cast_frozen_weights(peft_model, dtype: torch.dtype) -> int:
    """Cast every floating-point parameter outside the training state (the frozen base weights) to ``dtype``, in
    place; trainable tensors and the adapters' saved state keep theirs, and the LM head's input is made contiguous
    (:func:`peftlab.generate.contiguous_head_input`: a bf16 head copies its weight per prompt otherwise). Returns the
    number of elements cast."""
    keep = {id(p) for p in training_state_params(peft_model).values()}
    cast = 0
    for param in peft_model.parameters():
        if id(param) not in keep and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
            cast += param.numel()
    if dtype != torch.float32:
        contiguous_head_input(peft_model)
    return cast


def fast_base_dropout(model: torch.nn.Module) -> int:
    """Replace every plain ``nn.Dropout`` of ``model`` (with ``p > 0``, not in place) by peftlab's
    :class:`~peftlab.tuners.dropout.Dropout`: the same ``p`` and train/eval behaviour, but on the CPU its mask comes
    from four 16-bit uniforms per 64-bit random draw instead of one ``bernoulli_`` draw per element (``p`` rounded to
    a multiple of 1/65536, the kept values rescaled so the expectation is exact); other devices use ``F.dropout``.
    With torch's masks a GPT-2-small-shaped PEFT step took 2-6 % longer on the CPU (fp32;
    ``benchmarks/bench_methods.py``, ``+torch-dropout`` variants). A module whose ``p`` transformers only reads (an attention function's functional
    dropout of the attention probabilities) keeps that ``p`` and that path. Subclasses of ``nn.Dropout`` are left
    alone. Call it on the base model, before adapters are added. Returns the number of modules replaced."""
    from ..tuners.dropout import Dropout

    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout and not child.inplace and child.p > 0:
                fast = Dropout(child.p)
                fast.train(child.training)
                setattr(parent, name, fast)
                replaced += 1
    return replaced


def compile_blocks(peft_model) -> int:
    """``torch.compile`` every transformer block in place (regional compilation: one graph serves all blocks, shapes
    are dynamic, so the varying batch lengths of dynamic padding do not recompile). A method whose tuner says
    ``compile_scope = "outside-attention"`` (the prefix methods) gets each block's FFN and norms compiled instead,
    its attention eager. Returns the number of blocks."""
    refuse_uncompilable(peft_model.peft_config.values())
    targets = _compile_targets(peft_model)
    for module in (m for modules in targets for m in modules):
        module.compile(dynamic=True)
    return len(targets)


def uncompile_blocks(peft_model) -> None:
    """Undo :func:`compile_blocks` (decoding with a KV cache would recompile the blocks at every new length)."""
    for module in (m for modules in _compile_targets(peft_model) for m in modules):
        module._compiled_call_impl = None  # what nn.Module.compile sets


def compile_scope(peft_model) -> str:
    """``"block"``, or ``"outside-attention"`` when any of the model's adapters needs its attention eager."""
    scopes = {get_method(config).tuner_cls.compile_scope for config in peft_model.peft_config.values()}
    return "outside-attention" if "outside-attention" in scopes else "block"


def _compile_targets(peft_model) -> list[list[torch.nn.Module]]:
    """The modules to compile, per block: the block itself, or its FFN and norms (:func:`compile_scope`)."""
    from ..tuners.base import AdapterLayer

    layout = get_layout(peft_model.model)
    outside_attention = compile_scope(peft_model) == "outside-attention"
    roles = [layout.layout.ffn, layout.layout.attn_norm, layout.layout.ffn_norm]
    targets = []
    for block in layout.blocks():
        while isinstance(block, AdapterLayer) and not block.attached:  # a block wrapper (Solo) keeps its Python-side
            block = block.base_layer  # bookkeeping outside the graph: compile the transformers block it wraps
        if outside_attention:
            targets.append([block.get_submodule(path) for path in roles if path])
        else:
            targets.append([block])
    return targets
