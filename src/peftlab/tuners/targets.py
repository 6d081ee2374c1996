"""Resolve a config's ``target_modules`` to concrete modules, the same way for every method.

Accepted forms (peft's plus layout roles):

* layout roles — ``"q"``, ``"k"``, ``"v"``, ``"o"``, ``"ffn_up"`` (``"up"``), ``"ffn_down"`` (``"down"``),
  ``"ffn_gate"`` (``"gate"``): found through the model layout, so ``["q", "v"]`` means the query and value
  projections on every architecture, including the q and v *slices* of GPT-2's fused ``c_attn``;
* module names — ``"q_proj"``, ``"c_attn"``, ``"query"``: a module whose path equals the name or ends in ``.name``;
* a single string — a regular expression that must match a module's full path;
* ``"all-linear"`` — every attention and FFN projection of every block.

``layers_to_transform`` restricts matches to the listed block indices.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from ..errors import TargetModuleError
from ..layout import ROLE_ALIASES, ResolvedLayout

PROJECTION_TYPES = (nn.Linear, Conv1D)


@dataclass
class ModuleTarget:
    """One module to adapt; ``out_slices`` lists the parts of a fused output to adapt (empty: the whole output)."""

    path: str
    module: nn.Module
    block_index: int | None
    roles: list[str] = field(default_factory=list)
    out_slices: list[slice] = field(default_factory=list)


def projection_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear or Conv1D, looking through adapter wrappers (``base_layer``)."""
    while not isinstance(module, PROJECTION_TYPES) and hasattr(module, "base_layer"):
        module = module.base_layer
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]  # Conv1D weight is (in, out)
    return module.in_features, module.out_features


def block_indices(layers_to_transform: list[int] | None, layout: ResolvedLayout,
                  field_name: str = "layers_to_transform") -> list[int]:
    """The block indices a config selects (all by default); TargetModuleError names out-of-range ones."""
    if layers_to_transform is None:
        return list(range(layout.n_blocks))
    bad = [i for i in layers_to_transform if not 0 <= i < layout.n_blocks]
    if bad:
        raise TargetModuleError(f"{field_name}: block indices {bad} out of range 0..{layout.n_blocks - 1}")
    return sorted(set(layers_to_transform))


def _block_index(layout: ResolvedLayout, path: str) -> int | None:
    prefix = layout.body_path(layout.layout.blocks) + "."
    if not path.startswith(prefix):
        return None
    head = path[len(prefix):].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def resolve_targets(
    model: nn.Module,
    layout: ResolvedLayout,
    target_modules: list[str] | str,
    layers_to_transform: list[int] | None = None,
    allowed_types: tuple[type, ...] = PROJECTION_TYPES,
    field_name: str = "target_modules",
) -> list[ModuleTarget]:
    """The modules ``target_modules`` selects, in model order; :class:`TargetModuleError` if any name is unused."""
    wanted_blocks = set(block_indices(layers_to_transform, layout))
    targets: dict[str, ModuleTarget] = {}

    def add(path: str, module: nn.Module, role: str | None, out_slice: slice | None) -> None:
        if not isinstance(module, allowed_types):
            raise TargetModuleError(
                f"{field_name}: module {path!r} is a {type(module).__name__}; this method adapts only "
                f"{', '.join(t.__name__ for t in allowed_types)} modules"
            )
        target = targets.setdefault(path, ModuleTarget(path, module, _block_index(layout, path)))
        if role and role not in target.roles:
            target.roles.append(role)
        if out_slice is not None:
            target.out_slices.append(out_slice)

    if isinstance(target_modules, str) and target_modules != "all-linear":
        pattern = re.compile(target_modules)
        for path, module in model.named_modules():
            block = _block_index(layout, path)
            if pattern.fullmatch(path) and (block is None or block in wanted_blocks):
                add(path, module, None, None)
        if not targets:
            raise TargetModuleError(f"{field_name}: the pattern {target_modules!r} matched no module of "
                                    f"{type(model).__name__}; {_hint(model, layout)}")
    else:
        names = layout.available_roles() if target_modules == "all-linear" else list(target_modules)
        unused: list[str] = []
        for name in names:
            role = ROLE_ALIASES.get(name, name)
            found = False
            if role in layout.available_roles():
                for block in sorted(wanted_blocks):
                    rt = layout.role_target(block, role)
                    add(rt.path, rt.module, role, rt.out_slice)
                    found = True
            else:
                for path, module in model.named_modules():
                    block = _block_index(layout, path)
                    if (path == name or path.endswith("." + name)) and (block is None or block in wanted_blocks):
                        add(path, module, None, None)
                        found = True
            if not found:
                unused.append(name)
        if unused:
            raise TargetModuleError(f"{field_name}: {unused} matched no module of {type(model).__name__}; "
                                    f"{_hint(model, layout)}")
    return list(targets.values())  # paths may run through another method's wrapper: never drop a match


def _hint(model: nn.Module, layout: ResolvedLayout) -> str:
    leaf_names = sorted({p.rsplit(".", 1)[-1] for p, m in model.named_modules() if isinstance(m, PROJECTION_TYPES)})
    return (f"layout roles for {layout.layout.family}: {', '.join(layout.available_roles())}; "
            f"projection module names: {', '.join(leaf_names)}")
