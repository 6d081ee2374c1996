"""Prompt -> target batches for causal LM fine-tuning: dynamic padding, loss on target tokens only."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

IGNORE_INDEX = -100


@dataclass
class CausalLMBatch:
    input_ids: torch.Tensor  # (batch, seq) right-padded
    attention_mask: torch.Tensor  # (batch, seq) 1 on real tokens
    labels: torch.Tensor  # (batch, seq) target token ids, IGNORE_INDEX on prompt and padding

    def as_model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels}

    @property
    def n_target_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def collate_causal_lm(tokenizer, prompts: Sequence[str], targets: Sequence[str], max_length: int = 256,
                      add_eos: bool = True) -> CausalLMBatch:
    """Tokenize ``prompt + target (+ eos)`` pairs, pad to the longest in the batch, mask the prompt in labels."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows: list[tuple[list[int], int]] = []
    for prompt, target in zip(prompts, targets):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        if add_eos and tokenizer.eos_token_id is not None:
            target_ids = target_ids + [tokenizer.eos_token_id]
        ids = (prompt_ids + target_ids)[:max_length]
        rows.append((ids, min(len(prompt_ids), len(ids))))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attention_mask[i, :len(ids)] = 1
        labels[i, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
    return CausalLMBatch(input_ids, attention_mask, labels)
