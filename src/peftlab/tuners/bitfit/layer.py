"""BitFit layer: an additive per-adapter delta on a module's bias (Linear, Conv1D or LayerNorm)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..base import AdapterLayer


def output_width(module: nn.Module) -> int:
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        return bias.shape[0]
    weight = module.weight
    if isinstance(module, nn.Linear):
        return module.out_features
    return weight.shape[-1] if weight.dim() == 2 else weight.shape[0]  # Conv1D (in, out); norms (d,)


class BitFitLayer(AdapterLayer):
    """``base(x) + delta``: the same as training the bias, since a bias is added last in these modules."""

    adapter_containers = ("bitfit_bias",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.bitfit_bias = nn.ParameterDict()
        self._created_bias = False  # merge had to create a bias the base module lacked

    def add_adapter(self, name: str, init_weights: bool, trainable: bool) -> None:
        delta = torch.zeros(output_width(self.base_layer), device=self.adapter_device())
        if not init_weights:
            nn.init.normal_(delta, std=0.1)
        self.bitfit_bias[name] = self.place_adapter(nn.Parameter(delta), trainable)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if not self.uses_adapter():
            return result
        for name in self.active_adapters:
            result = result + self.bitfit_bias[name].to(result.dtype)
        return result

    def _shift_bias(self, delta: torch.Tensor, sign: float) -> None:
        base = self.base_layer
        with torch.no_grad():
            if getattr(base, "bias", None) is None:
                base.bias = nn.Parameter(torch.zeros_like(delta, dtype=base.weight.dtype), requires_grad=False)
                self._created_bias = True
            base.bias.copy_((base.bias.float() + sign * delta.float()).to(base.bias.dtype))

    def merge(self, adapter_names: list[str]) -> None:
        for name in adapter_names:
            if name in self.bitfit_bias and name not in self.merged_adapters:
                self._shift_bias(self.bitfit_bias[name], +1.0)
                self.merged_adapters.append(name)

    def unmerge(self) -> None:
        while self.merged_adapters:
            self._shift_bias(self.bitfit_bias[self.merged_adapters.pop()], -1.0)
        if self._created_bias:
            self.base_layer.bias = None
            self._created_bias = False
