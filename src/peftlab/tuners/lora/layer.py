"""LoRA layer for ``nn.Linear`` and transformers' ``Conv1D``, with optional fused-output segments.

For a fused projection (GPT-2's ``c_attn`` = [q | k | v]) and roles q, v, one adapter holds a stacked
``lora_A`` (k*r, in) and a stacked ``lora_B`` (sum of segment widths, r): segment i uses rows i*r:(i+1)*r of A
and its own rows of B, and only writes its own slice of the output. This is loralib's ``MergedLinear`` with
``enable_lora=[True, False, True]``; exported to peft it becomes one rank-k*r block-structured LoRA.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from ..base import AdapterLayer
from ..dropout import Dropout
from ..targets import projection_shape


class LoraLayer(AdapterLayer):
    adapter_containers = ("lora_A", "lora_B")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.in_features, self.out_features = projection_shape(base_layer)
        self.transposed = isinstance(base_layer, Conv1D)
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self.segments: dict[str, list[slice]] = {}  # output slices per adapter; [] = the whole output

    def add_adapter(self, name: str, r: int, alpha: float, dropout: float, use_rslora: bool,
                    segments: list[slice], init_weights: bool, trainable: bool) -> None:
        n_segments = max(1, len(segments))
        out_width = sum(s.stop - s.start for s in segments) if segments else self.out_features
        self.lora_A[name] = nn.Linear(self.in_features, n_segments * r, bias=False)
        self.lora_B[name] = nn.Linear(r, out_width, bias=False)
        self.lora_dropout[name] = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling[name] = alpha / math.sqrt(r) if use_rslora else alpha / r
        self.segments[name] = list(segments)
        with torch.no_grad():
            for i in range(n_segments):  # kaiming-uniform per segment, as each segment is its own LoRA
                nn.init.kaiming_uniform_(self.lora_A[name].weight[i * r:(i + 1) * r], a=math.sqrt(5))
            if init_weights:
                nn.init.zeros_(self.lora_B[name].weight)
            else:
                nn.init.normal_(self.lora_B[name].weight, std=0.1)
        self.place_adapter(self.lora_A[name], trainable)  # initialised on the CPU, then moved beside the base layer
        self.place_adapter(self.lora_B[name], trainable)

    def delete_adapter(self, name: str) -> None:
        super().delete_adapter(name)
        if name in self.lora_dropout:
            del self.lora_dropout[name]
        self.scaling.pop(name, None)
        self.segments.pop(name, None)

    # --- math --------------------------------------------------------------------------------------------------
    def _rank(self, name: str) -> int:
        return self.lora_B[name].weight.shape[1]

    def _segment_rows(self, name: str) -> list[tuple[slice, slice, slice]]:
        """(rows of A, rows of B, output slice) for each segment of adapter ``name``."""
        r = self._rank(name)
        segments = self.segments[name] or [slice(0, self.out_features)]
        rows, start = [], 0
        for i, out_slice in enumerate(segments):
            width = out_slice.stop - out_slice.start
            rows.append((slice(i * r, (i + 1) * r), slice(start, start + width), out_slice))
            start += width
        return rows

    def adapter_delta(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """The update B A dropout(x) * scaling for adapter ``name``, full output width, in the adapter's dtype."""
        lora_A, lora_B = self.lora_A[name], self.lora_B[name]
        if not torch.is_autocast_enabled(x.device.type):  # under autocast lora_A casts x itself: skip a copy
            x = x.to(lora_A.weight.dtype)
        x = self.lora_dropout[name](x)
        low = lora_A(x)  # (..., n_segments * r)
        scaling = self.scaling[name]
        if not self.segments[name]:
            return lora_B(low) * scaling
        pieces, cursor = [], 0
        for a_rows, b_rows, out_slice in self._segment_rows(name):
            if out_slice.start > cursor:  # an unadapted part of the fused output
                pieces.append(low.new_zeros(*low.shape[:-1], out_slice.start - cursor))
            pieces.append(low[..., a_rows] @ lora_B.weight[b_rows].T)  # (..., r) @ (r, width)
            cursor = out_slice.stop
        if cursor < self.out_features:
            pieces.append(low.new_zeros(*low.shape[:-1], self.out_features - cursor))
        return torch.cat(pieces, dim=-1) * scaling

    def delta_weight(self, name: str) -> torch.Tensor:
        """The update as an (out, in) matrix (fp32)."""
        A = self.lora_A[name].weight.float()
        B = self.lora_B[name].weight.float()
        delta = torch.zeros(self.out_features, self.in_features, device=A.device)
        for a_rows, b_rows, out_slice in self._segment_rows(name):
            delta[out_slice] = B[b_rows] @ A[a_rows]
        return delta * self.scaling[name]

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if not self.uses_adapter():
            return result
        for name in self.active_adapters:
            result = result + self.adapter_delta(name, x).to(result.dtype)
        return result

    # --- merging -----------------------------------------------------------------------------------------------
    def _apply_delta(self, name: str, sign: float) -> None:
        weight = self.base_layer.weight
        delta = self.delta_weight(name)
        if self.transposed:
            delta = delta.T
        with torch.no_grad():
            weight.copy_((weight.float() + sign * delta.to(weight.device)).to(weight.dtype))

    def merge(self, adapter_names: list[str]) -> None:
        for name in adapter_names:
            if name in self.lora_A and name not in self.merged_adapters:
                self._apply_delta(name, +1.0)
                self.merged_adapters.append(name)

    def unmerge(self) -> None:
        while self.merged_adapters:
            self._apply_delta(self.merged_adapters.pop(), -1.0)
