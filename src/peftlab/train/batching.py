"""Prompt -> target batches for causal LM fine-tuning: dynamic padding or packing, loss on target tokens only.

Two layouts of the same examples (``collate_causal_lm``):

- **padded** (``pack_per_row=1``, the default): one example per row, right-padded to the batch's longest, with an
  ``attention_mask``;
- **packed** (``pack_per_row=k > 1``): the examples go into ``ceil(n / k)`` rows, longest first into the row that is
  shortest so far, so the rows end up about equally long and little padding is left. Each example keeps its own
  positions (``position_ids`` restart at 0 where it starts) and there is no ``attention_mask``: transformers reads
  the segments from the restarting positions and lets every token attend only to its own example (its "packed
  sequence" format, as ``DataCollatorWithFlattening`` produces). So the loss and gradients are the padded batch's,
  up to rounding, on fewer positions. The padding left at a row's end is a segment of its own (positions from 0,
  labels ignored), which no example sees. transformers reads packed positions only when the call has no KV cache:
  a model's own forward needs ``use_cache=False`` with a packed batch (peftlab's target-only loss passes it).

In both layouts the first token of every example has no label (nothing before it predicts it), so in a packed row
the last token of one example never learns to predict the next example.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

IGNORE_INDEX = -100


@dataclass
class CausalLMBatch:
    input_ids: torch.Tensor  # (rows, width): padded, one example per row; packed, several per row
    labels: torch.Tensor  # (rows, width) target token ids, IGNORE_INDEX on prompt, padding and each example's start
    attention_mask: torch.Tensor | None = None  # (rows, width) 1 on real tokens (padded layout only)
    position_ids: torch.Tensor | None = None  # (rows, width) restarting at every example (packed layout only)
    n_tokens: int = 0  # real tokens (padding excluded) in the batch

    @property
    def packed(self) -> bool:
        return self.position_ids is not None

    def as_model_inputs(self) -> dict[str, torch.Tensor]:
        """The keyword arguments of a transformers causal LM (and of peftlab's target-only loss)."""
        if self.packed:
            return {"input_ids": self.input_ids, "position_ids": self.position_ids, "labels": self.labels}
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels}

    @property
    def n_target_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Positions a model call computes that hold real tokens: the attention mask's ones in a padded batch; in a
    packed one (no mask) every position, its few padding positions included."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def _tokenize(tokenizer, prompts: Sequence[str], targets: Sequence[str], max_length: int,
              add_eos: bool) -> list[tuple[list[int], int]]:
    """(ids of prompt + target (+ eos), truncated; number of prompt tokens among them) per example."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    rows: list[tuple[list[int], int]] = []
    for prompt, target in zip(prompts, targets):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        if add_eos and tokenizer.eos_token_id is not None:
            target_ids = target_ids + [tokenizer.eos_token_id]
        ids = (prompt_ids + target_ids)[:max_length]
        rows.append((ids, min(len(prompt_ids), len(ids))))
    return rows


def pack_rows(lengths: Sequence[int], n_rows: int) -> list[list[int]]:
    """Indices of the examples in each of ``n_rows`` rows: longest first, each into the shortest row so far (ties:
    the lower row, then the earlier example), and within a row in the original order. Deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = [[] for _ in range(min(n_rows, len(lengths)))]
    filled = [0] * len(rows)
    for i in order:
        row = min(range(len(rows)), key=lambda r: (filled[r], r))
        rows[row].append(i)
        filled[row] += lengths[i]
    return [sorted(row) for row in rows]


def collate_causal_lm(tokenizer, prompts: Sequence[str], targets: Sequence[str], max_length: int = 256,
                      add_eos: bool = True, pack_per_row: int = 1) -> CausalLMBatch:
    """Tokenize ``prompt + target (+ eos)`` pairs and lay them out padded (``pack_per_row=1``) or packed about
    ``pack_per_row`` examples to a row (see the module docstring); the prompt is masked in the labels."""
    if pack_per_row < 1:
        raise ValueError(f"pack_per_row must be >= 1, got {pack_per_row}")
    examples = _tokenize(tokenizer, prompts, targets, max_length, add_eos)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    n_tokens = sum(len(ids) for ids, _ in examples)
    packed = pack_per_row > 1
    rows = (pack_rows([len(ids) for ids, _ in examples], -(-len(examples) // pack_per_row)) if packed  # ceil
            else [[i] for i in range(len(examples))])
    width = max(sum(len(examples[i][0]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    filled = [0] * len(rows)  # real tokens per row: each row's examples first, then its padding
    for r, row in enumerate(rows):
        for i in row:
            ids, n_prompt = examples[i]
            start, end = filled[r], filled[r] + len(ids)
            input_ids[r, start:end] = torch.tensor(ids)
            position_ids[r, start:end] = torch.arange(len(ids))
            first = max(n_prompt, 1)  # an example's first token is never a target (nothing precedes it)
            labels[r, start + first:end] = torch.tensor(ids[first:])
            filled[r] = end
        position_ids[r, filled[r]:] = torch.arange(width - filled[r])  # the padding: a segment of its own
    if packed:
        return CausalLMBatch(input_ids, labels, position_ids=position_ids, n_tokens=n_tokens)
    attention_mask = (torch.arange(width)[None, :] < torch.tensor(filled)[:, None]).long()  # (rows, width)
    return CausalLMBatch(input_ids, labels, attention_mask=attention_mask, n_tokens=n_tokens)
