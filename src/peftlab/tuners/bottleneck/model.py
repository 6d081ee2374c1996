"""Bottleneck tuner: where each adapter attaches, found through the layout (never by model name).

=========  ======================================  ===============================  =============================
position   output projection (adapter adds here)   input projection (parallel)      block norm (train_block_norms)
=========  ======================================  ===============================  =============================
attn       ``layout.attn_output`` (role ``o``)     role ``q`` (GPT-2: fused c_attn) ``layout.attn_norm``
ffn        role ``ffn_down``                       role ``ffn_up``                  ``layout.ffn_norm``
=========  ======================================  ===============================  =============================

GPT-2: attn.c_proj / mlp.c_proj (before resid dropout and the residual add); Llama: self_attn.o_proj /
mlp.down_proj; BERT/RoBERTa: attention.output.dense / output.dense (before dropout + residual + LayerNorm).
The parallel adapter's input is the input of q / ffn_up, which is the sub-layer's input in every family (BERT's
FFN is split into ``intermediate`` and ``output``; intermediate.dense's input is the FFN input).
"""
from __future__ import annotations

import torch.nn as nn

from ...errors import TargetModuleError
from ...layout import ResolvedLayout
from ...registry import register_alias, register_method
from ..base import AdapterLayer, Tuner, replace_module
from ..targets import block_indices
from .config import BottleneckConfig
from .layer import BottleneckAdapter, BottleneckLayer, InputCaptureLayer, NormDeltaLayer, projection_shape

_INPUT_ROLE = {"attn": "q", "ffn": "ffn_up"}
_OUTPUT_ROLE = {"attn": "o", "ffn": "ffn_down"}


def _wrap(model: nn.Module, path: str, layer_cls: type[AdapterLayer]) -> AdapterLayer:
    module = model.get_submodule(path)
    inner = module
    while isinstance(inner, AdapterLayer):  # reuse ours, also inside another method's wrapper: never wrap twice
        if isinstance(inner, layer_cls):
            return inner
        inner = inner.base_layer
    layer = layer_cls(module)
    replace_module(model, path, layer)
    return layer


def _blocks(config: BottleneckConfig, layout: ResolvedLayout) -> list[int]:
    return block_indices(config.layers_to_transform, layout, "BottleneckConfig.layers_to_transform")


@register_method
class BottleneckTuner(Tuner):
    config_cls = BottleneckConfig
    mergeable = False  # f is non-linear: nothing to fold into the base weights

    @classmethod
    def _paths(cls, layout: ResolvedLayout, block: int, position: str,
               parallel: bool) -> tuple[str, str | None, str | None]:
        """(output projection path, input projection path if parallel, block norm path or None) of a sub-layer."""
        family = layout.layout.family
        roles = layout.available_roles()
        needed = [_OUTPUT_ROLE[position]] + ([_INPUT_ROLE[position]] if parallel else [])
        for role in needed:
            if role not in roles:
                raise TargetModuleError(f"BottleneckConfig.positions: {position!r} needs the layout role {role!r}, "
                                        f"which the {family!r} layout does not map (roles: {roles})")
        if position == "attn":  # the attention sub-layer's output before the residual add
            out_path = layout.block_path(block, layout.layout.attn_output)
        else:
            out_path = layout.role_target(block, "ffn_down").path
        in_path = layout.role_target(block, _INPUT_ROLE[position]).path if parallel else None
        norm_rel = layout.layout.attn_norm if position == "attn" else layout.layout.ffn_norm
        return out_path, in_path, (layout.block_path(block, norm_rel) if norm_rel else None)

    @classmethod
    def inject(cls, model: nn.Module, config: BottleneckConfig, adapter_name: str, layout: ResolvedLayout,
               trainable: bool) -> None:
        parallel = config.placement == "parallel"
        for block in _blocks(config, layout):
            for position in config.positions:
                out_path, in_path, norm_path = cls._paths(layout, block, position, parallel)
                out_layer = _wrap(model, out_path, BottleneckLayer)
                out_layer.position = position
                d_in = d_out = out_layer.out_features  # sequential: the adapter reads the projection output
                if in_path is not None:
                    in_layer = _wrap(model, in_path, InputCaptureLayer)
                    d_in = projection_shape(in_layer.base_layer)[0]  # the sub-layer's input width
                    out_layer.input_stash = in_layer.stash
                    in_layer.add_adapter(adapter_name)
                r = config.bottleneck_dim(d_out)
                adapter = BottleneckAdapter(d_in, d_out, r, config.activation, config.dropout, config.adapter_norm,
                                            config.scaling, out_layer.adapter_device())
                adapter.reset(config.init_weights)
                out_layer.add_adapter(adapter_name, adapter, config.placement, trainable)
                if config.train_block_norms:
                    if norm_path is None:
                        raise TargetModuleError(f"BottleneckConfig.train_block_norms: the {layout.layout.family!r} "
                                                f"layout has no {position} norm")
                    _wrap(model, norm_path, NormDeltaLayer).add_adapter(adapter_name, trainable)

    @classmethod
    def describe(cls, config: BottleneckConfig) -> str:
        size = (f"r={config.bottleneck_size}" if config.bottleneck_size is not None
                else f"r=d//{config.reduction_factor:g}")
        text = f"{config.placement} bottleneck ({size}) at {','.join(config.positions)}"
        if config.adapter_norm:
            text += " + adapter LayerNorms"
        if config.train_block_norms:
            text += " + block norm deltas"
        return text


for _preset in ("houlsby", "pfeiffer", "parallel"):  # presets are names of their own: --method houlsby
    register_alias(_preset, "bottleneck", preset=_preset)
