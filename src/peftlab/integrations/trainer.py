"""Train a peftlab model inside ``transformers.Trainer`` (and TRL's trainers, which subclass it).

Two pieces, used together or apart::

    from peftlab.integrations import PeftlabTrainer
    trainer = PeftlabTrainer(model=peft_model, args=TrainingArguments(...), train_dataset=ds)
    trainer.train()                      # adapters saved in every checkpoint-N/ folder, peft's layout

- :class:`PeftlabCallback` runs the methods' training hooks at the points peftlab's own loop runs them: when training
  begins (Solo's ``ramp_steps="auto"`` becomes a number that fits ``state.max_steps``), after every optimizer step
  (Solo's homotopy step), in the logs (Solo's t), and when training ends (a ramp that did not finish is warned about).
  Give it to any Trainer subclass, e.g. ``trl.SFTTrainer(..., callbacks=[PeftlabCallback()])``.
- :class:`PeftlabTrainer` adds the callback itself and saves/loads checkpoints as adapter folders
  (``adapter_config.json`` + ``adapter_model.safetensors`` per adapter) instead of the whole model's state dict, which
  ``Trainer`` cannot write for a model with tied weights. ``resume_from_checkpoint`` and ``load_best_model_at_end``
  read those folders back into the live adapters, so the optimizer keeps pointing at the same parameters. With
  ``bf16=True`` on a CPU that only emulates bf16 (AVX2), its training and prediction steps compute their bf16 matrix
  products with fp32 kernels, as ``peftlab train`` does (:mod:`peftlab.train.bf16_gemm`; ~1.2x an fp32 step there
  instead of ~39x).

The dataset columns: ``PeftModel.forward`` names the usual inputs (``input_ids``, ``attention_mask``, ``labels``,
``token_type_ids``, ...), so ``Trainer``'s ``remove_unused_columns`` keeps them; :class:`PeftlabTrainer` goes further
and keeps every input the wrapped model's own forward names.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import torch.nn as nn
from transformers import Trainer, TrainerCallback

from ..errors import AdapterError
from ..io import WEIGHTS_NAME
from ..model import PeftModel, _read_adapter_folder
from ..train import bf16_gemm

__all__ = ["PeftlabCallback", "PeftlabTrainer", "find_peft_model"]


def find_peft_model(model: nn.Module | None) -> PeftModel | None:
    """The :class:`PeftModel` inside ``model`` (itself, or under DDP/FSDP/compile wrappers), or None."""
    seen = 0
    while model is not None and seen < 8:
        if isinstance(model, PeftModel):
            return model
        model = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        seen += 1
    return None


class PeftlabCallback(TrainerCallback):
    """Runs each adapter's training hooks (``Tuner.on_train_begin`` / ``on_optimizer_step`` / ``training_log`` /
    ``on_train_end``) inside a ``transformers.Trainer``. Harmless for methods without hooks."""

    def __init__(self) -> None:
        self._peft_model: PeftModel | None = None

    def _model(self, model: nn.Module | None) -> PeftModel | None:
        found = find_peft_model(model)
        if found is not None:
            self._peft_model = found
        return self._peft_model

    @staticmethod
    def _each_adapter(peft_model: PeftModel, hook: str, *args: Any) -> None:
        """Call the tuner hook ``hook`` of every adapter of ``peft_model``."""
        for name in peft_model.peft_config:
            getattr(peft_model._tuner(name), hook)(peft_model, name, *args)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        peft_model = self._model(model)
        if peft_model is None:
            raise AdapterError("PeftlabCallback: the Trainer's model is not a peftlab PeftModel "
                               f"(got {type(model).__name__}); wrap it with peftlab.get_peft_model first")
        warmup = int(args.get_warmup_steps(state.max_steps)) if state.max_steps > 0 else 0
        self._each_adapter(peft_model, "on_train_begin", int(state.max_steps), warmup)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        """Called once per optimizer step (after ``optimizer.step()``), not per micro-batch."""
        peft_model = self._model(model)
        if peft_model is not None:
            self._each_adapter(peft_model, "on_optimizer_step")
        return control

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        peft_model = self._model(model)
        if peft_model is not None and logs is not None and "loss" in logs:  # training logs, not eval ones
            extra: dict[str, object] = {}
            for name in peft_model.peft_config:
                extra.update(peft_model._tuner(name).training_log(peft_model, name))
            logs.update(extra)  # what the reporting callbacks after this one print / send
            history = state.log_history
            if history and history[-1].get("step") == state.global_step and "loss" in history[-1]:
                history[-1].update(extra)  # Trainer appended a copy of `logs` before calling the callbacks
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        peft_model = self._model(model)
        if peft_model is not None:
            self._each_adapter(peft_model, "on_train_end")
        return control


class PeftlabTrainer(Trainer):
    """``transformers.Trainer`` for peftlab models: adds :class:`PeftlabCallback`, keeps the wrapped model's input
    columns, and checkpoints adapters in peft's folder layout (the frozen base model is never written)."""

    def __init__(self, *args: Any, bf16_weight_copies: bool = True, **kwargs: Any) -> None:
        """``Trainer``'s arguments, and ``bf16_weight_copies``: with ``args.bf16`` on a CPU that only emulates bf16,
        read the frozen bf16 weights from fp32 copies made once (the same bits, faster, 4 more bytes a frozen
        parameter) rather than upcast them at every product (recipe field ``run.bf16_weight_copies``)."""
        super().__init__(*args, **kwargs)
        if find_peft_model(self.model) is None:
            raise AdapterError(f"PeftlabTrainer trains a peftlab PeftModel; got {type(self.model).__name__} "
                               "(use transformers.Trainer for a plain model)")
        if not any(isinstance(cb, PeftlabCallback) for cb in self.callback_handler.callbacks):
            self.add_callback(PeftlabCallback())
        # decided once (it reads the CPU's flags), not at every step
        self._fp32_matmuls = bf16_gemm.wanted(bool(self.args.bf16), self.args.device)
        # frozen bf16 weights (a model loaded in bf16) are read from fp32 copies instead of upcast at every product
        self._fp32_copies = None
        if self._fp32_matmuls and bf16_weight_copies:
            self._fp32_copies = bf16_gemm.FrozenFp32Copies(p for p in self.model.parameters() if not p.requires_grad)

    def _matmul_mode(self):
        """bf16 matrix products through fp32 kernels where ``args.bf16`` runs on a CPU that only emulates bf16."""
        return bf16_gemm.fp32_matmuls_for_bf16(self._fp32_matmuls, self._fp32_copies)

    def training_step(self, *args: Any, **kwargs: Any):
        with self._matmul_mode():
            return super().training_step(*args, **kwargs)

    def prediction_step(self, *args: Any, **kwargs: Any):
        with self._matmul_mode():
            return super().prediction_step(*args, **kwargs)

    def _peft(self) -> PeftModel:
        peft_model = find_peft_model(self.model)
        assert peft_model is not None
        return peft_model

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            wrapped = self._peft().base_model.model
            names = set(inspect.signature(wrapped.forward).parameters)
            names |= set(inspect.signature(self._peft().forward).parameters)
            names -= {"args", "kwargs"}
            self._signature_columns = sorted(names | {"label", "label_ids", *self.label_names})

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self._peft().save_pretrained(output_dir)  # every adapter: "default" at the top, others in sub-folders
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)

    def _load_adapters(self, folder: str | os.PathLike) -> None:
        """Read every adapter saved in ``folder`` back into the live adapter of that name."""
        peft_model = self._peft()
        folder = Path(folder)
        for name in peft_model.peft_config:
            source = folder if name == "default" else folder / name
            if not (source / WEIGHTS_NAME).is_file():
                raise AdapterError(f"{source} has no {WEIGHTS_NAME} for adapter {name!r}; was this checkpoint "
                                   "written by PeftlabTrainer?")
            _config, tensors, path = _read_adapter_folder(source, is_trainable=True)
            peft_model._fill_adapter(name, source, tensors, path)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        self._load_adapters(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best is None or not (Path(best) / WEIGHTS_NAME).is_file():
            raise AdapterError(f"load_best_model_at_end: no adapter checkpoint at {best!r}")
        self._load_adapters(best)
