"""The prefix layer: a child ``prefix`` added to each block's attention module (``layout.layout.attention``).

The attention module is not wrapped, so every module path of the model (``attn.c_attn``, ``self_attn.q_proj``...)
stays what the layout says and other methods (LoRA, kernel-mix...) find their targets before or after a prefix
adapter, with unchanged saved keys. The layer is ``attached`` (peftlab core deletes it on removal) and drives the
attention module through a forward pre-hook and an always-called forward hook, see :mod:`.attention`.

Per adapter the layer holds, for its own block,

* ``key`` / ``value`` (n_kv_heads, l, head_dim): the prefix itself, when the adapter trains it directly or was
  loaded for inference (the "ejected" form saved in ``adapter_model.safetensors``);
* ``gate``: the block's gate module (G-a/G-b logits, or the G-c content projection), if any;
* ``encoder``: the reparameterization (MLP, residual variants) shared by all blocks. Only block 0's layer registers
  it (so it is counted and saved once); the others keep a plain reference and compute their own slice inside their
  block's forward, so gradient checkpointing (reentrant or not) recomputes it per block.
"""
from __future__ import annotations

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ...errors import UnsupportedModelError
from ...layout import AttentionShape
from ..base import AdapterLayer
from .attention import (
    PREFIX_ATTENTION,
    PREFIX_KWARG,
    SUPPORTED_IMPLEMENTATIONS,
    PrefixPayload,
    generic_eager_attention,
)
from .config import PrefixSpec
from .encoder import PrefixEncoder, build_gate

CHILD_NAME = "prefix"
"""Name of the prefix layer inside the attention module (saved keys: ``<attention path>.prefix.key``...)."""


def attention_module(module: nn.Module) -> nn.Module:
    """The attention module itself, looking through other methods' wrappers."""
    while isinstance(module, AdapterLayer) and not module.attached:
        module = module.base_layer
    return module


def check_attention_module(module: nn.Module, path: str) -> None:
    """Raise UnsupportedModelError unless the prefix can join this attention module's computation."""
    inner = attention_module(module)
    config = getattr(inner, "config", None)
    if config is None or not hasattr(config, "_attn_implementation_internal"):
        raise UnsupportedModelError(
            f"{path} ({type(inner).__name__}) has no transformers config; prefix tuning joins the attention through "
            "transformers' AttentionInterface (transformers >= 5), which reads module.config._attn_implementation")
    if config._attn_implementation not in SUPPORTED_IMPLEMENTATIONS:
        raise UnsupportedModelError(
            f"{path}: the model uses attn_implementation={config._attn_implementation!r}; prefix tuning supports "
            f"{' or '.join(map(repr, SUPPORTED_IMPLEMENTATIONS))}. Load the model with attn_implementation='sdpa' or "
            "call model.set_attn_implementation('sdpa') first")
    existing = getattr(module, CHILD_NAME, None)
    if existing is not None and not isinstance(existing, PrefixLayer):
        raise UnsupportedModelError(f"{path} already has an attribute {CHILD_NAME!r}; cannot attach the prefix")


class PrefixLayer(AdapterLayer):
    """Every prefix adapter's state for one block, attached to that block's attention module."""

    adapter_containers = ("key", "value", "encoder", "gate")
    attached = True

    def __init__(self, attention: nn.Module, layer_index: int, shape: AttentionShape) -> None:
        super().__init__(nn.Identity())  # placeholder: the attention module is the parent, not a child
        self.layer_index = layer_index
        self.n_kv_heads, self.head_dim = shape.n_kv_heads, shape.head_dim
        self.key = nn.ParameterDict()
        self.value = nn.ParameterDict()
        self.encoder = nn.ModuleDict()  # block 0's layer only
        self.gate = nn.ModuleDict()
        self.specs: dict[str, PrefixSpec] = {}
        self._shared: dict[str, PrefixEncoder] = {}  # plain dict: a reference, not a registered child
        inner = attention_module(attention)
        modeling = sys.modules.get(type(inner).__module__)
        self._eager = getattr(modeling, "eager_attention_forward", None) or generic_eager_attention
        self._restore: list[str] = []  # attention implementations to put back after the attention call
        self._attention = (attention,)  # the parent, held in a tuple so that it is not registered as a child
        attention.register_forward_pre_hook(_before_attention, with_kwargs=True)
        attention.register_forward_hook(_after_attention, always_call=True)

    def detach(self) -> None:
        """Remove the hooks from the attention module (found by identity: also right after a deepcopy)."""
        attention = self._attention[0]
        for hooks, extra in ((attention._forward_pre_hooks, attention._forward_pre_hooks_with_kwargs),
                             (attention._forward_hooks, attention._forward_hooks_always_called)):
            for key in [k for k, hook in hooks.items() if hook in (_before_attention, _after_attention)]:
                del hooks[key]
                extra.pop(key, None)

    def forward(self, *args, **kwargs):
        raise RuntimeError("PrefixLayer is driven by hooks on its attention module; it is never called itself")

    def adapter_device(self) -> torch.device:
        """The attention module's device (``base_layer`` is only a placeholder here)."""
        own = {id(p) for p in self.parameters()}
        inner = attention_module(self._attention[0])
        return next((p.device for p in inner.parameters() if id(p) not in own), torch.device("cpu"))

    # --- bookkeeping: an adapter may own no tensor in this layer (reparameterized, no gate) --------------------
    def adapter_names(self) -> list[str]:
        return list(self.specs)

    def has_adapter(self, name: str) -> bool:
        return name in self.specs

    def add_adapter(self, name: str, spec: PrefixSpec, encoder: PrefixEncoder | None, trainable: bool) -> None:
        """Add adapter ``name``: a direct per-layer prefix when ``encoder`` is None, else a slice of ``encoder``
        (registered, and so placed, by block 0's layer)."""
        self.specs[name] = spec
        if encoder is None:
            shape = (self.n_kv_heads, spec.num_virtual_tokens, self.head_dim)
            # N(0, 1) drawn on the CPU, as peft's nn.Embedding, then moved beside the attention module
            self.key[name] = self.place_adapter(nn.Parameter(torch.randn(shape)), trainable)
            self.value[name] = self.place_adapter(nn.Parameter(torch.randn(shape)), trainable)
        else:
            self._shared[name] = encoder
            if self.layer_index == 0:
                self.encoder[name] = self.place_adapter(encoder, trainable)
        gate = build_gate(spec.gate, spec.num_virtual_tokens, self.n_kv_heads * self.head_dim, spec.gate_init,
                          spec.init_weights)
        if gate is not None:
            self.gate[name] = self.place_adapter(gate, trainable)

    def delete_adapter(self, name: str) -> None:
        super().delete_adapter(name)
        self.specs.pop(name, None)
        self._shared.pop(name, None)

    def is_reparameterized(self, name: str) -> bool:
        return name in self._shared

    # --- the prefix of this layer ------------------------------------------------------------------------------
    def layer_kv(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Ungated prefix keys and values of this layer, each (n_kv_heads, l, head_dim), fp32."""
        if name in self.key:
            return self.key[name], self.value[name]
        return self._shared[name].layer_kv(self.layer_index)

    def gate_values(self, name: str, key: torch.Tensor | None = None,
                    value: torch.Tensor | None = None) -> torch.Tensor | None:
        """Gate values of this layer's prefix tokens, (l,), or None without a gate."""
        if name not in self.gate:
            return None
        if key is None:
            key, value = self.layer_kv(name)
        return self.gate[name](key, value)

    def payload(self, name: str) -> PrefixPayload | None:
        """What the attention function needs for adapter ``name`` in this forward call (None: no prefix)."""
        spec = self.specs[name]
        key, value = self.layer_kv(name)
        if key.shape[1] == 0:  # an empty prefix is the base model: take its own code path
            return None
        gate = self.gate_values(name, key, value)  # from the undropped prefix
        if spec.dropout > 0 and self.training:
            key = F.dropout(key, spec.dropout, training=True)
            value = F.dropout(value, spec.dropout, training=True)
        if gate is None:
            return PrefixPayload(key, value)
        application = spec.gate_application
        g = gate[None, :, None]  # (1, l, 1) over (KV, l, hd)
        if application == "kv":
            return PrefixPayload(key * g, value * g)
        if application == "values":
            return PrefixPayload(key, value * g)
        if application == "separate":
            return PrefixPayload(key, value * g, separate=True)
        keep = gate > 0  # logit_bias: log 0 = -inf gives an exactly zero weight, so such tokens are dropped
        if not bool(keep.all()):
            if not bool(keep.any()):
                return None
            key, value, gate = key[:, keep], value[:, keep], gate[keep]
        return PrefixPayload(key, value, log_bias=torch.log(gate))

    def position_shift(self) -> int:
        """How far real tokens' positions move for the active adapter (``prefix_position_offset``)."""
        if not self.uses_adapter():
            return 0
        spec = self.specs[self.active_adapters[0]]
        return spec.num_virtual_tokens if spec.position_offset else 0

    def delegate(self, attention: nn.Module, implementation: str):
        """(attention function the model was using, GPT-2 upcast flag) for ``implementation``."""
        if implementation == "sdpa":
            return ALL_ATTENTION_FUNCTIONS["sdpa"], False
        if implementation == "eager":
            upcast = bool(getattr(attention, "reorder_and_upcast_attn", False)) and hasattr(
                attention, "_upcast_and_reordered_attn")  # GPT-2's own fp32 path, as the base model takes it
            return self._eager, upcast
        check_attention_module(attention, f"block {self.layer_index} attention")  # raises, saying what to do
        raise AssertionError("unreachable")


def _before_attention(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of the attention module: pass the prefix and switch to the prefix attention function.

    The switch of ``config._attn_implementation`` lasts only for this call (undone by :func:`_after_attention`):
    the model body built its masks with the original implementation before the blocks ran, so they arrive in the
    format the original implementation expects.
    """
    layer = module._modules.get(CHILD_NAME)
    if not isinstance(layer, PrefixLayer) or not layer.uses_adapter():
        return None
    payload = layer.payload(layer.active_adapters[0])
    if payload is None:
        return None
    inner = attention_module(module)
    config = inner.config
    payload.delegate, payload.upcast = layer.delegate(inner, config._attn_implementation)
    layer._restore.append(config._attn_implementation)
    config._attn_implementation_internal = PREFIX_ATTENTION
    return args, {**kwargs, PREFIX_KWARG: payload}


def _after_attention(module: nn.Module, args: tuple, output):
    layer = module._modules.get(CHILD_NAME)
    if isinstance(layer, PrefixLayer) and layer._restore:
        attention_module(module).config._attn_implementation_internal = layer._restore.pop()
    return None
