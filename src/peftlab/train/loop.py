"""The training loop: accelerate (single process by default; `accelerate launch`/torchrun for DDP), dynamic
padding, target-only loss, gradient accumulation, bf16 autocast, gradient checkpointing, periodic evaluation with
best-step selection, JSONL metrics, and resumable atomic checkpoints."""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..errors import ConfigError, PeftlabError
from ..model import get_peft_model
from .checkpoint import (BEST_FILE, checkpoint_step, find_checkpoint, load_best_snapshot, load_checkpoint,
                         save_checkpoint, training_state_params)
from .methods import build_method_config
from .recipe import Recipe
from .rundir import peak_memory_mb, prepare_run_dir, write_run_files
from .speed import (cast_frozen_weights, compile_blocks, decoding_attn_implementation, refuse_uncompilable,
                    resolve_attn_implementation, uncompile_blocks)
from .tasks import TASK_TYPES, make_task
from .trackers import PROJECT_NAME, flatten_scalars, hparams, resolve_trackers, tracker_dir


class NonFiniteLossError(PeftlabError, FloatingPointError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _steps_plan(recipe: Recipe, batches_per_epoch: int) -> int:
    optim = recipe.optim
    if optim.max_steps is not None:
        return optim.max_steps
    return max(1, math.ceil(optim.epochs * batches_per_epoch / optim.grad_accum))


def train(recipe: Recipe, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run ``recipe``: train, select the best step, evaluate, and write the run folder. Returns metrics."""
    from ..zoo import load_model, load_tokenizer

    seed_everything(recipe.run.seed)
    # torchrun/accelerate launch on machines without a GPU: accelerate needs cpu=True to use gloo DDP
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    output_dir = Path(recipe.run.output_dir)
    # everything that can be checked without data or weights is checked before the run folder is touched
    peft_config = build_method_config(recipe.method, recipe.method_args, TASK_TYPES[recipe.task])
    if recipe.run.compile:
        refuse_uncompilable([peft_config])
    trackers = resolve_trackers(recipe.run.report_to)
    accelerator = Accelerator(mixed_precision="bf16" if recipe.run.bf16 else "no", cpu=multi_cpu,
                              gradient_accumulation_steps=recipe.optim.grad_accum,
                              log_with=trackers or None, project_dir=tracker_dir(output_dir))
    main = accelerator.is_main_process
    existed = output_dir.exists()
    fresh_dir = main and (overwrite or not (output_dir / "config.yaml").exists())
    if main:  # one process owns the run folder; the others wait (if it refuses, the launcher stops them)
        prepare_run_dir(output_dir, recipe, resume=resume, overwrite=overwrite)
    accelerator.wait_for_everyone()
    if trackers:
        accelerator.init_trackers(PROJECT_NAME, config=hparams(recipe.to_dict()))
    try:  # a run that fails before training starts leaves no run folder behind (the same command can run again)
        task = make_task(recipe)
        tokenizer = load_tokenizer(recipe.model.name)
        load_kwargs = {"num_labels": task.num_labels} if recipe.task == "glue" else {}
        load_kwargs["attn_implementation"] = resolve_attn_implementation(recipe.model.attn_implementation)
        model = load_model(recipe.model.name, task=task.model_task, dtype=recipe.model.dtype, **load_kwargs)
        if recipe.model.disable_dropout:
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
            model.config.pad_token_id = tokenizer.pad_token_id
        peft_model = get_peft_model(model, peft_config)
        if recipe.run.bf16 and recipe.run.bf16_frozen_weights:
            cast_frozen_weights(peft_model, torch.bfloat16)
        if recipe.run.gradient_checkpointing:
            peft_model.gradient_checkpointing_enable()
        if recipe.run.compile:
            compile_blocks(peft_model)
        trainable, total = peft_model.get_nb_trainable_parameters()
        if main:
            print(peft_model.adapter_summary())

        items = task.train_items()
        generator = torch.Generator().manual_seed(recipe.run.seed)
        loader = DataLoader(items, batch_size=recipe.optim.batch_size, shuffle=True, generator=generator,
                            collate_fn=lambda chunk: task.collate(tokenizer, chunk), drop_last=False)
        total_steps = _steps_plan(recipe, len(loader))
        loss_module = task.loss_module(peft_model)
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=recipe.optim.lr, weight_decay=recipe.optim.weight_decay,
                                      betas=recipe.optim.betas)
        scheduler = get_scheduler(recipe.optim.schedule, optimizer, num_warmup_steps=recipe.optim.warmup_steps,
                                  num_training_steps=total_steps)
        loss_module, optimizer, loader, scheduler = accelerator.prepare(loss_module, optimizer, loader, scheduler)

    except BaseException:
        if fresh_dir:
            _undo_run_dir(output_dir, existed)
        raise
    for name in peft_model.peft_config:  # e.g. Solo's ramp_steps="auto" follows the planned steps
        peft_model._tuner(name).on_train_begin(peft_model, name, total_steps, recipe.optim.warmup_steps)

    ckpt_dir = output_dir / "checkpoint"
    state = {"step": 0, "epoch": 0, "batches_done": 0, "best": None, "tokens": 0, "train_seconds": 0.0}
    best_state: dict[str, torch.Tensor] | None = None
    found = find_checkpoint(ckpt_dir) if resume and main else None  # recovers a save killed between renames
    accelerator.wait_for_everyone()
    if resume and ckpt_dir.exists():
        state = load_checkpoint(ckpt_dir, peft_model, optimizer, scheduler)
        best_state = load_best_snapshot(ckpt_dir, peft_model)
        if main:
            print(f"[train] resumed from {ckpt_dir} at step {state['step']}")
        if best_state is None and state["best"] is not None:
            if state["best"]["step"] != state["step"]:
                raise ConfigError(f"{ckpt_dir}: the checkpoint names best step {state['best']['step']} but holds no "
                                  f"snapshot of it ({BEST_FILE}; written by older peftlab versions); resuming would "
                                  "ship the wrong weights. Restart the run with --overwrite")
            best_state = _adapter_snapshot(peft_model)  # the best step is the checkpoint's own step
    elif resume and main:
        print(f"[train] --resume: no checkpoint in {output_dir}; starting from step 0")
    if best_state is None:
        best_state = _adapter_snapshot(peft_model)
    log_path = output_dir / "metrics.jsonl"
    if resume and main:  # records written after the checkpoint are replayed by this run: drop them
        _truncate_log(log_path, state["step"] if found else -1)
    eval_every = recipe.run.eval_every or max(1, len(loader) // recipe.optim.grad_accum)
    ckpt_every = recipe.run.checkpoint_every or eval_every

    def log(record: dict[str, Any]) -> None:
        if main:
            with log_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        if trackers:  # accelerate logs on the main process only
            accelerator.log(flatten_scalars({k: v for k, v in record.items() if k != "step"}), step=record["step"])

    def checkpoint(step: int) -> None:
        if not main or step == 0:
            return
        bad = _nonfinite_tensors(peft_model)
        if bad:  # never replace the last good checkpoint with a poisoned one
            raise NonFiniteLossError(f"trainable tensors are NaN/inf at step {step} ({', '.join(bad[:3])}); "
                                     f"{_last_good(ckpt_dir)} (lower optim.lr or check the data)")
        save_checkpoint(ckpt_dir, peft_model, optimizer, scheduler, state, best=best_state)

    def evaluate_and_checkpoint(step: int, save: bool) -> None:
        nonlocal best_state
        scores = task.dev_score(accelerator.unwrap_model(loss_module), tokenizer)
        if not math.isfinite(scores["selection"]):
            raise NonFiniteLossError(f"the dev score is {scores['selection']} at step {step}; {_last_good(ckpt_dir)} "
                                     "(lower optim.lr or check the data)")
        improved = state["best"] is None or scores["selection"] > state["best"]["selection"]
        if improved:
            state["best"] = {**scores, "step": step}
            best_state = _adapter_snapshot(peft_model)
        log({"step": step, "eval": scores, "best_step": state["best"]["step"]})
        if save:
            checkpoint(step)

    if state["step"] == 0:  # the starting point: logged, printed, and a candidate for the best step
        evaluate_and_checkpoint(0, save=False)
        if main:
            print(f"[train] before training: {_format_scores(state['best'])}")
    bar = tqdm(total=total_steps, initial=state["step"], desc="train", unit="step", disable=not (progress and main))
    loss_module.train()
    window_loss, window_micro = state.get("window", (0.0, 0))  # a log window cut by a checkpoint continues
    t_start = time.perf_counter()
    while state["step"] < total_steps:
        generator.manual_seed(recipe.run.seed + state["epoch"])  # the epoch's order, reproducible on resume
        epoch_loader = accelerator.skip_first_batches(loader, state["batches_done"]) if state["batches_done"] else loader
        for batch in epoch_loader:
            with accelerator.accumulate(loss_module):
                loss = loss_module(**batch)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(f"loss is {loss.item()} at step {state['step']}; {_last_good(ckpt_dir)} "
                                             "(lower optim.lr or check the data)")
                accelerator.backward(loss)
                if accelerator.sync_gradients and recipe.optim.clip_grad_norm:
                    accelerator.clip_grad_norm_(params, recipe.optim.clip_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state["batches_done"] += 1
            state["tokens"] += int(batch["attention_mask"].sum()) * accelerator.num_processes
            window_loss += loss.item()
            window_micro += 1
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            for name in peft_model.peft_config:
                peft_model._tuner(name).on_optimizer_step(peft_model, name)
            bar.update(1)
            elapsed = time.perf_counter() - t_start
            if state["step"] % recipe.run.log_every == 0 or state["step"] == total_steps:
                record = {"step": state["step"], "loss": window_loss / window_micro, "lr": scheduler.get_last_lr()[0],
                          "tokens_per_second": state["tokens"] / max(state["train_seconds"] + elapsed, 1e-9)}
                for name in peft_model.peft_config:
                    record.update(peft_model._tuner(name).training_log(peft_model, name))
                log(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:.0f}")
                window_loss, window_micro = 0.0, 0
            step = state["step"]
            evaluate_now = step % eval_every == 0 or step == total_steps
            save_now = step % ckpt_every == 0 or step == total_steps  # its own cadence, with or without an eval
            if evaluate_now or save_now:
                state["train_seconds"] += time.perf_counter() - t_start
                state["window"] = [window_loss, window_micro]
                if evaluate_now:
                    evaluate_and_checkpoint(step, save=save_now)
                else:
                    checkpoint(step)
                t_start = time.perf_counter()
            if state["step"] >= total_steps:
                break
        else:
            state["epoch"] += 1
            state["batches_done"] = 0
    bar.close()
    for name in peft_model.peft_config:
        peft_model._tuner(name).on_train_end(peft_model, name)
    if main and state["best"]:
        print(f"[train] best step {state['best']['step']}: {_format_scores(state['best'])}")

    if best_state is not None:
        _restore_adapter(peft_model, best_state)
    if recipe.run.compile:
        uncompile_blocks(peft_model)
    decode_attention = decoding_attn_implementation(recipe.model.attn_implementation)
    if decode_attention:
        peft_model.model.set_attn_implementation(decode_attention)
    accelerator.wait_for_everyone()
    metrics: dict[str, Any] = {}
    if main:
        peft_model.save_pretrained(output_dir / "adapter")
        metrics = task.final_eval(peft_model, tokenizer, output_dir, progress=progress)
        metrics.update({
            "method": recipe.method, "task": recipe.task if recipe.task == "e2e" else task.spec.name,
            "trainable_params": trainable, "total_params": total, "steps": state["step"],
            "best_step": state["best"]["step"] if state["best"] else None,
            "best_dev": {k: v for k, v in (state["best"] or {}).items() if k not in ("selection", "step")},
            "train_seconds": state["train_seconds"], "train_tokens": state["tokens"],
            "tokens_per_second": state["tokens"] / max(state["train_seconds"], 1e-9),
            "peak_memory_mb": peak_memory_mb(), "world_size": accelerator.num_processes,
        })
        write_run_files(output_dir, recipe, metrics, task.metadata)
        if trackers:
            accelerator.log(flatten_scalars({"final": {k: v for k, v in metrics.items() if k != "best_dev"}}),
                            step=state["step"])
    if trackers:
        accelerator.end_training()
    return metrics


def _undo_run_dir(output_dir: Path, existed: bool) -> None:
    """Remove what a run that failed during set-up wrote (the whole folder if this run created it)."""
    if not existed:
        shutil.rmtree(output_dir, ignore_errors=True)
        return
    for name in ("config.yaml", "metrics.jsonl"):
        (output_dir / name).unlink(missing_ok=True)
    shutil.rmtree(output_dir / "trackers", ignore_errors=True)


def _nonfinite_tensors(peft_model) -> list[str]:
    return [name for name, p in training_state_params(peft_model).items()
            if p.is_floating_point() and not bool(torch.isfinite(p).all())]


def _last_good(ckpt_dir: Path) -> str:
    step = checkpoint_step(ckpt_dir)
    if step is None:
        return "no checkpoint was written before this (nothing to resume)"
    return f"the last good checkpoint (step {step}) is in {ckpt_dir}"


def _truncate_log(path: Path, last_step: int) -> None:
    """Keep the records of ``path`` up to and including step ``last_step`` (-1: none)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and _record_step(line) <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(path)


def _record_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # a torn last line from a killed run: dropped


def _format_scores(scores: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in scores.items() if k not in ("selection", "step"))


def _adapter_snapshot(peft_model) -> dict[str, torch.Tensor]:
    """The adapters' training state (trainable tensors and saved counters such as Solo's step), copied."""
    return {n: p.detach().clone() for n, p in training_state_params(peft_model).items()}


def _restore_adapter(peft_model, snapshot: dict[str, torch.Tensor]) -> None:
    params = training_state_params(peft_model)
    with torch.no_grad():
        for name, tensor in snapshot.items():
            params[name].copy_(tensor)


__all__ = ["train", "NonFiniteLossError", "ConfigError"]
