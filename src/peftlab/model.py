"""`PeftModel`: a transformers model plus named adapters, with peft's API and file layout.

Module tree: ``PeftModel.base_model`` (a :class:`TunerHost`) ``.model`` (the transformers model), so parameter
names are ``base_model.model.<module path>...`` exactly as in peft, and adapter files use the same keys with the
adapter name removed.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from ._version import __version__
from .config import PeftConfig
from .errors import AdapterError, AdapterLoadError, ConfigError, TargetModuleError
from .io import WEIGHTS_NAME, read_adapter_weights, write_safetensors
from .layout import get_layout
from .registry import get_method
from .tuners.base import (
    SAVED_KEY_PREFIX,
    AdapterLayer,
    ModulesToSaveWrapper,
    iter_adapter_layers,
    replace_module,
    unwrap_layer,
)

PREFIX = SAVED_KEY_PREFIX  # "base_model.model."


class TunerHost(nn.Module):
    """Holds the transformers model as ``.model`` (peft's ``LoraModel`` position in the tree), and answers what peft
    users call on ``peft_model.base_model``: ``merge_and_unload``, ``unload``, ``merge_adapter``,
    ``unmerge_adapter``, ``disable_adapter_layers``, ``enable_adapter_layers``, ``set_adapter``,
    ``delete_adapter``, ``active_adapter(s)``, ``peft_config`` — each the PeftModel's own."""

    _DELEGATED = ("merge_and_unload", "unload", "merge_adapter", "unmerge_adapter", "disable_adapter_layers",
                  "enable_adapter_layers", "set_adapter", "delete_adapter", "add_adapter", "disable_adapter",
                  "get_peft_model_state_dict", "set_peft_model_state_dict", "print_trainable_parameters",
                  "get_nb_trainable_parameters")

    def __init__(self, model: nn.Module, owner: "PeftModel | None" = None) -> None:
        super().__init__()
        self.model = model
        self._owner = weakref.ref(owner) if owner is not None else None  # weak: no reference cycle

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def owner(self) -> "PeftModel":
        peft_model = self._owner() if self._owner is not None else None
        if peft_model is None:
            raise AdapterError("this TunerHost is not attached to a PeftModel (use the PeftModel's own methods)")
        return peft_model

    def __getattr__(self, name: str) -> Any:
        if name in TunerHost._DELEGATED or name in ("peft_config", "active_adapter", "active_adapters"):
            return getattr(self.owner(), name)
        return super().__getattr__(name)

    def __getstate__(self) -> dict[str, Any]:  # pickling: the weak reference is re-made by PeftModel.__setstate__
        state = self.__dict__.copy()
        state["_owner"] = None
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> "TunerHost":
        twin = type(self).__new__(type(self))
        memo[id(self)] = twin
        for key, value in self.__dict__.items():
            if key != "_owner":
                twin.__dict__[key] = copy.deepcopy(value, memo)
        owner = self._owner() if self._owner is not None else None
        copied_owner = memo.get(id(owner)) if owner is not None else None
        twin.__dict__["_owner"] = weakref.ref(copied_owner) if copied_owner is not None else None
        return twin


class PeftModel(nn.Module):
    """A base model with one or more adapters; one adapter is active at a time."""

    def __init__(self, model: nn.Module, peft_config: PeftConfig, adapter_name: str = "default") -> None:
        super().__init__()
        self.base_model = TunerHost(model, owner=self)
        self.peft_config: dict[str, PeftConfig] = {}
        self.active_adapter: str | None = None
        self._layout = get_layout(model)
        self.add_adapter(adapter_name, peft_config)
        self.set_adapter(adapter_name)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.base_model.__dict__["_owner"] = weakref.ref(self)

    # --- delegation --------------------------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        """The wrapped transformers model (with adapter layers inside)."""
        return self.base_model.model

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model.model, name)

    def forward(self, input_ids: torch.Tensor | None = None, *args: Any, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **kwargs: Any):
        """The wrapped model's forward. The usual inputs are named (as in peft's ``PeftModel*.forward``), so
        ``transformers.Trainer`` keeps those dataset columns; anything else passes through as given."""
        named = {"attention_mask": attention_mask, "labels": labels, "token_type_ids": token_type_ids,
                 "position_ids": position_ids, "inputs_embeds": inputs_embeds}
        kwargs.update({key: value for key, value in named.items() if value is not None})
        if input_ids is not None or args:
            return self.base_model.model(input_ids, *args, **kwargs)
        return self.base_model.model(**kwargs)

    def generate(self, *args, **kwargs):
        """``transformers`` ``generate`` on the adapted model (greedy, sampling, beam search, KV cache)."""
        return self.base_model.model.generate(*args, **kwargs)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None,
                                      activation_checkpointing_kwargs: dict | None = None, **options: Any) -> None:
        """Activation checkpointing of the blocks; non-reentrant by default, which needs no input gradients.
        Takes the options under either name (transformers 5 says ``activation_checkpointing_kwargs``); other options
        (``every_n_layers``, ``offload``) go to the wrapped model's own method."""
        given = activation_checkpointing_kwargs if gradient_checkpointing_kwargs is None \
            else gradient_checkpointing_kwargs
        kwargs = {"use_reentrant": False} if given is None else given
        if kwargs.get("use_reentrant", True):
            self.model.enable_input_require_grads()  # reentrant checkpointing drops grads of frozen-input blocks
        if hasattr(self.model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, **options)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs, **options)
        if not kwargs.get("use_reentrant", True):
            # transformers makes the embeddings require grad either way; non-reentrant checkpointing does not need
            # it, and without it backward stops at the lowest trainable block (Solo's top-only skips stay cheap)
            self.model.disable_input_require_grads()

    activation_checkpointing_enable = gradient_checkpointing_enable

    # --- adapters ----------------------------------------------------------------------------------------------
    def _tuner(self, adapter_name: str):
        return get_method(self.peft_config[adapter_name]).tuner_cls

    def _check_name(self, adapter_name: str) -> None:
        if adapter_name not in self.peft_config:
            raise AdapterError(f"no adapter named {adapter_name!r}; adapters: {list(self.peft_config) or 'none'}")

    def add_adapter(self, adapter_name: str, peft_config: PeftConfig, trainable: bool | None = None) -> None:
        """Inject a new adapter (not activated: call :meth:`set_adapter`). On any error nothing stays attached."""
        if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name:
            raise ConfigError(f"adapter_name: expected a non-empty name without '.', got {adapter_name!r}")
        if adapter_name in self.peft_config:
            raise AdapterError(f"an adapter named {adapter_name!r} already exists; delete it first or pick another name")
        if not isinstance(peft_config, PeftConfig):
            raise ConfigError(f"peft_config: expected a peftlab config (e.g. LoraConfig), got {type(peft_config).__name__}")
        tuner = get_method(peft_config).tuner_cls
        if self.peft_config:  # a second adapter: each method involved must allow sharing the model
            for method in dict.fromkeys([tuner, *(self._tuner(n) for n in self.peft_config)]):
                method.check_operation("share")
        model = self.model
        changes: dict[str, Any] = {}
        if peft_config.base_model_name_or_path is None:
            changes["base_model_name_or_path"] = getattr(model.config, "_name_or_path", None) or None
        if peft_config.modules_to_save is None and (heads := tuner.default_modules_to_save(model)) is not None:
            changes["modules_to_save"] = heads  # e.g. a new classifier head trains and is saved with the adapter
        config = dataclasses.replace(peft_config, **changes) if changes else peft_config
        trainable = (not config.inference_mode) if trainable is None else trainable
        frozen_here: list[tuple[nn.Parameter, bool]] = []
        if not self.peft_config:
            frozen_here = requires_grad_flags(model)
            tuner.freeze_base(model)
        try:
            tuner.inject(model, config, adapter_name, self._layout, trainable)
            self._add_modules_to_save(config, adapter_name, trainable)
        except BaseException:
            self._remove_adapter_layers(adapter_name)
            restore_requires_grad(frozen_here)  # nothing left behind: the base model trains as it did before
            raise
        self.peft_config[adapter_name] = config
        if self.active_adapter is not None:
            self._set_layers_active(self.active_adapter)

    def _add_modules_to_save(self, config: PeftConfig, adapter_name: str, trainable: bool) -> None:
        for name in config.modules_to_save or []:
            matches = [(p, m) for p, m in self.model.named_modules()
                       if (p == name or p.endswith("." + name)) and not isinstance(m, AdapterLayer)
                       and not p.endswith("base_layer")]
            wrappers = [(p, m) for p, m in self.model.named_modules()
                        if isinstance(m, ModulesToSaveWrapper) and (p == name or p.endswith("." + name))]
            if not matches and not wrappers:
                raise TargetModuleError(f"modules_to_save: no module named {name!r} in {type(self.model).__name__}")
            for path, module in wrappers or matches:
                wrapper = module if isinstance(module, ModulesToSaveWrapper) else ModulesToSaveWrapper(module)
                if wrapper is not module:
                    replace_module(self.model, path, wrapper)
                wrapper.add(adapter_name, trainable)

    def _set_layers_active(self, adapter_name: str | None) -> None:
        for _, layer in iter_adapter_layers(self.model):
            layer.set_active([adapter_name] if adapter_name else [])

    def set_adapter(self, adapter_name: str) -> None:
        """Make ``adapter_name`` the active adapter. ``requires_grad`` is left as it is (no silent flips)."""
        self._check_name(adapter_name)
        if any(layer.merged for _, layer in iter_adapter_layers(self.model)) and adapter_name != self.active_adapter:
            warnings.warn("set_adapter: unmerging the merged adapter first", stacklevel=2)
            self.unmerge_adapter()
        self._set_layers_active(adapter_name)
        self.active_adapter = adapter_name

    @property
    def active_adapters(self) -> list[str]:
        return [self.active_adapter] if self.active_adapter else []

    def delete_adapter(self, adapter_name: str) -> None:
        self._check_name(adapter_name)
        self._tuner(adapter_name).check_operation("delete_adapter")
        self._remove_adapter_layers(adapter_name)
        del self.peft_config[adapter_name]
        if self.active_adapter == adapter_name:
            self.active_adapter = None
            if self.peft_config:
                self.set_adapter(next(iter(self.peft_config)))

    def _remove_adapter_layers(self, adapter_name: str) -> None:
        """Remove ``adapter_name`` everywhere; unwrap layers left without adapters (deepest first)."""
        for path, layer in reversed(list(iter_adapter_layers(self.model))):
            if layer.has_adapter(adapter_name):
                layer.delete_adapter(adapter_name)
            if not layer.adapter_names():
                unwrap_layer(self.model, path, layer)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Within the block the model is exactly the base model; merge state and ``requires_grad`` are restored."""
        for name in self.peft_config:
            self._tuner(name).check_operation("disable_adapter")
        layers = [layer for _, layer in iter_adapter_layers(self.model)]
        merged = {id(layer): list(layer.merged_adapters) for layer in layers}
        for layer in layers:
            if layer.merged:
                layer.unmerge()
            layer.disabled = True
        try:
            yield
        finally:
            for layer in layers:
                layer.disabled = False
                if merged[id(layer)]:
                    layer.merge(merged[id(layer)])

    def disable_adapter_layers(self) -> None:
        """Turn every adapter layer off until :meth:`enable_adapter_layers` (peft's persistent form of
        :meth:`disable_adapter`); merged adapters are unmerged first."""
        for name in self.peft_config:
            self._tuner(name).check_operation("disable_adapter_layers")
        for _, layer in iter_adapter_layers(self.model):
            if layer.merged:
                warnings.warn("disable_adapter_layers: unmerging merged adapter weights first", stacklevel=2)
                layer.unmerge()
            layer.disabled = True

    def enable_adapter_layers(self) -> None:
        """Undo :meth:`disable_adapter_layers` (merged adapters stay unmerged)."""
        for _, layer in iter_adapter_layers(self.model):
            layer.disabled = False

    # --- merging -----------------------------------------------------------------------------------------------
    def _check_mergeable(self, adapter_names: list[str]) -> None:
        for name in adapter_names:
            self._check_name(name)
            if not self._tuner(name).mergeable:
                raise AdapterError(f"adapter {name!r} ({self.peft_config[name].peft_type}) cannot be merged into the "
                                   "base weights; keep the PeftModel for inference or use unload() to drop it")

    def merge_adapter(self, adapter_names: list[str] | None = None) -> None:
        names = adapter_names or self.active_adapters
        self._check_mergeable(names)
        for _, layer in iter_adapter_layers(self.model):
            layer.merge(names)

    def unmerge_adapter(self) -> None:
        for _, layer in iter_adapter_layers(self.model):
            if layer.merged:
                layer.unmerge()

    def merge_and_unload(self) -> nn.Module:
        """Fold the active adapter into the base weights and return the plain transformers model."""
        self._check_mergeable(self.active_adapters)
        self.merge_adapter()
        return self._unwrap_all(keep_merged=True)

    def unload(self) -> nn.Module:
        """Drop every adapter (unmerging first) and return the plain base model."""
        self.unmerge_adapter()
        return self._unwrap_all(keep_merged=False)

    def _unwrap_all(self, keep_merged: bool) -> nn.Module:
        for path, layer in reversed(list(iter_adapter_layers(self.model))):
            if isinstance(layer, ModulesToSaveWrapper) and keep_merged:
                replacement = layer.merged_module()
            else:
                replacement = layer.base_layer
            unwrap_layer(self.model, path, layer, replacement)
        self.peft_config.clear()
        self.active_adapter = None
        return self.model

    # --- parameters --------------------------------------------------------------------------------------------
    def adapter_parameters(self, adapter_name: str) -> dict[str, nn.Parameter]:
        """The adapter's parameters by saved key, as its method defines them (``Tuner.adapter_parameters``: the
        adapter layers' containers, found structurally; every parameter of the model for full fine-tuning)."""
        self._check_name(adapter_name)
        return self._tuner(adapter_name).adapter_parameters(self, adapter_name)

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable parameters, all parameters), each shared tensor counted once."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    def base_parameter_count(self) -> int:
        """Parameters of the base model alone (adapter containers and trained head copies excluded)."""
        adapter_ids = {id(p) for n in self.peft_config for p in self._tuner(n).added_parameters(self, n).values()}
        return sum(p.numel() for p in self.parameters() if id(p) not in adapter_ids)

    def adapter_summary(self) -> str:
        """A table: adapter, method, trainable params, % of base, what is counted."""
        base = self.base_parameter_count()
        header = ("adapter", "method", "params", "trainable", "% of base", "what is counted")
        rows = [header]
        for name, config in self.peft_config.items():
            params = list(self.adapter_parameters(name).values())
            count = sum(p.numel() for p in params)
            trainable = sum(p.numel() for p in params if p.requires_grad)
            what = self._tuner(name).describe(config)
            if config.modules_to_save:
                what += f" + modules_to_save: {','.join(config.modules_to_save)}"
            active = "*" if name == self.active_adapter else ""
            rows.append((name + active, config.peft_type, f"{count:,d}", f"{trainable:,d}",
                         f"{100 * count / base:.4f}", what))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"base model parameters: {base:,d}   (* = active adapter)")
        return "\n".join(lines)

    # --- state dicts and files ---------------------------------------------------------------------------------
    def get_peft_model_state_dict(self, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
        """The adapter's tensors under their saved keys (``base_model.model.<path>.<param>``, no adapter name)."""
        adapter_name = adapter_name or self.active_adapter
        self._check_name(adapter_name)
        custom = self._tuner(adapter_name).state_for_save(self, adapter_name)
        if custom is None:
            custom = {k: p.detach() for k, p in self.adapter_parameters(adapter_name).items()}
        if any(_is_sharded(t) for t in custom.values()):  # FSDP2: a collective, so every rank must call it
            custom = {k: t.full_tensor() if _is_sharded(t) else t for k, t in custom.items()}
        return custom

    def set_peft_model_state_dict(self, state_dict: dict[str, torch.Tensor], adapter_name: str | None = None,
                                  source: str = "state dict") -> None:
        """Load tensors (as saved, or gathered elsewhere, e.g. from FSDP) into an existing adapter; strict."""
        adapter_name = adapter_name or self.active_adapter
        self._check_name(adapter_name)
        expected, required = self._tuner(adapter_name).load_targets(self, adapter_name)
        missing = sorted(required - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise AdapterLoadError(
                f"{source}: does not match adapter {adapter_name!r} on {type(self.model).__name__} "
                f"(saved from another base model or method?); missing keys: {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}; unexpected keys: {unexpected[:5]}"
                f"{' ...' if len(unexpected) > 5 else ''}")
        for key, tensor in state_dict.items():
            if tuple(tensor.shape) != tuple(expected[key].shape):
                raise AdapterLoadError(f"{source}: {key} has shape {tuple(tensor.shape)}, the model expects "
                                       f"{tuple(expected[key].shape)} (adapter saved from a different base model?)")
        _check_values(state_dict, expected, source)
        with torch.no_grad():
            for key, tensor in state_dict.items():
                expected[key].copy_(tensor.to(expected[key].dtype))

    def save_pretrained(self, save_directory: str | Path, selected_adapters: list[str] | None = None,
                        is_main_process: bool = True) -> None:
        """Write each adapter as ``adapter_config.json`` + ``adapter_model.safetensors`` (peft's layout): the
        adapter named "default" at ``save_directory``, others in ``save_directory/<name>``.

        Under FSDP2 call it on every process (gathering the shards is a collective) with ``is_main_process`` true on
        one of them (``accelerator.is_main_process``): that one writes."""
        save_directory = Path(save_directory)
        for name in selected_adapters or list(self.peft_config):
            self._check_name(name)
            target = save_directory if name == "default" else save_directory / name
            metadata = {"peftlab_version": __version__, "peft_type": self.peft_config[name].peft_type}
            state = self.get_peft_model_state_dict(name)
            if not is_main_process:
                continue
            write_safetensors(state, target / WEIGHTS_NAME, metadata=metadata)
            for filename, tensors in self._tuner(name).extra_files_for_save(self, name).items():
                write_safetensors(tensors, target / filename, metadata=metadata)
            config = dataclasses.replace(self.peft_config[name], inference_mode=True)
            config.save_pretrained(target)

    def _fill_adapter(self, adapter_name: str, model_id: str | Path, tensors: dict[str, torch.Tensor],
                      path: Path) -> None:
        """Load a folder's tensors into the freshly added ``adapter_name`` (through the method's load hook)."""
        tensors, path = self._tuner(adapter_name).state_for_load(self, adapter_name, model_id, tensors, path)
        self.set_peft_model_state_dict(tensors, adapter_name, source=str(path))

    def load_adapter(self, model_id: str | Path, adapter_name: str, is_trainable: bool = False) -> None:
        """Add an adapter from a folder; if anything is wrong, the adapter is removed again and the error raised."""
        config, tensors, path = _read_adapter_folder(model_id, is_trainable)
        self.add_adapter(adapter_name, config)
        try:
            self._fill_adapter(adapter_name, model_id, tensors, path)
        except BaseException:
            self.delete_adapter(adapter_name)
            raise

    @classmethod
    def from_pretrained(cls, model: nn.Module, model_id: str | Path, adapter_name: str = "default",
                        is_trainable: bool = False) -> "PeftModel":
        """Attach the adapter saved in ``model_id`` to ``model``. Frozen unless ``is_trainable``."""
        config, tensors, path = _read_adapter_folder(model_id, is_trainable)
        flags = requires_grad_flags(model)
        peft_model = cls(model, config, adapter_name)
        try:
            peft_model._fill_adapter(adapter_name, model_id, tensors, path)
        except BaseException:
            peft_model.unload()
            restore_requires_grad(flags)  # nothing left behind, requires_grad included
            raise
        return peft_model


def requires_grad_flags(model: nn.Module) -> list[tuple[nn.Parameter, bool]]:
    """Every parameter with its requires_grad, to undo a failed wrap with :func:`restore_requires_grad`."""
    return [(param, param.requires_grad) for param in model.parameters()]


def restore_requires_grad(flags: list[tuple[nn.Parameter, bool]]) -> None:
    for param, flag in flags:
        param.requires_grad_(flag)


def _check_values(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """No integer tensor where a float is expected (it would load as whole numbers, mostly 0) or the reverse, no
    NaN/inf; a lower-precision float is loaded with a note."""
    lower: list[str] = []
    for key, tensor in state_dict.items():
        want = expected[key]
        if want.is_floating_point() != tensor.is_floating_point() or tensor.dtype == torch.bool:
            raise AdapterLoadError(f"{source}: {key} is {tensor.dtype}, the model expects {want.dtype} (an adapter "
                                   "tensor of the wrong kind; was the file written by another tool?)")
        if tensor.is_floating_point():
            if not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                raise AdapterLoadError(f"{source}: {key} holds {bad} NaN/inf value(s) of {tensor.numel()}; the "
                                       "adapter would make every output NaN (was it saved after a diverged step?)")
            if torch.finfo(tensor.dtype).bits < torch.finfo(want.dtype).bits:
                lower.append(f"{key} ({tensor.dtype})")
    if lower:
        warnings.warn(f"{source}: {len(lower)} tensor(s) are stored in lower precision than the model's and were "
                      f"widened on load, e.g. {lower[0]}; the values are what was saved, rounded", stacklevel=4)


def _read_adapter_folder(model_id: str | Path, is_trainable: bool) -> tuple[PeftConfig, dict[str, torch.Tensor], Path]:
    """An adapter folder's config (frozen unless ``is_trainable``) and weights, both read before anything attaches."""
    config = PeftConfig.from_pretrained(model_id)
    tensors, path = read_adapter_weights(model_id)
    return dataclasses.replace(config, inference_mode=not is_trainable), tensors, path


def _is_sharded(tensor: torch.Tensor) -> bool:
    """A DTensor shard (FSDP2 / tensor parallel) rather than a whole tensor."""
    return type(tensor).__name__ == "DTensor" and hasattr(tensor, "full_tensor")


def get_peft_model(model: nn.Module, peft_config: PeftConfig, adapter_name: str = "default") -> PeftModel:
    """Wrap ``model`` with a new adapter described by ``peft_config`` (active and trainable)."""
    return PeftModel(model, peft_config, adapter_name)


def get_peft_model_state_dict(model: PeftModel, state_dict: dict | None = None,
                              adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """peft's function form: the adapter's tensors under their saved keys. ``state_dict`` (e.g. gathered from
    FSDP/ZeRO-3 shards with ``accelerator.get_state_dict(model)``) is filtered to the adapter's keys instead of
    reading the live parameters; it may be keyed by saved names or by the PeftModel's own parameter names."""
    if state_dict is None:
        return model.get_peft_model_state_dict(adapter_name)
    custom = model._tuner(adapter_name).state_for_save(model, adapter_name)
    if custom is not None:  # a method with its own save format: the saved names are the only names
        saved_names = {k: k for k in custom}
    else:
        saved = model.adapter_parameters(adapter_name)
        own = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
        saved_names = {k: k if k in state_dict else own.get(id(p), k) for k, p in saved.items()}
    missing = [k for k, name in saved_names.items() if name not in state_dict]
    if missing:
        raise AdapterError(f"the given state dict lacks {len(missing)} keys of adapter {adapter_name!r}, "
                           f"e.g. {missing[:3]}")
    return {k: state_dict[name] for k, name in saved_names.items()}


def set_peft_model_state_dict(model: PeftModel, peft_model_state_dict: dict[str, torch.Tensor],
                              adapter_name: str = "default") -> None:
    """peft's function form of :meth:`PeftModel.set_peft_model_state_dict` (strict)."""
    model.set_peft_model_state_dict(peft_model_state_dict, adapter_name)
