"""Exchange LoRA adapters with Hugging Face peft.

* :func:`export_to_peft` writes a folder ``peft.PeftModel.from_pretrained`` loads with the same logits. A LoRA on
  k slices of a fused projection (q,v on GPT-2's ``c_attn``: k = 2) becomes one peft LoRA of rank k*r on the whole
  projection: ``lora_A`` is our stacked A (k*r, in) and ``lora_B`` (out, k*r) is block-structured (segment i's B in
  its own output rows and rank columns, zeros elsewhere), so ``B_peft @ A_peft`` equals our update exactly. The
  scale alpha/r must stay the same at rank k*r, so that module's ``lora_alpha`` is multiplied by k (by sqrt(k) with
  rsLoRA); modules whose rank or alpha differ from the global values go to peft's ``rank_pattern``/``alpha_pattern``.
* :func:`import_from_peft` loads a peft LoRA folder into a peftlab :class:`~peftlab.model.PeftModel`.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn

from .config import CONFIG_NAME
from .errors import AdapterError, AdapterLoadError
from .io import WEIGHTS_NAME, read_adapter_weights, write_safetensors
from .model import PREFIX, PeftModel, requires_grad_flags, restore_requires_grad
from .tuners.base import ModulesToSaveWrapper, iter_adapter_layers
from .tuners.lora import LoraConfig, LoraLayer

# prefix methods export_to_peft writes as peft PREFIX_TUNING (see peftlab.tuners.prefix.export)
_PREFIX_TYPES = ("PREFIX_TUNING", "GATED_PREFIX")
# peft LoRA options we cannot represent; importing a folder that sets them would change the math silently.
_UNSUPPORTED_PEFT_OPTIONS = {"use_dora": False, "lora_bias": False, "use_qalora": False}


def export_to_peft(peft_model: PeftModel, out_dir: str | Path, adapter_name: str | None = None) -> Path:
    """Write adapter ``adapter_name`` (default: the active one) as a HF peft LoRA folder (prefix adapters: a peft
    PREFIX_TUNING folder); returns the folder."""
    adapter_name = adapter_name or peft_model.active_adapter
    config = peft_model.peft_config.get(adapter_name)
    if config is not None and config.peft_type in _PREFIX_TYPES:  # prefix tuning: peft's prompt_embeddings layout
        from .tuners.prefix.export import export_prefix_to_peft

        return export_prefix_to_peft(peft_model, out_dir, adapter_name)
    if not isinstance(config, LoraConfig):
        kind = config.peft_type if config else "missing"
        raise AdapterError(f"export_to_peft: adapter {adapter_name!r} is {kind}; only LoRA adapters are exported")
    tensors: dict[str, torch.Tensor] = {}
    module_rank: dict[str, int] = {}
    module_alpha: dict[str, float] = {}
    transposed = set()
    for path, layer in iter_adapter_layers(peft_model.model):
        if isinstance(layer, ModulesToSaveWrapper) and adapter_name in layer.modules_to_save:
            for rel, param in layer.modules_to_save[adapter_name].named_parameters():
                tensors[f"{PREFIX}{path}.{rel}"] = param.detach()
            continue
        if not isinstance(layer, LoraLayer) or adapter_name not in layer.lora_A:
            continue
        A = layer.lora_A[adapter_name].weight.detach()
        B = layer.lora_B[adapter_name].weight.detach()
        r = B.shape[1]
        k = max(1, len(layer.segments[adapter_name]))
        if layer.segments[adapter_name]:
            B_full = B.new_zeros(layer.out_features, k * r)
            for a_rows, b_rows, out_slice in layer._segment_rows(adapter_name):
                B_full[out_slice, a_rows] = B[b_rows]  # segment i: its output rows x its rank columns
            B = B_full
        scale = layer.scaling[adapter_name]
        module_rank[path] = k * r
        module_alpha[path] = scale * math.sqrt(k * r) if config.use_rslora else scale * k * r
        tensors[f"{PREFIX}{path}.lora_A.weight"] = A
        tensors[f"{PREFIX}{path}.lora_B.weight"] = B
        if layer.transposed:
            transposed.add(path)
    if not module_rank:
        raise AdapterError(f"export_to_peft: adapter {adapter_name!r} has no LoRA layers")
    global_r = Counter(module_rank.values()).most_common(1)[0][0]
    global_alpha = Counter(module_alpha.values()).most_common(1)[0][0]
    peft_config = {
        "peft_type": "LORA",
        "task_type": config.task_type,
        "base_model_name_or_path": config.base_model_name_or_path,
        "revision": config.revision,
        "inference_mode": True,
        "r": global_r,
        "lora_alpha": global_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": sorted(module_rank),
        "fan_in_fan_out": bool(transposed),
        "bias": "none",
        "use_rslora": config.use_rslora,
        "modules_to_save": config.modules_to_save,
        "init_lora_weights": True,
        "rank_pattern": {p: v for p, v in module_rank.items() if v != global_r},
        "alpha_pattern": {p: v for p, v in module_alpha.items() if v != global_alpha},
    }
    out_dir = Path(out_dir)
    write_safetensors(tensors, out_dir / WEIGHTS_NAME)
    (out_dir / CONFIG_NAME).write_text(json.dumps(peft_config, indent=2) + "\n", encoding="utf-8")
    return out_dir


def import_from_peft(model: nn.Module, peft_dir: str | Path, adapter_name: str = "default",
                     is_trainable: bool = False) -> PeftModel:
    """Load a HF peft LoRA folder onto ``model`` as a peftlab adapter (same keys, same math)."""
    peft_dir = Path(peft_dir)
    config_path = peft_dir / CONFIG_NAME
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterLoadError(f"{config_path}: not found; expected a peft adapter folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterLoadError(f"{config_path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise AdapterLoadError(f"{config_path}: expected a JSON object (a peft adapter config), got a "
                               f"{type(data).__name__}")
    if data.get("peft_type") != "LORA":
        raise AdapterLoadError(f"{config_path}: peft_type {data.get('peft_type')!r}; import_from_peft reads LORA")
    for option, neutral in _UNSUPPORTED_PEFT_OPTIONS.items():
        if data.get(option, neutral) != neutral:
            raise AdapterLoadError(f"{config_path}: {option}={data[option]!r} is not supported by peftlab's LoRA")
    if data.get("layers_pattern"):
        raise AdapterLoadError(f"{config_path}: layers_pattern is not supported; use full module paths")
    config = LoraConfig(
        r=data.get("r", 8), lora_alpha=float(data.get("lora_alpha", 8)), lora_dropout=data.get("lora_dropout", 0.0),
        target_modules=data["target_modules"], layers_to_transform=_as_list(data.get("layers_to_transform")),
        use_rslora=bool(data.get("use_rslora", False)), rank_pattern=data.get("rank_pattern") or {},
        alpha_pattern={k: float(v) for k, v in (data.get("alpha_pattern") or {}).items()},
        fan_in_fan_out=bool(data.get("fan_in_fan_out", False)),
        modules_to_save=_existing_modules(model, data.get("modules_to_save")),
        task_type=data.get("task_type"), base_model_name_or_path=data.get("base_model_name_or_path"),
        inference_mode=not is_trainable,
    )
    tensors, path = read_adapter_weights(peft_dir)
    tensors = {_strip_peft_key(k, adapter_name): v for k, v in tensors.items()}
    flags = requires_grad_flags(model)
    peft_model = PeftModel(model, config, adapter_name)
    try:
        peft_model.set_peft_model_state_dict(tensors, adapter_name, source=str(path))
    except BaseException:
        peft_model.unload()
        restore_requires_grad(flags)
        raise
    return peft_model


def _existing_modules(model: nn.Module, names: list[str] | None) -> list[str] | None:
    """peft lists candidate head names (e.g. ["classifier", "score"]) and keeps those the model has."""
    if not names:
        return None
    paths = [p for p, _ in model.named_modules()]
    kept = [n for n in names if any(p == n or p.endswith("." + n) for p in paths)]
    return kept or None


def _as_list(value) -> list[int] | None:
    if value is None:
        return None
    return [value] if isinstance(value, int) else list(value)


def _strip_peft_key(key: str, adapter_name: str) -> str:
    """peft files normally hold names without the adapter; tolerate ``.modules_to_save.`` forms from older peft."""
    return key.replace(".modules_to_save.", ".").replace(f".{adapter_name}.", ".")
