"""What every method builds on: adapter layers found structurally, and the tuner protocol.

* :class:`AdapterLayer` wraps one base module (``base_layer``) and keeps each adapter's parameters in containers
  (``nn.ModuleDict`` / ``nn.ParameterDict``) keyed by adapter name. The containers are listed in
  ``adapter_containers``; that is how adapter parameters are found, never by substrings of parameter names.
  State-dict keys come out in peft's layout: ``<module path>.<container>.<adapter>.<param>``, saved with the
  adapter name removed.
  A new adapter's parameters go through :meth:`AdapterLayer.place_adapter`, the one place that decides their
  device (the base layer's), dtype (fp32, :data:`ADAPTER_DTYPE`) and ``requires_grad``.
* :class:`Tuner` is the per-method strategy: inject layers for a config, describe what it counts, and say what
  an adapter of the method is inside a ``PeftModel`` (its parameters, what it saves and loads, which operations
  it allows). The defaults describe adapter layers added to a frozen base model; full fine-tuning, whose
  "adapter" is the base weights themselves, overrides them, so ``PeftModel`` never asks which kind it has.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, ClassVar, Iterator, TypeVar

import torch
import torch.nn as nn

from ..errors import AdapterError, UnsupportedModelError
from ..layout import get_layout

SAVED_KEY_PREFIX = "base_model.model."
"""Saved keys and PeftModel parameter names start with this (peft's layout: ``PeftModel.base_model.model``)."""
CLASSIFIER_HEADS = ("classifier", "score")
"""Attribute names of a sequence classifier's head in transformers models (BERT-like, GPT-2/Llama-like)."""

if TYPE_CHECKING:  # pragma: no cover
    from ..config import PeftConfig
    from ..layout import ResolvedLayout

ADAPTER_DTYPE = torch.float32
"""dtype of adapter weights whatever the base model's (layers cast their inputs to it and their outputs back)."""

_Placed = TypeVar("_Placed", nn.Module, nn.Parameter)


class AdapterLayer(nn.Module):
    """A base module plus per-adapter parameters. Subclasses implement ``forward`` and (if mergeable) merging."""

    adapter_containers: ClassVar[tuple[str, ...]] = ()
    """Names of the ``ModuleDict``/``ParameterDict`` attributes keyed by adapter name."""
    attached: ClassVar[bool] = False
    """False (default): the layer took the place of ``base_layer``, and removing it puts ``base_layer`` back.
    True: the layer was added as a new child beside the model's modules (``base_layer`` is a placeholder), and
    removing it calls :meth:`detach` and deletes it (prefix tuning: module paths of the model stay unchanged)."""
    adapter_dtype: ClassVar[torch.dtype | None] = ADAPTER_DTYPE
    """dtype of the floating-point adapter parameters; None: they keep the dtype they were made in (a trained copy
    of a base module keeps the module's)."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disabled = False

    # --- placing a new adapter's parameters ---------------------------------------------------------------------
    def adapter_device(self) -> torch.device:
        """Where this layer's adapter tensors live: the device of the base layer's parameters (CPU if none)."""
        return next((p.device for p in self.base_layer.parameters()), torch.device("cpu"))

    def place_adapter(self, item: _Placed, trainable: bool) -> _Placed:
        """Put a new adapter module or parameter on :meth:`adapter_device`, its floating-point tensors in
        ``adapter_dtype`` (integer state, e.g. Solo's step counter, keeps its dtype and is never trained), and set
        ``requires_grad`` of its floating-point parameters to ``trainable``. Returns ``item``: every method passes
        what it adds through here, in place (parameter identity is kept)."""
        device = self.adapter_device()
        if isinstance(item, nn.Parameter):
            dtype = self.adapter_dtype if item.is_floating_point() else None
            moved = item.data.to(device=device, dtype=dtype)
            if moved is not item.data:
                item.data = moved
            params = [item]
        else:
            item.to(device=device, dtype=self.adapter_dtype)
            params = list(item.parameters())
        for param in params:
            if param.is_floating_point():
                param.requires_grad_(trainable)
        return item

    # --- adapter bookkeeping -----------------------------------------------------------------------------------
    def adapter_names(self) -> list[str]:
        names: list[str] = []
        for container in self.adapter_containers:
            for name in getattr(self, container).keys():
                if name not in names:
                    names.append(name)
        return names

    def has_adapter(self, name: str) -> bool:
        return any(name in getattr(self, c) for c in self.adapter_containers)

    def adapter_parameters(self, adapter_name: str) -> Iterator[tuple[str, nn.Parameter]]:
        """``(key relative to this layer with the adapter name removed, parameter)`` for one adapter."""
        for container_name in self.adapter_containers:
            container = getattr(self, container_name)
            if adapter_name not in container:
                continue
            item = container[adapter_name]
            if isinstance(item, nn.Parameter):
                yield self.state_key(container_name, ""), item
            else:
                for rel, param in item.named_parameters():
                    yield self.state_key(container_name, rel), param

    def state_key(self, container: str, rel: str) -> str:
        """Saved key (relative to this layer) of parameter ``rel`` of ``container``."""
        return f"{container}.{rel}" if rel else container

    def set_active(self, names: list[str]) -> None:
        self.active_adapters = [n for n in names if self.has_adapter(n)]

    def delete_adapter(self, name: str) -> None:
        if name in self.merged_adapters:
            self.unmerge()
        for container in self.adapter_containers:
            holder = getattr(self, container)
            if name in holder:
                del holder[name]
        self.active_adapters = [n for n in self.active_adapters if n != name]

    # --- merging (mergeable methods override) ------------------------------------------------------------------
    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    def merge(self, adapter_names: list[str]) -> None:
        raise AdapterError(f"{type(self).__name__} cannot be merged into the base weights")

    def unmerge(self) -> None:
        raise AdapterError(f"{type(self).__name__} cannot be unmerged")

    def uses_adapter(self) -> bool:
        """True when a forward pass should add the adapters' contribution (not disabled, not merged)."""
        return not self.disabled and not self.merged and bool(self.active_adapters)

    def detach(self) -> None:
        """Undo what an attached layer installed outside itself (e.g. hooks); called right before its removal."""


class ModulesToSaveWrapper(AdapterLayer):
    """A trainable copy of a base module (e.g. a classifier head) per adapter; the original stays untouched.

    Saved keys are the module's own parameter names (``classifier.weight``), as in peft.
    """

    adapter_containers = ("modules_to_save",)
    adapter_dtype = None  # the copy trains in the base module's own dtype

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.modules_to_save = nn.ModuleDict()

    def add(self, adapter_name: str, trainable: bool) -> None:
        self.modules_to_save[adapter_name] = self.place_adapter(copy.deepcopy(self.base_layer), trainable)

    def state_key(self, container: str, rel: str) -> str:
        return rel

    def forward(self, *args, **kwargs):
        if self.disabled or not self.active_adapters:
            return self.base_layer(*args, **kwargs)
        return self.modules_to_save[self.active_adapters[0]](*args, **kwargs)

    def merge(self, adapter_names: list[str]) -> None:  # a trained copy "merges" by being kept
        self.merged_adapters = list(adapter_names)

    def unmerge(self) -> None:
        self.merged_adapters = []

    def uses_adapter(self) -> bool:
        return not self.disabled and bool(self.active_adapters)

    def merged_module(self) -> nn.Module:
        return self.modules_to_save[self.merged_adapters[0]] if self.merged_adapters else self.base_layer


def replace_module(root: nn.Module, path: str, new_module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new_module)


def unwrap_layer(root: nn.Module, path: str, layer: AdapterLayer, replacement: nn.Module | None = None) -> None:
    """Take ``layer`` (at ``path``) out of the model: put ``replacement`` (default: its base layer) in its place, or,
    for an ``attached`` layer, detach and delete it."""
    if not layer.attached:
        replace_module(root, path, layer.base_layer if replacement is None else replacement)
        return
    layer.detach()
    parent_path, _, child = path.rpartition(".")
    delattr(root.get_submodule(parent_path) if parent_path else root, child)


def iter_adapter_layers(root: nn.Module) -> Iterator[tuple[str, AdapterLayer]]:
    for path, module in root.named_modules():
        if isinstance(module, AdapterLayer):
            yield path, module


def classifier_head(model: nn.Module, include_pooler: bool = True) -> list[str] | None:
    """The modules of a sequence classifier's head, as ``modules_to_save`` names: the classifier (``classifier`` or
    ``score``) and, with ``include_pooler``, the body's pooler where the architecture's layout has one
    (:attr:`peftlab.layout.ModelLayout.pooler`). peft's default trains the classifier alone; a pooler left frozen
    is a fixed random projection where the checkpoint never trained it. None for other models."""
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return None
    heads = [name for name in CLASSIFIER_HEADS if isinstance(getattr(model, name, None), nn.Module)][:1]
    if heads and include_pooler:
        try:
            pooler = get_layout(model).pooler()
        except UnsupportedModelError:  # no layout: the classifier alone (inject reports the missing layout itself)
            pooler = None
        if pooler is not None:
            heads.append(pooler[0])  # e.g. "bert.pooler"
    return heads or None


class Tuner:
    """Per-method strategy. Subclasses set ``config_cls`` and implement :meth:`inject`."""

    config_cls: ClassVar[type["PeftConfig"]]
    method_name: ClassVar[str | None] = None
    """The one name users type for the method (CLI, recipes, docs page); None: the peft_type in lower case with
    ``-`` (``KERNEL_MIX`` -> ``kernel-mix``). Not inherited by subclasses."""
    mergeable: ClassVar[bool] = False
    """Whether the method's update can be folded into the base weights."""
    supports_compile: ClassVar[bool] = True
    """Whether ``torch.compile`` of the transformer blocks (``run.compile``) computes the same steps as eager mode
    (checked for each shipped method in tests/test_compile.py)."""
    compile_scope: ClassVar[str] = "block"
    """What ``run.compile`` compiles in each block: ``"block"``, the whole block (one graph); ``"outside-attention"``,
    the block's FFN and norms (layout roles ``ffn``, ``attn_norm``, ``ffn_norm``) while its attention stays eager,
    for a method whose attention reads state that changes outside the block's inputs (the prefix methods)."""

    @classmethod
    def inject(cls, model: nn.Module, config: "PeftConfig", adapter_name: str, layout: "ResolvedLayout",
               trainable: bool) -> None:
        """Add adapter ``adapter_name`` to ``model`` (in place). Raise a PeftlabError on bad config/targets;
        the caller removes anything half-injected."""
        raise NotImplementedError

    @classmethod
    def describe(cls, config: "PeftConfig") -> str:
        """What the trainable-parameter count includes, in a few words (for `adapter_summary`)."""
        return cls.config_cls.__name__

    # --- what an adapter of this method is inside a PeftModel (FullFinetuneTuner overrides these) -------------
    @classmethod
    def freeze_base(cls, model: nn.Module) -> None:
        """Called before the model's first adapter is injected: only adapters train, so every base parameter is
        frozen (:meth:`inject` sets the new adapter's own ``requires_grad``). Full fine-tuning freezes nothing."""
        for param in model.parameters():
            param.requires_grad_(False)

    @classmethod
    def default_modules_to_save(cls, model: nn.Module) -> list[str] | None:
        """``modules_to_save`` for a config that leaves it None: a sequence classifier's head (new, so it must
        train and be saved with the adapter) with the pooler it reads (:func:`classifier_head`), else None. Full
        fine-tuning: None (the head is part of the model)."""
        return classifier_head(model)

    @classmethod
    def check_operation(cls, operation: str) -> None:
        """Raise AdapterError if ``operation`` is impossible with an adapter of this method: ``"share"`` (the
        model gets a second adapter; asked of every method involved), ``"delete_adapter"``, ``"disable_adapter"``,
        ``"disable_adapter_layers"``. Default: all are possible."""

    @classmethod
    def added_parameters(cls, peft_model, adapter_name: str) -> dict[str, nn.Parameter]:
        """The parameters the adapter adds to the base model, by saved key: its adapter layers' containers,
        found structurally (none for full fine-tuning). ``base_parameter_count`` leaves them out; a training
        checkpoint keeps them even when frozen (Solo's step counter)."""
        params = {}
        for path, layer in iter_adapter_layers(peft_model.model):
            for key, param in layer.adapter_parameters(adapter_name):
                params[f"{SAVED_KEY_PREFIX}{path}.{key}"] = param
        return params

    @classmethod
    def adapter_parameters(cls, peft_model, adapter_name: str) -> dict[str, nn.Parameter]:
        """The parameters that make up the adapter, by saved key (``PeftModel.adapter_parameters``, counted by
        ``adapter_summary``). Default: :meth:`added_parameters`; full fine-tuning: every parameter of the model."""
        return cls.added_parameters(peft_model, adapter_name)

    @classmethod
    def load_targets(cls, peft_model, adapter_name: str) -> tuple[dict[str, torch.Tensor], set[str]]:
        """(the tensors a state dict of the adapter may load into, by saved key; the keys it must hold), for
        ``set_peft_model_state_dict``. Default: the adapter's parameters, every one required."""
        params = cls.adapter_parameters(peft_model, adapter_name)
        return dict(params), set(params)

    # --- saving/loading hooks (defaults keep the generic behaviour: the file holds the adapter's parameters) -----
    @classmethod
    def state_for_save(cls, peft_model, adapter_name: str) -> dict[str, torch.Tensor] | None:
        """Tensors for ``adapter_model.safetensors`` under their saved keys, or None for the adapter's parameters
        (the default). Prefix methods return the ejected prefix here (what inference needs)."""
        return None

    @classmethod
    def extra_files_for_save(cls, peft_model, adapter_name: str) -> dict[str, dict[str, torch.Tensor]]:
        """Further safetensors files written beside ``adapter_model.safetensors``: {file name: tensors}."""
        return {}

    @classmethod
    def state_for_load(cls, peft_model, adapter_name: str, directory, tensors: dict[str, torch.Tensor],
                       path) -> tuple[dict[str, torch.Tensor], object]:
        """The tensors to load into the freshly added adapter ``adapter_name`` from folder ``directory`` (and the
        file they came from, for error messages). Default: ``adapter_model.safetensors`` as read."""
        return tensors, path

    # --- training hooks (the training loop calls these for every adapter; defaults do nothing) ---------------
    @classmethod
    def on_train_begin(cls, peft_model, adapter_name: str, total_steps: int, warmup_steps: int) -> None:
        """Called once before training with the run's planned optimizer steps and warm-up (e.g. Solo Connection
        fits ramp_steps="auto" to the run)."""

    @classmethod
    def on_train_end(cls, peft_model, adapter_name: str) -> None:
        """Called once after the last optimizer step, before the final evaluation (e.g. warnings about state)."""

    @classmethod
    def on_optimizer_step(cls, peft_model, adapter_name: str) -> None:
        """Called after each optimizer step (e.g. Solo Connection advances its homotopy step count)."""

    @classmethod
    def training_log(cls, peft_model, adapter_name: str) -> dict[str, object]:
        """Values to log with the loss (e.g. Solo's t, the gated prefix's gate values); JSON-serialisable."""
        return {}
