"""The training loop: accelerate (single process by default; `accelerate launch`/torchrun for DDP), dynamic
padding, target-only loss, gradient accumulation, bf16 autocast, gradient checkpointing, periodic evaluation with
best-step selection, JSONL metrics, and resumable atomic checkpoints.

:class:`FinetuneRecipe` is one run in named steps, in the manner of torchtune's recipes::

    run = FinetuneRecipe(recipe, resume=..., overwrite=..., progress=...)
    with run.matmul_mode():  # bf16 on a CPU that only emulates it: fp32 kernels for the products (bf16_gemm)
        run.setup()          # run folder, setup_data(), setup_model(), setup_optimizer(), load_checkpoint()
        run.train()          # the optimizer steps; evaluate() and save_checkpoint() on their cadences
        metrics = run.finish()   # the best step's weights, the final evaluation, the run folder's files
    run.cleanup()        # the trackers

:func:`train` does exactly that.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..errors import ConfigError, PeftlabError
from ..hardware import describe as describe_hardware
from ..hardware import summary as hardware_summary
from ..metrics.ptb import resolve_backend
from ..model import get_peft_model
from ..registry import get_method
from ..tuners.base import classifier_head
from . import bf16_gemm
from .batching import batch_tokens
from .checkpoint import (BEST_FILE, TrainState, adapter_snapshot, checkpoint_step, find_checkpoint, load_best_snapshot,
                         load_checkpoint, nonfinite_tensors, prepare_checkpointing, restore_adapter, save_checkpoint)
from .methods import build_method_config
from .recipe import Recipe
from .rundir import peak_memory_mb, prepare_run_dir, truncate_log, undo_run_dir, write_run_files
from .speed import (cast_frozen_weights, compile_blocks, decoding_attn_implementation, fast_base_dropout,
                    fused_adamw_supported, refuse_uncompilable, resolve_bf16,
                    set_adamw_implementation, uncompile_blocks)
from .tasks import TASK_TYPES, load_task_model, make_task
from .trackers import PROJECT_NAME, flatten_scalars, hparams, resolve_trackers, tracker_dir


class NonFiniteLossError(PeftlabError, FloatingPointError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _forget_mixed_precision(wanted: str) -> None:
    """Let the next ``Accelerator`` take the mixed precision ``wanted`` ("bf16" or "no"). accelerate keeps one
    ``AcceleratorState`` per process and refuses a second Accelerator with another precision ("AcceleratorState has
    already been initialized"), which a second run in one process (a notebook, a driver script) with another
    precision would hit. Only then is that state dropped; the process group (``PartialState``) is kept. An earlier
    ``Accelerator`` still alive in this process shares that state, so it takes the new precision from then on."""
    from accelerate.state import AcceleratorState

    held = AcceleratorState._shared_state.get("_mixed_precision")
    reset = getattr(AcceleratorState, "_reset_state", None)
    if held is not None and held != wanted and reset is not None:
        reset(reset_partial_state=False)


def _training_device() -> str:
    """Where accelerate will train: CUDA when there is one, unless it is told to use the CPU."""
    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return "cuda" if torch.cuda.is_available() and not forced_cpu else "cpu"


def _with_resolved_bf16(recipe: Recipe, resume: bool) -> Recipe:
    """``recipe`` with ``run.bf16`` a bool, so config.yaml and every later step see one: ``auto`` is what this
    machine multiplies natively, or, resuming, what the run being resumed ran with. ``true`` where bf16 is only
    emulated warns."""
    if recipe.run.bf16 != "auto":
        if recipe.run.bf16:
            resolve_bf16(True, _training_device())
        return recipe
    stored = _stored_bf16(Path(recipe.run.output_dir)) if resume else None
    bf16 = stored if stored is not None else resolve_bf16("auto", _training_device())
    if int(os.environ.get("RANK", "0")) == 0:
        why = "as the run being resumed" if stored is not None else f"on {hardware_summary(describe_hardware())}"
        print(f"[train] run.bf16=auto: {'bf16' if bf16 else 'fp32'}, {why}")
    return dataclasses.replace(recipe, run=dataclasses.replace(recipe.run, bf16=bf16))


def _stored_bf16(output_dir: Path) -> bool | None:
    """``run.bf16`` of the run folder's config.yaml, if there is one with a bool there."""
    import yaml

    try:
        stored = (yaml.safe_load((output_dir / "config.yaml").read_text(encoding="utf-8")) or {}).get("run", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    value = stored.get("bf16") if isinstance(stored, dict) else None
    return value if isinstance(value, bool) else None


def _steps_plan(recipe: Recipe, batches_per_epoch: int) -> int:
    optim = recipe.optim
    if optim.max_steps is not None:
        return optim.max_steps
    return max(1, math.ceil(optim.epochs * batches_per_epoch / optim.grad_accum))


def train(recipe: Recipe, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run ``recipe``: train, select the best step, evaluate, and write the run folder. Returns metrics."""
    run = FinetuneRecipe(recipe, resume=resume, overwrite=overwrite, progress=progress)
    with run.matmul_mode():
        run.setup()
        run.train()
        metrics = run.finish()
    run.cleanup()
    return metrics


class FinetuneRecipe:
    """One training run of a :class:`Recipe` (see the module docstring for the order of the steps)."""

    def __init__(self, recipe: Recipe, *, resume: bool = False, overwrite: bool = False,
                 progress: bool = True) -> None:
        seed_everything(recipe.run.seed)
        recipe = _with_resolved_bf16(recipe, resume)
        self.recipe, self.resume, self.overwrite, self.progress = recipe, resume, overwrite, progress
        self.output_dir = Path(recipe.run.output_dir)
        self.ckpt_dir = self.output_dir / "checkpoint"
        self.log_path = self.output_dir / "metrics.jsonl"
        # everything that can be checked without data or weights is checked before the run folder is touched
        self.peft_config = build_method_config(recipe.method, recipe.method_args, TASK_TYPES[recipe.task])
        if recipe.run.compile:
            refuse_uncompilable([self.peft_config])
        self.trackers = resolve_trackers(recipe.run.report_to)
        # torchrun/accelerate launch on machines without a GPU: accelerate needs cpu=True to use gloo DDP
        multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        precision = "bf16" if recipe.run.bf16 else "no"
        _forget_mixed_precision(precision)  # a second run in this process may pick another precision
        self.accelerator = Accelerator(mixed_precision=precision, cpu=multi_cpu,
                                       gradient_accumulation_steps=recipe.optim.grad_accum,
                                       log_with=self.trackers or None, project_dir=tracker_dir(self.output_dir))
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise ConfigError(f"peftlab train runs on one process or under DDP; {self.accelerator.distributed_type.value} "
                              "is not supported yet (its dev evaluation and checkpoints run on the main process only, "
                              "which a sharded model cannot do). Shard a peftlab model with FSDP2 in your own training loop "
                              "instead (docs/integrations.md)")
        if recipe.task == "e2e":  # the final scoring needs the official tokenizer (Java) or the opt-in Python port
            resolve_backend()
        self.main = self.accelerator.is_main_process
        # bf16 where the CPU only emulates it: every bf16 matrix product through an fp32 kernel (bf16_gemm)
        self.fp32_matmuls = bf16_gemm.wanted(bool(recipe.run.bf16), self.accelerator.device)
        # the frozen bf16 weights' fp32 copies, registered once the model is built (no upcast at every product)
        self.fp32_copies = (bf16_gemm.FrozenFp32Copies() if self.fp32_matmuls and recipe.run.bf16_weight_copies
                            else None)
        self.compiled = False
        self.state = TrainState()
        self.best_state: dict[str, torch.Tensor] | None = None  # the best step's adapter snapshot

    def matmul_mode(self) -> contextlib.AbstractContextManager:
        """The context every step of the run goes in (:func:`train` enters it around set-up, training and the
        final evaluation): :func:`~peftlab.train.bf16_gemm.fp32_matmuls_for_bf16` where ``fp32_matmuls``, else
        nothing."""
        return bf16_gemm.fp32_matmuls_for_bf16(self.fp32_matmuls, self.fp32_copies)

    # --- set-up ----------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """The run folder, then data, model and optimizer (a failure there leaves no run folder behind, so the same
        command can run again), the methods' ``on_train_begin``, and the checkpoint when resuming."""
        existed = self.output_dir.exists()
        fresh_dir = self.main and (self.overwrite or not (self.output_dir / "config.yaml").exists())
        if self.main:  # one process owns the run folder; the others wait (if it refuses, the launcher stops them)
            prepare_run_dir(self.output_dir, self.recipe, resume=self.resume, overwrite=self.overwrite)
        self.accelerator.wait_for_everyone()
        if self.trackers:
            self.accelerator.init_trackers(PROJECT_NAME, config=hparams(self.recipe.to_dict()))
        try:
            self.setup_data()
            self.setup_model()
            self.setup_optimizer()
        except BaseException:
            if fresh_dir:
                undo_run_dir(self.output_dir, existed)
            raise
        for name in self.peft_model.peft_config:  # e.g. Solo's ramp_steps="auto" follows the planned steps
            self.peft_model._tuner(name).on_train_begin(self.peft_model, name, self.total_steps,
                                                        self.recipe.optim.warmup_steps)
        self.load_checkpoint()

    def setup_data(self) -> None:
        """The task (its data), the tokenizer, and the shuffled training loader; plans the optimizer steps."""
        from ..zoo import load_tokenizer

        recipe = self.recipe
        self.task = make_task(recipe)
        self.tokenizer = load_tokenizer(recipe.model.name)
        task, tokenizer = self.task, self.tokenizer
        self.generator = torch.Generator().manual_seed(recipe.run.seed)
        self.loader = DataLoader(task.train_items(), batch_size=recipe.optim.batch_size, shuffle=True,
                                 generator=self.generator, collate_fn=lambda chunk: task.collate(tokenizer, chunk),
                                 drop_last=False)
        self.total_steps = _steps_plan(recipe, len(self.loader))

    def setup_model(self) -> None:
        """The base model for the task, the method's adapters on it, and the speed options."""
        recipe = self.recipe
        model = load_task_model(recipe, self.task, self.tokenizer)
        if recipe.model.disable_dropout:
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        elif recipe.model.fast_dropout:
            fast_base_dropout(model)
        if not recipe.model.train_pooler and self.peft_config.modules_to_save is None \
                and get_method(self.peft_config).tuner_cls.default_modules_to_save(model) is not None:
            self.peft_config = dataclasses.replace(self.peft_config, modules_to_save=classifier_head(model, False))
        peft_model = get_peft_model(model, self.peft_config)
        if recipe.run.bf16 and recipe.run.bf16_frozen_weights:
            cast_frozen_weights(peft_model, torch.bfloat16)
        if self.fp32_copies is not None:
            self.fp32_copies.add(p for p in peft_model.parameters() if not p.requires_grad)
        if recipe.run.gradient_checkpointing:
            peft_model.gradient_checkpointing_enable()
        if recipe.run.compile and self.fp32_matmuls:
            warnings.warn("run.compile is skipped: the blocks run eagerly, with the bf16 matrix products computed by "
                          "fp32 kernels on this CPU (compile is not supported with them) "
                          f"(peftlab.train.bf16_gemm; {bf16_gemm.ENV_VAR}=native keeps compile, with torch's "
                          "emulated bf16 kernels)", UserWarning, stacklevel=2)
        elif recipe.run.compile:
            compile_blocks(peft_model)
            self.compiled = True
        self.peft_model = peft_model
        self.trainable, self.total = peft_model.get_nb_trainable_parameters()
        if self.main:
            print(peft_model.adapter_summary())

    def setup_optimizer(self) -> None:
        """The task's loss around the model, AdamW on the trainable tensors and the schedule, all prepared by
        accelerate; the loop state is registered for its save_state/load_state."""
        optim = self.recipe.optim
        loss_module = self.task.loss_module(self.peft_model)
        self.params = [p for p in self.peft_model.parameters() if p.requires_grad]
        self.fused_adamw = optim.fused and fused_adamw_supported(self.params)
        optimizer = torch.optim.AdamW(self.params, lr=optim.lr, weight_decay=optim.weight_decay, betas=optim.betas,
                                      fused=self.fused_adamw)
        scheduler = get_scheduler(optim.schedule, optimizer, num_warmup_steps=optim.warmup_steps,
                                  num_training_steps=self.total_steps)
        self.loss_module, self.optimizer, self.loader, self.scheduler = self.accelerator.prepare(
            loss_module, optimizer, self.loader, scheduler)
        prepare_checkpointing(self.accelerator, self.state)
        # cadences by default: once per epoch of this process's (prepared) loader
        self.eval_every = self.recipe.run.eval_every or max(1, len(self.loader) // optim.grad_accum)
        self.ckpt_every = self.recipe.run.checkpoint_every or self.eval_every

    # --- checkpoints -----------------------------------------------------------------------------------------------
    def load_checkpoint(self) -> None:
        """With ``resume``: restore the checkpoint (recovering a save killed between its renames) and its best-step
        snapshot, and cut ``metrics.jsonl`` back to its step; without one, start from step 0."""
        resume, main = self.resume, self.main
        found = find_checkpoint(self.ckpt_dir) if resume and main else None
        self.accelerator.wait_for_everyone()
        if resume and self.ckpt_dir.exists():
            load_checkpoint(self.accelerator, self.ckpt_dir, self.peft_model, self.state, self.optimizer,
                            self.scheduler)
            # the loaded groups carry the saved run's implementation (an older run's: the per-tensor loop)
            set_adamw_implementation(getattr(self.optimizer, "optimizer", self.optimizer), self.fused_adamw)
            self.best_state = load_best_snapshot(self.ckpt_dir, self.peft_model)
            if main:
                print(f"[train] resumed from {self.ckpt_dir} at step {self.state.step}")
            best = self.state.best
            if self.best_state is None and best is not None:
                if best["step"] != self.state.step:
                    raise ConfigError(f"{self.ckpt_dir}: the checkpoint names best step {best['step']} but holds no "
                                      f"snapshot of it ({BEST_FILE}; written by older peftlab versions); resuming "
                                      "would ship the wrong weights. Restart the run with --overwrite")
                self.best_state = adapter_snapshot(self.peft_model)  # the best step is the checkpoint's own step
        elif resume and main:
            print(f"[train] --resume: no checkpoint in {self.output_dir}; starting from step 0")
        if self.best_state is None:
            self.best_state = adapter_snapshot(self.peft_model)
        if resume and main:  # records written after the checkpoint are replayed by this run: drop them
            truncate_log(self.log_path, self.state.step if found else -1)

    def save_checkpoint(self, step: int) -> None:
        """Write the checkpoint, unless the training state holds NaN/inf (the last good one is kept)."""
        if step == 0:
            return
        bad = nonfinite_tensors(self.peft_model)
        if bad:  # never replace the last good checkpoint with a poisoned one
            raise NonFiniteLossError(f"trainable tensors are NaN/inf at step {step} ({', '.join(bad[:3])}); "
                                     f"{self._last_good()} (lower optim.lr or check the data)")
        save_checkpoint(self.accelerator, self.ckpt_dir, self.peft_model, self.state, best=self.best_state)

    def _last_good(self) -> str:
        step = checkpoint_step(self.ckpt_dir)
        if step is None:
            return "no checkpoint was written before this (nothing to resume)"
        return f"the last good checkpoint (step {step}) is in {self.ckpt_dir}"

    # --- training --------------------------------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to metrics.jsonl and send its scalars to the trackers."""
        if self.main:
            with self.log_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        if self.trackers:  # accelerate logs on the main process only
            self.accelerator.log(flatten_scalars({k: v for k, v in record.items() if k != "step"}),
                                 step=record["step"])

    def evaluate(self, step: int) -> None:
        """Score the dev set; a better score makes ``step`` the best step and snapshots its adapter."""
        scores = self.task.dev_score(self.accelerator.unwrap_model(self.loss_module), self.tokenizer)
        if not math.isfinite(scores["selection"]):
            raise NonFiniteLossError(f"the dev score is {scores['selection']} at step {step}; {self._last_good()} "
                                     "(lower optim.lr or check the data)")
        state = self.state
        if state.best is None or scores["selection"] > state.best["selection"]:
            state.best = {**scores, "step": step}
            self.best_state = adapter_snapshot(self.peft_model)
        self.log({"step": step, "eval": scores, "best_step": state.best["step"]})

    def train(self) -> None:
        """Optimizer steps up to the planned total, from where the checkpoint left off."""
        state, recipe, accelerator, model = self.state, self.recipe, self.accelerator, self.peft_model
        if state.step == 0:  # the starting point: logged, printed, and a candidate for the best step
            self.evaluate(0)
            if self.main:
                print(f"[train] before training: {_format_scores(state.best)}")
        bar = tqdm(total=self.total_steps, initial=state.step, desc="train", unit="step",
                   disable=not (self.progress and self.main))
        self.loss_module.train()
        window_loss, window_micro = state.window  # a log window cut by a checkpoint continues
        t_start = time.perf_counter()
        while state.step < self.total_steps:
            self.generator.manual_seed(recipe.run.seed + state.epoch)  # the epoch's order, reproducible on resume
            loader = (accelerator.skip_first_batches(self.loader, state.batches_done) if state.batches_done
                      else self.loader)
            for batch in loader:
                loss = self._micro_step(batch)
                state.batches_done += 1
                state.tokens += batch_tokens(batch) * accelerator.num_processes
                window_loss += loss.item()
                window_micro += 1
                if not accelerator.sync_gradients:
                    continue
                state.step += 1
                for name in model.peft_config:
                    model._tuner(name).on_optimizer_step(model, name)
                bar.update(1)
                elapsed = time.perf_counter() - t_start
                if state.step % recipe.run.log_every == 0 or state.step == self.total_steps:
                    record = {"step": state.step, "loss": window_loss / window_micro,
                              "lr": self.scheduler.get_last_lr()[0],
                              "tokens_per_second": state.tokens / max(state.train_seconds + elapsed, 1e-9)}
                    for name in model.peft_config:
                        record.update(model._tuner(name).training_log(model, name))
                    self.log(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:.0f}")
                    window_loss, window_micro = 0.0, 0
                step = state.step
                evaluate_now = step % self.eval_every == 0 or step == self.total_steps
                save_now = step % self.ckpt_every == 0 or step == self.total_steps  # its own cadence
                if evaluate_now or save_now:
                    state.train_seconds += time.perf_counter() - t_start
                    state.window = [window_loss, window_micro]
                    if evaluate_now:
                        self.evaluate(step)
                    if save_now:
                        self.save_checkpoint(step)
                    t_start = time.perf_counter()
                if state.step >= self.total_steps:
                    break
            else:
                state.epoch += 1
                state.batches_done = 0
        bar.close()
        for name in model.peft_config:
            model._tuner(name).on_train_end(model, name)
        if self.main and state.best:
            print(f"[train] best step {state.best['step']}: {_format_scores(state.best)}")

    def _micro_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward and backward one micro-batch; the optimizer steps when accelerate syncs the gradients."""
        accelerator = self.accelerator
        with accelerator.accumulate(self.loss_module):
            loss = self.loss_module(**batch)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"loss is {loss.item()} at step {self.state.step}; {self._last_good()} "
                                         "(lower optim.lr or check the data)")
            accelerator.backward(loss)
            if accelerator.sync_gradients and self.recipe.optim.clip_grad_norm:
                accelerator.clip_grad_norm_(self.params, self.recipe.optim.clip_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss

    # --- the end ---------------------------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Restore the best step's adapter, save it, run the final evaluation and write the run folder's files.
        Returns the metrics (empty on processes other than the main one)."""
        recipe, state, peft_model = self.recipe, self.state, self.peft_model
        if self.best_state is not None:
            restore_adapter(peft_model, self.best_state)
        if self.compiled:
            uncompile_blocks(peft_model)
        decode_attention = decoding_attn_implementation(recipe.model.attn_implementation)
        if decode_attention:
            peft_model.model.set_attn_implementation(decode_attention)
        self.accelerator.wait_for_everyone()
        metrics: dict[str, Any] = {}
        if self.main:
            peft_model.save_pretrained(self.output_dir / "adapter")
            started = time.perf_counter()
            metrics = self.task.final_eval(peft_model, self.tokenizer, self.output_dir, progress=self.progress)
            final_eval_seconds = time.perf_counter() - started  # E2E: decoding the test MRs, and scoring them
            metrics.update({
                "method": recipe.method, "task": recipe.task if recipe.task == "e2e" else self.task.spec.name,
                "trainable_params": self.trainable, "total_params": self.total, "steps": state.step,
                "best_step": state.best["step"] if state.best else None,
                "best_dev": {k: v for k, v in (state.best or {}).items() if k not in ("selection", "step")},
                "train_seconds": state.train_seconds, "final_eval_seconds": final_eval_seconds,
                "train_tokens": state.tokens,
                "tokens_per_second": state.tokens / max(state.train_seconds, 1e-9),
                "peak_memory_mb": peak_memory_mb(), "world_size": self.accelerator.num_processes,
                "compiled": self.compiled,
                "bf16_matmuls": ("fp32 kernels" if self.fp32_matmuls else "native") if recipe.run.bf16 else None,
            })
            write_run_files(self.output_dir, recipe, metrics, self.task.metadata)
            if self.trackers:
                self.accelerator.log(flatten_scalars({"final": {k: v for k, v in metrics.items() if k != "best_dev"}}),
                                     step=state.step)
        return metrics

    def cleanup(self) -> None:
        """End the trackers (after a run that finished)."""
        if self.trackers:
            self.accelerator.end_training()


def _format_scores(scores: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in scores.items() if k not in ("selection", "step"))


__all__ = ["FinetuneRecipe", "train", "NonFiniteLossError", "ConfigError"]
