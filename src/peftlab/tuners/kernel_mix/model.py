"""Kernel-mix tuner: wrap each block's q/k/v (or fused qkv) and output projections found through the layout.

Head mapping (from ``layout.shape``): Q and O terms have one set of per-head parameters per *query* head (H);
the V terms have one per *key/value* head (n_kv_heads), since under grouped-query attention the value
projection only has n_kv_heads heads, and V head j reads key head j (the key it is cached with). With
n_kv_heads == H (GPT-2, BERT) this is the paper's one-per-head layout.
"""
from __future__ import annotations

import torch.nn as nn

from ...errors import TargetModuleError
from ...layout import AttentionShape, ResolvedLayout
from ...registry import register_alias, register_method
from ..base import AdapterLayer, Tuner, replace_module
from ..targets import block_indices
from .config import PRESETS, KernelMixConfig
from .layer import KernelMixLayer, KernelMixPart, KeyStash, KPart, OPart, QPart, VPart

_ROLES = ("q", "k", "v", "o")


def _check_geometry(layout: ResolvedLayout) -> AttentionShape:
    shape = getattr(layout, "shape", None)
    family = layout.layout.family
    if not isinstance(shape, AttentionShape) or min(shape.n_heads, shape.n_kv_heads, shape.head_dim) <= 0 \
            or shape.n_heads % shape.n_kv_heads:
        raise TargetModuleError(
            f"KernelMixConfig needs per-head geometry (n_heads, n_kv_heads dividing n_heads, head_dim > 0) from the "
            f"model layout; the {family!r} layout gives {shape!r}. Give the layout a shape_from_config.")
    missing = [r for r in _ROLES if r not in layout.available_roles()]
    if missing:
        raise TargetModuleError(f"KernelMixConfig needs the attention roles q, k, v and o; the {family!r} layout "
                                f"does not map {missing} (available: {layout.available_roles()})")
    return shape


def _blocks(config: KernelMixConfig, layout: ResolvedLayout) -> list[int]:
    return block_indices(config.layers_to_transform, layout, "KernelMixConfig.layers_to_transform")


def _own_layer(module: nn.Module) -> KernelMixLayer | None:
    """The KernelMixLayer at ``module`` or inside the wrappers of other methods around it (never wrap twice)."""
    while isinstance(module, AdapterLayer):
        if isinstance(module, KernelMixLayer):
            return module
        module = module.base_layer
    return None


@register_method
class KernelMixTuner(Tuner):
    config_cls = KernelMixConfig
    mergeable = False  # exact in principle (every term is linear), but not where the base has no bias (Llama)

    @classmethod
    def inject(cls, model: nn.Module, config: KernelMixConfig, adapter_name: str, layout: ResolvedLayout,
               trainable: bool) -> None:
        shape = _check_geometry(layout)
        config.check_shape(shape)
        use_q = bool(config.r_q or config.s_q or config.bandwidth != "none")
        use_v = bool(config.r_v or config.s_v)
        use_o = bool(config.rank_o or config.share_o)
        for block in _blocks(config, layout):
            fused_kv = layout.role_target(block, "k").path == layout.role_target(block, "v").path
            wanted = [role for role, used in (("q", use_q), ("v", use_v), ("o", use_o)) if used]
            if config.bandwidth != "none" or (use_v and config.r_v and not fused_kv):
                wanted.append("k")  # the k wrapper scales keys and/or hands its key to the separate v wrapper
            layers = cls._wrap_block(model, layout, block, shape, wanted)
            device = {role: layer.adapter_device() for role, layer in layers.items()}  # each beside its projection
            parts: list[tuple[str, KernelMixLayer, KernelMixPart]] = []
            if use_q:
                parts.append(("q", layers["q"], QPart(
                    layers["q"].in_features, shape, config.r_q, config.s_q, config.head_bias, config.scaling,
                    config.bandwidth, config.bandwidth_per_head, device["q"])))
            if use_v:
                parts.append(("v", layers["v"], VPart(layers["v"].in_features, shape, config.r_v, config.s_v,
                                                      config.head_bias, config.scaling, device["v"])))
            if "k" in wanted:
                parts.append(("k", layers["k"], KPart(shape, config.bandwidth, config.bandwidth_per_head,
                                                      device["k"])))
            if use_o:
                parts.append(("o", layers["o"], OPart(layers["o"].out_features, shape, config.rank_o,
                                                      config.share_o, config.head_bias, config.scaling,
                                                      device["o"])))
            if use_v and config.r_v and not fused_kv:
                k_layer, v_layer = layers["k"], layers["v"]
                if k_layer.key_stash is None:
                    k_layer.key_stash = KeyStash(k_layer.base_layer)
                v_layer.key_source = k_layer.key_stash
            for role, layer, part in parts:
                part.reset(config.init_scheme, config.init_std, config.init_weights)
                layer.add_part(role, adapter_name, part, config.dropout, trainable)

    @classmethod
    def _wrap_block(cls, model: nn.Module, layout: ResolvedLayout, block: int, shape: AttentionShape,
                    wanted: list[str]) -> dict[str, KernelMixLayer]:
        """Wrap (or reuse) the modules holding the ``wanted`` roles in ``block``; role -> its KernelMixLayer.

        A wrapper knows every role its module holds (GPT-2's c_attn: q, k and v), whichever of them it adapts."""
        targets = {role: layout.role_target(block, role) for role in _ROLES}
        by_path: dict[str, dict[str, slice | None]] = {}
        for role, target in targets.items():
            by_path.setdefault(target.path, {})[role] = target.out_slice
        layers: dict[str, KernelMixLayer] = {}
        for role in wanted:
            path = targets[role].path
            roles = by_path[path]
            if "o" in roles and len(roles) > 1:
                raise TargetModuleError(f"KernelMixConfig: {path!r} is both the output projection and q/k/v")
            module = model.get_submodule(path)
            layer = _own_layer(module)
            if layer is None:
                layer = KernelMixLayer(module, roles)
                replace_module(model, path, layer)
            layers[role] = layer
            if role == "o":
                if layer.in_features != shape.q_size:
                    raise TargetModuleError(f"KernelMixConfig: the output projection {path!r} takes "
                                            f"{layer.in_features} inputs, expected H*d_h = {shape.q_size}")
            elif layer.role_width(role) != (shape.q_size if role == "q" else shape.kv_size):
                raise TargetModuleError(
                    f"KernelMixConfig: the {role} output of {path!r} is {layer.role_width(role)} wide, which does not "
                    f"match the layout's head geometry (H={shape.n_heads}, n_kv_heads={shape.n_kv_heads}, "
                    f"d_h={shape.head_dim})")
        return layers

    @classmethod
    def describe(cls, config: KernelMixConfig) -> str:
        text = (f"per-head Q/V/O + shared (r_q={config.r_q}, r_v={config.r_v}, s_q={config.s_q}, s_v={config.s_v}"
                f"{'' if config.r_o is None else f', r_o={config.r_o}'}"
                f"{'' if config.s_o is None else f', s_o={config.s_o}'})")
        if config.bandwidth != "none":
            text += f" + {config.bandwidth} bandwidth on q,k"
        return text


for _preset in PRESETS:  # --method kernel-mix-nlg etc.: the preset's method and arguments
    register_alias(_preset, "kernel-mix", preset=_preset)
