"""Prefix tuning tuner: attach a :class:`PrefixLayer` to every block's attention; save the ejected prefix.

Files of a prefix adapter:

* ``adapter_model.safetensors``: what inference needs, the ejected prefix ``<attention path>.prefix.key`` /
  ``.prefix.value`` (n_kv_heads, l, head_dim) per layer, plus the gates' own parameters (from which the gate values
  follow exactly) and any ``modules_to_save``. Loading with ``is_trainable=False`` builds exactly this form.
* ``reparameterization.safetensors`` (only for reparameterized adapters): every trainable tensor (encoder, gates,
  modules_to_save), so ``from_pretrained(..., is_trainable=True)`` resumes training where it stopped, which peft's
  ejected prefix cannot do.

Positions. ``prefix_position_offset``: real tokens at positions l..l+N-1, as in Li & Liang's code and HF peft.

By default peftlab leaves positions alone (real tokens keep 0..N-1: the prefix is not a sequence position). When
the prefix is passed as ``past_key_values`` (Li & Liang, peft), the model counts the l cached prefix entries as seen
tokens and shifts every real position by l. :class:`PositionOffsetHook` reproduces that, without a cache, through a forward
pre-hook on the transformer body (``GPT2Model``, ``LlamaModel``, ``BertModel``...) that adds l to ``position_ids``
(building the default ``past_length + arange(N)`` first when the caller passed none). Generation passes its own
position ids (from the attention mask, so left padding is handled), and those are shifted the same way.

The hook finds the prefix layer by path on every call, so it follows the model through ``deepcopy``; it is inert
while no active adapter asks for the offset, and removes itself once the prefix layer is gone (unload).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open

from ...errors import AdapterError, AdapterLoadError, ConfigError, UnsupportedModelError
from ...layout import ResolvedLayout
from ...registry import register_method
from ..base import SAVED_KEY_PREFIX as PREFIX
from ..base import Tuner, iter_adapter_layers
from .config import PrefixTuningConfig
from .encoder import build_encoder
from .layer import CHILD_NAME, PrefixLayer, check_attention_module

REPARAMETERIZATION_NAME = "reparameterization.safetensors"


def prefix_layers(model: nn.Module, adapter_name: str) -> list[tuple[str, PrefixLayer]]:
    """(path, layer) of every prefix layer holding ``adapter_name``, in block order."""
    found = [(p, layer) for p, layer in iter_adapter_layers(model)
             if isinstance(layer, PrefixLayer) and layer.has_adapter(adapter_name)]
    return sorted(found, key=lambda item: item[1].layer_index)


def _check_budget(model: nn.Module, config: PrefixTuningConfig) -> None:
    """l must leave room for at least one real position (needed with the offset, and for peft export)."""
    budget = getattr(model.config, "max_position_embeddings", None)
    if isinstance(budget, int) and config.num_virtual_tokens >= budget:
        raise ConfigError(
            f"{type(config).__name__}.num_virtual_tokens: {config.num_virtual_tokens} does not fit the model's "
            f"position budget (max_position_embeddings={budget}); allowed 1..{budget - 1}, so that at least one real "
            "token has a position when the prefix occupies positions (prefix_position_offset, peft export)")


@register_method
class PrefixTuningTuner(Tuner):
    config_cls = PrefixTuningConfig
    method_name = "prefix"
    mergeable = False
    # The per-forward prefix reaches the attention outside the block's inputs: a compiled block kept a stale prefix
    # after an optimizer step (measured: losses diverged from eager at step 2). So only the FFN and the norms are
    # compiled, and the attention (with the prefix) runs eager (tests/test_compile.py).
    compile_scope = "outside-attention"

    @classmethod
    def inject(cls, model: nn.Module, config: PrefixTuningConfig, adapter_name: str, layout: ResolvedLayout,
               trainable: bool) -> None:
        spec = config.prefix_spec()
        _check_budget(model, config)
        shape = layout.shape
        encoder = None
        if spec.reparameterized and not config.inference_mode:  # inference: the ejected prefix only (as peft)
            encoder = build_encoder(spec, layout.n_blocks, shape.n_kv_heads, shape.head_dim, shape.hidden_size)
        owner_path = None
        for index in range(layout.n_blocks):
            path = layout.block_path(index, layout.layout.attention)
            attention = model.get_submodule(path)
            layer = getattr(attention, CHILD_NAME, None)
            if not isinstance(layer, PrefixLayer):
                check_attention_module(attention, path)
                layer = PrefixLayer(attention, index, shape)
                attention.add_module(CHILD_NAME, layer)
            layer.add_adapter(adapter_name, spec, encoder, trainable)
            owner_path = owner_path or f"{path}.{CHILD_NAME}"
        body = model.get_submodule(layout.body_prefix) if layout.body_prefix else model
        relative = owner_path[len(layout.body_prefix) + 1:] if layout.body_prefix else owner_path
        if spec.position_offset:
            PositionOffsetHook.install(body, relative)
        if encoder is not None and encoder.per_pass:
            PrefixPassHook.install(body, relative)

    @classmethod
    def describe(cls, config: PrefixTuningConfig) -> str:
        spec = config.prefix_spec()
        how = {"direct": "trained directly", "mlp": f"Li&Liang MLP (m={spec.hidden}) while training",
               "R-a": f"R-a residual MLP (m={spec.hidden}) while training",
               "R-b": f"Li&Liang MLP (m={spec.hidden}) + direct term while training",
               "R-c": f"R-c per-layer residual (m={spec.hidden}) while training",
               "R-d": "R-d inner residual (m=d) while training"}[spec.reparameterization]
        gate = "" if spec.gate == "none" else f" + {spec.gate} gate ({spec.gate_application})"
        return (f"prefix K/V l={spec.num_virtual_tokens} per layer and KV head, {how}{gate}; stored: 2*L*d_kv*l"
                f"{' + gate' if gate else ''} (prefix_parameter_counts)")

    # --- saving and loading --------------------------------------------------------------------------------------
    @classmethod
    def _reparameterized(cls, peft_model, adapter_name: str) -> list[tuple[str, PrefixLayer]]:
        layers = prefix_layers(peft_model.model, adapter_name)
        return layers if layers and layers[0][1].is_reparameterized(adapter_name) else []

    @classmethod
    def ejected_state(cls, peft_model, adapter_name: str) -> dict[str, torch.Tensor]:
        """The inference form of the adapter under its saved keys (encoder replaced by per-layer prefixes)."""
        layers = prefix_layers(peft_model.model, adapter_name)
        encoders = tuple(f"{PREFIX}{path}.encoder." for path, _ in layers)
        state = {k: p.detach() for k, p in peft_model.adapter_parameters(adapter_name).items()
                 if not k.startswith(encoders)}
        with torch.no_grad():
            for path, layer in layers:
                key, value = layer.layer_kv(adapter_name)
                state[f"{PREFIX}{path}.key"] = key.detach().clone()
                state[f"{PREFIX}{path}.value"] = value.detach().clone()
        return state

    @classmethod
    def state_for_save(cls, peft_model, adapter_name: str) -> dict[str, torch.Tensor] | None:
        if not cls._reparameterized(peft_model, adapter_name):
            return None  # the parameters are the prefix itself
        return cls.ejected_state(peft_model, adapter_name)

    @classmethod
    def extra_files_for_save(cls, peft_model, adapter_name: str) -> dict[str, dict[str, torch.Tensor]]:
        if not cls._reparameterized(peft_model, adapter_name):
            return {}
        return {REPARAMETERIZATION_NAME: {k: p.detach() for k, p in
                                          peft_model.adapter_parameters(adapter_name).items()}}

    @classmethod
    def state_for_load(cls, peft_model, adapter_name: str, directory, tensors: dict[str, torch.Tensor], path):
        if not cls._reparameterized(peft_model, adapter_name):
            return tensors, path
        reparam_path = Path(directory) / REPARAMETERIZATION_NAME
        if not reparam_path.is_file():
            raise AdapterLoadError(
                f"{reparam_path}: not found. {Path(directory)} holds only the ejected prefix: load it with "
                "is_trainable=False for inference, or set prefix_projection=False / residual='none' in the config "
                "to keep training the prefix itself")
        try:
            with safe_open(str(reparam_path), framework="pt") as handle:
                reparam = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise AdapterLoadError(f"{reparam_path}: not a readable safetensors file: {err}") from None
        peft_model.set_peft_model_state_dict(reparam, adapter_name, source=str(reparam_path))
        ejected = cls.ejected_state(peft_model, adapter_name)  # both files must describe the same adapter
        for key, tensor in tensors.items():
            if key not in ejected or not torch.allclose(ejected[key].float(), tensor.float(), atol=1e-5, rtol=1e-4):
                raise AdapterLoadError(f"{reparam_path} does not reproduce {path} ({key} differs): the two files "
                                       "come from different saves")
        return reparam, reparam_path


@dataclass(frozen=True)
class PrefixParameterCounts:
    """Parameter accounting of one prefix adapter (``modules_to_save`` heads excluded)."""

    training_time: int  # what the optimizer updates: reparameterization (or direct prefix) + gates
    stored: int  # what inference needs: 2 * L * d_kv * l + gate parameters
    prefix: int  # 2 * L * d_kv * l
    gate: int  # L * l (G-a, G-b) or L * (2 d_kv + 1) (G-c)
    reparameterization: int  # encoder parameters (0 when the prefix is trained directly or loaded for inference)


def prefix_parameter_counts(peft_model, adapter_name: str | None = None) -> PrefixParameterCounts:
    """Training-time and stored parameter counts of a prefix adapter (default: the active one)."""
    adapter_name = adapter_name or peft_model.active_adapter
    layers = prefix_layers(peft_model.model, adapter_name)
    if not layers:
        raise AdapterError(f"prefix_parameter_counts: adapter {adapter_name!r} is not a prefix adapter")
    spec = layers[0][1].specs[adapter_name]
    prefix = sum(2 * layer.n_kv_heads * layer.head_dim * spec.num_virtual_tokens for _, layer in layers)
    gate = sum(p.numel() for _, layer in layers if adapter_name in layer.gate
               for p in layer.gate[adapter_name].parameters())
    owner = layers[0][1]
    encoder = owner._shared.get(adapter_name)
    reparam = sum(p.numel() for p in encoder.parameters()) if encoder is not None else 0
    training = (reparam if encoder is not None else prefix) + gate
    return PrefixParameterCounts(training_time=training, stored=prefix + gate, prefix=prefix, gate=gate,
                                 reparameterization=reparam)


# --- prefix_position_offset --------------------------------------------------------------------------------------
_ARGUMENTS = ("input_ids", "inputs_embeds", "past_key_values", "position_ids")


class PositionOffsetHook:
    """Forward pre-hook (with kwargs) on the body; ``owner_path`` is block 0's prefix layer, relative to the body."""

    def __init__(self, body: nn.Module, owner_path: str) -> None:
        params = list(inspect.signature(body.forward).parameters)
        if "position_ids" not in params:
            raise UnsupportedModelError(
                f"prefix_position_offset: {type(body).__name__}.forward takes no position_ids; use "
                "prefix_position_offset=False (real tokens keep positions 0..N-1)")
        self.owner_path = owner_path
        self.index = {name: params.index(name) for name in _ARGUMENTS if name in params}
        body.register_forward_pre_hook(self, with_kwargs=True)

    @staticmethod
    def install(body: nn.Module, owner_path: str) -> None:
        if not any(isinstance(hook, PositionOffsetHook) for hook in body._forward_pre_hooks.values()):
            PositionOffsetHook(body, owner_path)

    def _argument(self, name: str, args: tuple, kwargs: dict):
        i = self.index.get(name)
        if i is not None and i < len(args):
            return args[i]
        return kwargs.get(name)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        owner = _owner_or_retire(module, self.owner_path, self)
        if owner is None:
            return None
        shift = owner.position_shift()
        if not shift:
            return None
        position_ids = self._argument("position_ids", args, kwargs)
        if position_ids is None:
            tokens = self._argument("input_ids", args, kwargs)
            tokens = tokens if tokens is not None else self._argument("inputs_embeds", args, kwargs)
            cache = self._argument("past_key_values", args, kwargs)
            past = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
            position_ids = torch.arange(past, past + tokens.shape[1], device=tokens.device).unsqueeze(0)  # (1, N)
        position_ids = position_ids + shift
        i = self.index["position_ids"]
        if i < len(args):
            args = (*args[:i], position_ids, *args[i + 1:])
        else:
            kwargs = {**kwargs, "position_ids": position_ids}
        return args, kwargs


def _owner_or_retire(body: nn.Module, owner_path: str, hook_owner: object) -> PrefixLayer | None:
    """Block 0's prefix layer at ``owner_path`` under ``body``; once it is gone (unload), remove every hook of
    ``body`` that ``hook_owner`` is or is bound to, and return None."""
    try:
        owner = body.get_submodule(owner_path)
    except AttributeError:
        owner = None
    if isinstance(owner, PrefixLayer):
        return owner
    for hooks in (body._forward_pre_hooks, body._forward_hooks):
        mine = [k for k, hook in hooks.items() if hook is hook_owner or getattr(hook, "__self__", None) is hook_owner]
        for key in mine:
            del hooks[key]
            body._forward_pre_hooks_with_kwargs.pop(key, None)
            body._forward_hooks_always_called.pop(key, None)
    return None


# --- one prefix per forward pass (every reparameterization but R-c) ---------------------------------------------
class PrefixPassHook:
    """Forward pre-hook and always-called forward hook on the body: the active adapter's encoder, when it computes
    its prefix once per pass (``PrefixEncoder.per_pass``), begins the pass before the first block and ends it after
    the last. ``owner_path`` is block 0's prefix layer, relative to the body; found by path on every call, so the
    hook follows ``deepcopy`` and retires once the prefix layers are gone."""

    def __init__(self, body: nn.Module, owner_path: str) -> None:
        self.owner_path = owner_path
        body.register_forward_pre_hook(self.begin)
        body.register_forward_hook(self.end, always_call=True)

    @staticmethod
    def install(body: nn.Module, owner_path: str) -> None:
        if not any(isinstance(getattr(hook, "__self__", None), PrefixPassHook)
                   for hook in body._forward_pre_hooks.values()):
            PrefixPassHook(body, owner_path)

    def _encoder(self, module: nn.Module):
        owner = _owner_or_retire(module, self.owner_path, self)
        if owner is None or not owner.uses_adapter():
            return None
        encoder = owner._shared.get(owner.active_adapters[0])
        return encoder if encoder is not None and encoder.per_pass else None

    def begin(self, module: nn.Module, args: tuple):
        encoder = self._encoder(module)
        if encoder is not None:
            encoder.begin_pass()
        return None

    def end(self, module: nn.Module, args: tuple, output):
        encoder = self._encoder(module)
        if encoder is not None:
            encoder.end_pass()
        return None
