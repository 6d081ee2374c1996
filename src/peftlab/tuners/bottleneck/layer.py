"""Bottleneck adapter layers, all wrapping leaf modules (so no module path of the model moves):

* :class:`BottleneckLayer` wraps a sub-layer's output projection (attention ``o``, FFN ``ffn_down``) and adds
  ``s * W_up f(W_down h)`` to its output; ``h`` is that output (sequential) or the sub-layer's input (parallel);
* :class:`InputCaptureLayer` wraps the first projection of a sub-layer (``q``/fused ``qkv`` for attention,
  ``ffn_up`` for the FFN), whose input *is* the sub-layer's input, and hands it to the output wrapper through an
  :class:`InputStash` (the input projection always runs before the output projection of the same sub-layer);
* :class:`NormDeltaLayer` wraps a block norm and adds a per-adapter delta to its weight (and bias).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.func import functional_call

from ..base import AdapterLayer
from ..dropout import Dropout
from ..targets import projection_shape

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh,
                                           "identity": nn.Identity}


class BottleneckAdapter(nn.Module):
    """``scaling * up(dropout(f(down(norm(h)))))`` with down: d_in -> r, up: r -> d_out (fp32)."""

    def __init__(self, d_in: int, d_out: int, r: int, activation: str, dropout: float, adapter_norm: bool,
                 scaling: float, device: torch.device) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_in, device=device) if adapter_norm else nn.Identity()
        self.down = nn.Linear(d_in, r, device=device)
        self.act = ACTIVATIONS[activation]()
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.Linear(r, d_out, device=device)
        self.scaling = scaling

    def reset(self, init_weights: bool) -> None:
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down.bias)
            if init_weights:  # exact identity: the adapter's output is 0
                nn.init.zeros_(self.up.weight)
                nn.init.zeros_(self.up.bias)
            else:
                nn.init.normal_(self.up.weight, std=0.1)
                nn.init.normal_(self.up.bias, std=0.1)
                nn.init.normal_(self.down.bias, std=0.1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (..., d_in) in fp32 -> (..., d_out)."""
        return self.up(self.dropout(self.act(self.down(self.norm(h))))) * self.scaling


class InputStash:
    """The latest input of a sub-layer, handed from its input projection to its output projection (plain Python)."""

    def __init__(self) -> None:
        self._x: torch.Tensor | None = None

    def put(self, x: torch.Tensor) -> None:
        self._x = x

    def take(self, where: str) -> torch.Tensor:
        x, self._x = self._x, None  # keep no activation alive past its use
        if x is None:
            raise RuntimeError(f"parallel bottleneck adapter at {where}: the sub-layer's input was not captured "
                               "(its input projection did not run first in this forward pass)")
        return x


class BottleneckLayer(AdapterLayer):
    """An output projection plus bottleneck adapters, sequential (read the output) or parallel (read the stash)."""

    adapter_containers = ("bottleneck",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.in_features, self.out_features = projection_shape(base_layer)
        self.bottleneck = nn.ModuleDict()
        self.placement: dict[str, str] = {}
        self.input_stash: InputStash | None = None  # set when a parallel adapter reads the sub-layer input
        self.position = ""  # "attn" or "ffn" (messages)

    def add_adapter(self, name: str, adapter: BottleneckAdapter, placement: str, trainable: bool) -> None:
        adapter.train(self.training)  # a model already in eval mode gets an eval-mode adapter
        self.bottleneck[name] = self.place_adapter(adapter, trainable)
        self.placement[name] = placement

    def delete_adapter(self, name: str) -> None:
        super().delete_adapter(name)
        self.placement.pop(name, None)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base_layer(x, *args, **kwargs)
        if not self.uses_adapter():
            return out
        sub_input = None
        if any(self.placement[n] == "parallel" for n in self.active_adapters):
            sub_input = self.input_stash.take(f"the {self.position} output projection")
        for name in self.active_adapters:
            h = out if self.placement[name] == "sequential" else sub_input
            out = out + self.bottleneck[name](h.to(torch.float32)).to(out.dtype)
        return out


class InputCaptureLayer(AdapterLayer):
    """A sub-layer's input projection; records its input for the parallel adapters of the same sub-layer.

    Holds no parameters: ``bottleneck_input`` keeps an empty marker module per adapter, so the layer is active,
    disabled and removed together with that adapter.
    """

    adapter_containers = ("bottleneck_input",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.bottleneck_input = nn.ModuleDict()
        self.stash = InputStash()

    def add_adapter(self, name: str) -> None:
        self.bottleneck_input[name] = nn.Module()

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.uses_adapter():
            self.stash.put(x)
        return self.base_layer(x, *args, **kwargs)


class NormDeltaLayer(AdapterLayer):
    """A block norm whose affine parameters get a per-adapter delta (zero at init): base(x) with weight + dw
    (and bias + db). Works for LayerNorm and RMSNorm alike (the norm's own forward runs, with swapped params)."""

    adapter_containers = ("norm_delta",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.norm_delta = nn.ModuleDict()

    def add_adapter(self, name: str, trainable: bool) -> None:
        holder = nn.Module()
        for pname, param in self.base_layer.named_parameters(recurse=False):
            holder.register_parameter(pname, nn.Parameter(torch.zeros(param.shape, device=param.device)))
        self.norm_delta[name] = self.place_adapter(holder, trainable)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not self.uses_adapter():
            return self.base_layer(x, *args, **kwargs)
        params = dict(self.base_layer.named_parameters(recurse=False))
        for name in self.active_adapters:
            for pname, delta in self.norm_delta[name].named_parameters():
                params[pname] = params[pname] + delta.to(params[pname].dtype)
        return functional_call(self.base_layer, params, (x, *args), kwargs)
