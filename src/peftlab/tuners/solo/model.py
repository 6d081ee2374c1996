"""Solo Connection tuner: wrap each block that is a skip's source or destination in a :class:`SoloBlock`.

Blocks are found through the layout (``layout.blocks()``, ``layout.block_path(i)``) and the width through
``layout.shape.hidden_size``; nothing depends on the model's name. The embeddings source (i = -1) is the input of
block 0, which is the embedding output in every supported family (GPT-2: after ``drop``; Llama: ``embed_tokens``;
BERT: ``embeddings``) and stays correct when a caller passes ``inputs_embeds``.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from ...errors import ConfigError
from ...layout import ResolvedLayout
from ...registry import register_method
from ..base import Tuner, replace_module
from .config import SoloConnectionConfig
from .homotopy import advance_homotopy, current_t, resolve_ramp_steps, unfinished_ramps
from .layer import SoloBlock, SoloMap, SoloState, pair_key, solo_states

SHARED_KEY = "shared"


@register_method
class SoloTuner(Tuner):
    config_cls = SoloConnectionConfig
    mergeable = False  # the skips read other blocks' outputs: no weight of any single module can absorb them

    @classmethod
    def inject(cls, model: nn.Module, config: SoloConnectionConfig, adapter_name: str, layout: ResolvedLayout,
               trainable: bool) -> None:
        n_blocks = layout.n_blocks
        d = layout.shape.hidden_size
        if config.rank is not None and config.rank > d:
            raise ConfigError(f"SoloConnectionConfig.rank: must be in [1, {d}] for this model (hidden_size {d}), "
                              f"got {config.rank}; use rank=None for a full {d}x{d} map")
        pairs = config.resolve_pairs(n_blocks)
        state = SoloState(adapter_name, pairs, config)
        blocks = layout.blocks()
        layers: dict[int, SoloBlock] = {}
        for index in state.wrapped_blocks:
            module = blocks[index]
            layer = module if isinstance(module, SoloBlock) else SoloBlock(module, index)
            if layer is not module:
                replace_module(model, layout.block_path(index), layer)
            layers[index] = layer
        cls._build_parameters(config, state, layers, d, trainable)

    @classmethod
    def _build_parameters(cls, config: SoloConnectionConfig, state: SoloState, layers: dict[int, SoloBlock], d: int,
                          trainable: bool) -> None:
        """Create the maps, learned thetas and the step counter in their sites (on their block's device); give
        ``state`` references to them. Per-pair tensors live at the destination, shared ones at the hub."""
        sites = {index: layer.add_adapter(state.adapter_name, state) for index, layer in layers.items()}
        devices = {index: layer.adapter_device() for index, layer in layers.items()}
        hub = sites[state.hub]
        init_up = config.resolved_init_up() if config.init_weights else "normal"
        up_std = config.init_up_std if config.init_weights else 0.1

        def new_map(block: int) -> SoloMap:
            return SoloMap(d, config.rank, config.bias, init_up, up_std, device=devices[block])

        if config.share_maps:
            hub.maps[SHARED_KEY] = new_map(state.hub)
            state.maps = {pair: hub.maps[SHARED_KEY] for pair in state.pairs}
        else:
            for i, j in state.pairs:
                sites[j].maps[pair_key(i)] = new_map(j)
                state.maps[(i, j)] = sites[j].maps[pair_key(i)]
        if config.has_learned_t():
            theta0 = config.resolved_theta_init()
            if not config.init_weights:  # start at the homotopy's end: t = 1 (clamp) or ~1 (sigmoid)
                theta0 = 1.0 if config.learned_t == "clamp" else 6.0

            def new_theta(block: int) -> nn.Parameter:
                return nn.Parameter(torch.full((1,), theta0, device=devices[block]))  # (1,): FSDP2 refuses 0-d

            if config.share_t:
                hub.theta[SHARED_KEY] = new_theta(state.hub)
                state.theta_sites = {pair: (hub, SHARED_KEY) for pair in state.pairs}
            else:
                for i, j in state.pairs:
                    sites[j].theta[pair_key(i)] = new_theta(j)
                    state.theta_sites[(i, j)] = (sites[j], pair_key(i))
        start = state.effective_ramp_steps() if (not config.init_weights and config.has_schedule()) else 0
        hub.add_step_counter(devices[state.hub], start)
        state.step_site = hub
        for index, site in sites.items():
            layers[index].place_adapter(site, trainable)  # the step counter (an integer) is never trained

    @classmethod
    def describe(cls, config: SoloConnectionConfig) -> str:
        topology = config.topology if isinstance(config.topology, str) else f"{len(config.topology)} explicit pairs"
        rank = "full-rank" if config.rank is None else f"r={config.rank}"
        parts = [f"solo skip maps ({topology}{' +embeddings' if config.include_embeddings else ''}, {rank}"
                 f"{', shared' if config.share_maps else ''}{', +bias' if config.bias else ''})"]
        if config.has_learned_t():
            parts.append(f"learned t ({'shared' if config.share_t else 'per pair'})")
        parts.append(f"1 step counter (not trained); t={config.t_mode}")
        return " + ".join(parts)

    @classmethod
    def state_for_load(cls, peft_model, adapter_name: str, directory, tensors, path):
        """Adapters saved before the step counter and the thetas became shape (1,) (peftlab 0.1.0 wrote them 0-d)
        load too."""
        def old_scalar(key: str, tensor) -> bool:
            return tensor.dim() == 0 and (key.endswith(".solo.step") or ".solo.theta." in key)

        tensors = {k: v.reshape(1) if old_scalar(k, v) else v for k, v in tensors.items()}
        return tensors, path

    @classmethod
    def on_optimizer_step(cls, peft_model, adapter_name: str) -> None:
        """The training loop advances the homotopy once per optimizer step."""
        advance_homotopy(peft_model, 1, adapter_name)

    @classmethod
    def on_train_begin(cls, peft_model, adapter_name: str, total_steps: int, warmup_steps: int) -> None:
        """ramp_steps="auto" becomes a number of steps that fits the run (and a too-long explicit ramp is warned)."""
        resolve_ramp_steps(peft_model, total_steps, warmup_steps, adapter_name)

    @classmethod
    def on_train_end(cls, peft_model, adapter_name: str) -> None:
        t = unfinished_ramps(peft_model).get(adapter_name)
        if t is not None:
            warnings.warn(f"Solo adapter {adapter_name!r}: training ended at schedule t = {t:.3f} < 1 (ramp_steps is "
                          "longer than the run); the adapter is evaluated and saved at that t", UserWarning,
                          stacklevel=2)

    @classmethod
    def training_log(cls, peft_model, adapter_name: str) -> dict[str, object]:
        return {f"solo_{key}": value for key, value in current_t(peft_model, adapter_name).items()}


__all__ = ["SoloTuner", "solo_states"]
