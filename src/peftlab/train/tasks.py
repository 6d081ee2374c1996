"""Tasks for the training loop: E2E NLG (causal LM, loss on the text only) and GLUE (sequence classification).

A task owns its data, its batches, its loss module (what the accelerator wraps, so DDP sees one forward) and its
evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import SubsetSpec, linearize_mr, load_e2e, load_glue
from ..generate import generate_texts
from ..layout import get_layout
from .batching import IGNORE_INDEX, collate_causal_lm
from .fused_ce import linear_cross_entropy
from .recipe import Recipe


class TargetOnlyCausalLMLoss(nn.Module):
    """Mean (label-smoothed) cross-entropy over target tokens, computing LM-head logits only at those positions
    (no [batch, seq, vocab] tensor for the prompt part).

    ``fused`` (default): when the LM head is a plain ``nn.Linear``, projection and loss run chunk by chunk
    (:func:`~peftlab.train.fused_ce.linear_cross_entropy`), so not even the [targets, vocab] logits are held; an
    LM head wrapped by an adapter goes through its own forward and ``F.cross_entropy``.
    """

    def __init__(self, peft_model: nn.Module, label_smoothing: float = 0.0, fused: bool = True) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.label_smoothing = label_smoothing
        self.fused = fused
        hf_model = peft_model.model
        self._body_path = get_layout(hf_model).body_prefix

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """A padded batch (``attention_mask``) or a packed one (``position_ids``, no mask; see
        :mod:`peftlab.train.batching`)."""
        hf_model = self.peft_model.model
        body = hf_model.get_submodule(self._body_path) if self._body_path else hf_model
        hidden = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False).last_hidden_state
        targets = labels[:, 1:]  # position t predicts token t+1
        keep = targets != IGNORE_INDEX  # (B, T-1)
        selected = hidden[:, :-1][keep]  # (N_target, d)
        head = hf_model.get_output_embeddings()
        if self.fused and type(head) is nn.Linear:
            return linear_cross_entropy(selected, head.weight, targets[keep], bias=head.bias,
                                        label_smoothing=self.label_smoothing)
        logits = head(selected)  # (N_target, vocab)
        return F.cross_entropy(logits.float(), targets[keep], label_smoothing=self.label_smoothing)


class ModelLoss(nn.Module):
    """The model's own loss (sequence classification: cross-entropy, or MSE for regression)."""

    def __init__(self, peft_model: nn.Module) -> None:
        super().__init__()
        self.peft_model = peft_model

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.peft_model(**batch).loss


def _subset(limit: int | None, strategy: str, seed: int) -> SubsetSpec | None:
    return None if limit is None else SubsetSpec(limit, strategy, seed)


@dataclass
class E2ETask:
    recipe: Recipe
    task_type: str = "CAUSAL_LM"
    model_task: str = "causal-lm"

    def __post_init__(self) -> None:
        data = self.recipe.data
        seed = self.recipe.run.seed
        train = load_e2e("train", data.data_dir, subset=_subset(data.train_limit, data.subset, seed))
        self.train_pairs = [(self.prompt(r.mr), " " + r.ref) for r in train.records]
        dev = load_e2e("dev", data.data_dir)
        self.dev_pairs = [(self.prompt(r.mr), " " + r.ref) for r in dev.records][:data.dev_limit]
        self.test = load_e2e("test", data.data_dir, subset=_subset(data.eval_limit, "first", seed))
        self.metadata = {"train": train.metadata(), "test": self.test.metadata()}

    def prompt(self, mr: str) -> str:
        return linearize_mr(mr, self.recipe.data.mr_format) + " ||"

    def train_items(self) -> list[Any]:
        return self.train_pairs

    def collate(self, tokenizer, items) -> dict[str, torch.Tensor]:
        batch = collate_causal_lm(tokenizer, [p for p, _ in items], [t for _, t in items],
                                  max_length=self.recipe.data.max_length, pack_per_row=self.recipe.data.pack_per_row)
        return batch.as_model_inputs()

    def loss_module(self, peft_model) -> nn.Module:
        return TargetOnlyCausalLMLoss(peft_model, self.recipe.optim.label_smoothing)

    @torch.no_grad()
    def dev_score(self, loss_module, tokenizer) -> dict[str, float]:
        """Held-out loss on dev pairs (cheap; drives best-step selection). Lower is better."""
        loss_module.eval()
        total, count = 0.0, 0
        for i in range(0, len(self.dev_pairs), 16):
            batch = self.collate(tokenizer, self.dev_pairs[i:i + 16])
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += loss_module(**batch).item() * n
            count += n
        loss_module.train()
        return {"dev_loss": total / count, "selection": -total / count}

    def final_eval(self, peft_model, tokenizer, output_dir, progress: bool = True) -> dict[str, Any]:
        from ..metrics.e2e import score_e2e

        decode = self.recipe.decode
        prompts = [self.prompt(inst.mr) for inst in self.test.instances]
        predictions = generate_texts(peft_model, tokenizer, prompts, num_beams=decode.num_beams,
                                     max_new_tokens=decode.max_new_tokens, batch_size=decode.batch_size,
                                     no_repeat_ngram_size=decode.no_repeat_ngram_size,
                                     no_repeat_ngram_scope=decode.no_repeat_ngram_scope,
                                     length_penalty=decode.length_penalty, progress=progress, engine=decode.engine)
        (output_dir / "predictions.txt").write_text("\n".join(predictions) + "\n", encoding="utf-8")
        scores = score_e2e(predictions, [inst.refs for inst in self.test.instances])
        return scores.as_dict()


@dataclass
class GlueTrainTask:
    recipe: Recipe
    task_type: str = "SEQ_CLS"
    model_task: str = "sequence-classification"

    def __post_init__(self) -> None:
        data = self.recipe.data
        seed = self.recipe.run.seed
        self.train = load_glue(data.glue_task, "train", data.data_dir,
                               subset=_subset(data.train_limit, data.subset, seed))
        self.dev = load_glue(data.glue_task, "dev", data.data_dir,
                             subset=_subset(data.eval_limit, data.subset, seed))
        self.spec = self.train.task
        self.num_labels = self.spec.num_labels
        self.metadata = {"train": self.train.metadata(), "dev": self.dev.metadata()}

    def train_items(self) -> list[Any]:
        return self.train.examples

    def collate(self, tokenizer, items) -> dict[str, torch.Tensor]:
        first = [e.text_a for e in items]
        second = [e.text_b for e in items] if items and items[0].text_b is not None else None
        enc = tokenizer(first, second, padding=True, truncation=True, max_length=self.recipe.data.max_length,
                        return_tensors="pt")
        dtype = torch.float if self.spec.task_type == "regression" else torch.long
        enc = dict(enc)
        enc["labels"] = torch.tensor([e.label for e in items], dtype=dtype)
        return enc

    def loss_module(self, peft_model) -> nn.Module:
        return ModelLoss(peft_model)

    @torch.no_grad()
    def predict(self, model, tokenizer) -> tuple[list[float], bool]:
        """Predicted class ids (or scores) of the dev examples, and whether every logit was finite."""
        model.eval()
        predictions: list[float] = []
        finite = True
        # under the training's autocast: with run.bf16 the frozen weights are bf16 and a trainable head fp32
        device = next(model.parameters()).device.type
        for i in range(0, len(self.dev.examples), 64):
            batch = self.collate(tokenizer, self.dev.examples[i:i + 64])
            batch.pop("labels")
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bool(self.recipe.run.bf16)):
                logits = model(**batch).logits.float()
            finite = finite and bool(torch.isfinite(logits).all())
            if self.spec.task_type == "regression":
                predictions.extend(logits[:, 0].tolist())
            else:
                predictions.extend(logits.argmax(-1).tolist())
        return predictions, finite

    def _metrics(self, predictions) -> dict[str, float]:
        from ..metrics.glue import glue_metrics

        return glue_metrics(self.spec, predictions, [e.label for e in self.dev.examples])

    def dev_score(self, loss_module, tokenizer) -> dict[str, float]:
        loss_module.eval()
        predictions, finite = self.predict(loss_module.peft_model, tokenizer)
        metrics = self._metrics(predictions)
        loss_module.train()
        # NaN/inf logits make a meaningless score (argmax of NaN): the selection is NaN, so training stops there
        selection = metrics[self.spec.metrics[0]] if finite else float("nan")
        return {**metrics, "selection": selection}

    def final_eval(self, peft_model, tokenizer, output_dir, progress: bool = True) -> dict[str, Any]:
        predictions, _ = self.predict(peft_model, tokenizer)
        lines = [f"{p:.6f}" if self.spec.task_type == "regression" else self.spec.label_names[int(p)]
                 for p in predictions]
        (output_dir / "predictions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self._metrics(predictions)


TASK_TYPES = {"e2e": E2ETask.task_type, "glue": GlueTrainTask.task_type}
"""Recipe task -> the peft task type of its model."""


def make_task(recipe: Recipe):
    return E2ETask(recipe) if recipe.task == "e2e" else GlueTrainTask(recipe)


def load_task_model(recipe: Recipe, task, tokenizer) -> nn.Module:
    """The recipe's base model for ``task`` (a classification head of the task's labels for GLUE), with the
    recipe's dtype and training attention, and the tokenizer's pad id where the model has none: what a run trains
    on (``peftlab train``) and what ``peftlab predict`` loads a run's adapter into."""
    from ..zoo import load_model
    from .speed import resolve_attn_implementation

    kwargs: dict[str, Any] = {"num_labels": task.num_labels} if recipe.task == "glue" else {}
    kwargs["attn_implementation"] = resolve_attn_implementation(recipe.model.attn_implementation)
    model = load_model(recipe.model.name, task=task.model_task, dtype=recipe.model.dtype, **kwargs)
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model
