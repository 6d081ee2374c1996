"""Greedy decoding that stops computing the rows that are done: the fast path of :func:`peftlab.generate.generate_texts`.

``transformers``' ``generate`` keeps every row of a batch in every step until the longest row ends; on E2E (batches
of 32 prompts of similar length, a trained LoRA adapter) about a quarter of the rows it computes are finished ones. :func:`greedy_generate` is the same greedy search (the inputs ``generate`` would give the model, the same
first-step suppression, the same pad after the end) that drops the finished rows from the batch, the cache and the
mask once enough of them are done, and keeps the cache in a :class:`~peftlab.kv_cache.GrowingCache` (no
``torch.cat`` per step). Each row keeps its padded length and positions, so each row's numbers are the ones
``generate`` computes: the outputs are byte-identical (``tests/test_method_contract.py`` compares the tokens for every
method, ``tests/test_generate.py`` the texts with a real tokenizer). :func:`fast_greedy_blocker` says when a model's generation config asks for a logits processor this
loop does not reproduce; then :func:`~peftlab.generate.generate_texts` uses ``generate``.
"""
from __future__ import annotations

import inspect
from typing import Sequence

import torch

from .kv_cache import GrowingCache

# Generation-config fields that make greedy search in `generate` add a logits processor or a stopping rule, with
# the value at which they add none. A model whose config sets one of them decodes through `generate`.
_NEUTRAL_SETTINGS: dict[str, tuple] = {
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "min_length": (None, 0),
    "min_new_tokens": (None, 0), "sequence_bias": (None,), "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "exponential_decay_length_penalty": (None,), "renormalize_logits": (None, False), "guidance_scale": (None, 1.0),
    "watermarking_config": (None,), "stop_strings": (None,), "max_time": (None,), "forced_decoder_ids": (None,),
    "token_healing": (None, False), "prompt_lookup_num_tokens": (None,), "assistant_model": (None,),
}


def transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """The ``transformers`` model inside ``model`` (a PeftModel wraps it; a transformers model is itself). Found by
    type, not by attributes: a PeftModel delegates ``get_output_embeddings`` and friends to the model it wraps, and
    the forward signature that matters (``logits_to_keep``) is the transformers model's."""
    from transformers import PreTrainedModel

    inner, seen = model, set()
    while not isinstance(inner, PreTrainedModel) and id(inner) not in seen:
        seen.add(id(inner))
        children = inner._modules  # registered submodules only: no delegation through __getattr__
        nested = children.get("base_model")  # PeftModel.base_model: the TunerHost
        nested = nested if nested is not None else children.get("model")
        if nested is None:
            return model  # not a wrapper we know: the model itself
        inner = nested
    return inner if isinstance(inner, PreTrainedModel) else model


def fast_greedy_blocker(model: torch.nn.Module) -> str | None:
    """Why :func:`greedy_generate` would not reproduce ``model.generate``'s greedy search, or None when it does."""
    inner = transformers_model(model)
    if not hasattr(inner, "generation_config") or not hasattr(inner, "config"):
        return "not a transformers generation model"
    if getattr(inner.config, "is_encoder_decoder", False):
        return "an encoder-decoder model"
    settings = inner.generation_config
    for name, neutral in _NEUTRAL_SETTINGS.items():
        value = getattr(settings, name, None)
        if value not in neutral:
            return f"its generation config sets {name}={value!r}"
    return None


def _accepts(inner: torch.nn.Module, name: str) -> bool:
    return name in inspect.signature(inner.forward).parameters


class DecodingStep:
    """The model called as ``generate``'s decoding steps call it (a KV cache, ``generate``'s positions and mask, the
    LM head on the last position only): ``step(input_ids, cache, mask, positions)`` gives the (B, V) logits of the
    last position. :meth:`prepare` also gives a left-padded prompt's positions and mask."""

    def __init__(self, model: torch.nn.Module) -> None:
        inner = transformers_model(model)
        self.model = model
        self.extra = {"logits_to_keep": 1} if _accepts(inner, "logits_to_keep") else {}
        self.use_positions = _accepts(inner, "position_ids")

    @classmethod
    def prepare(cls, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
                ) -> tuple["DecodingStep", torch.Tensor, torch.Tensor | None]:
        """The step, the prompt's positions (B, L) and its mask (None where it has no padding)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # generate's positions: count of real tokens so far, padding at 0; an all-ones mask is dropped
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # (B, L)
        mask = None if bool((attention_mask == 1).all()) else attention_mask
        return cls(model), positions, mask

    def __call__(self, input_ids: torch.Tensor, cache, mask: torch.Tensor | None,
                 positions: torch.Tensor) -> torch.Tensor:
        kwargs = dict(self.extra, past_key_values=cache, use_cache=True, return_dict=True)
        if mask is not None:
            kwargs["attention_mask"] = mask
        if self.use_positions:
            kwargs["position_ids"] = positions
        return self.model(input_ids=input_ids.contiguous(), **kwargs).logits[:, -1]  # (B, V)


@torch.no_grad()
def greedy_generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
                    max_new_tokens: int, eos_token_ids: Sequence[int], pad_token_id: int,
                    begin_suppress_tokens: Sequence[int] = (), compact_at: float = 0.25) -> torch.Tensor:
    """Greedy continuations of a left-padded batch: (B, max_new_tokens) new token ids, ``pad_token_id`` after the end.

    ``input_ids`` (B, L) and ``attention_mask`` (B, L) as the tokenizer gives them (left padding). A row ends at
    its first token in ``eos_token_ids`` (kept, as ``generate`` keeps it). ``begin_suppress_tokens`` cannot be the
    first new token. Once ``compact_at`` of the rows still in the batch are done, they leave it (0: at once; 1:
    never, as ``generate``). Unlike ``generate`` the result always has ``max_new_tokens`` columns.
    """
    if not 0.0 <= compact_at <= 1.0:
        raise ValueError(f"compact_at is a fraction of the batch, from 0 to 1; got {compact_at}")
    batch, prompt_length = input_ids.shape
    device = input_ids.device
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
    suppress = torch.tensor(list(begin_suppress_tokens), dtype=torch.long, device=device)
    step_logits, positions, mask = DecodingStep.prepare(model, input_ids, attention_mask)

    generated = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)  # (B',) original index of each row still in the batch
    done = torch.zeros(batch, dtype=torch.bool, device=device)  # (B',)
    cache = GrowingCache(prompt_length + max_new_tokens)
    step_input, step_positions = input_ids, positions
    for step in range(max_new_tokens):
        # generate takes the argmax of an fp32 copy; upcasting is exact and argmax keeps the first maximum in both
        # dtypes, so the model's own dtype picks the same tokens without a (B', V) copy per step
        scores = step_logits(step_input, cache, mask, step_positions)  # (B', V)
        if step == 0 and suppress.numel():
            scores = scores.clone()
            scores[:, suppress] = float("-inf")
        tokens = scores.argmax(dim=-1)  # (B',)
        tokens = torch.where(done, torch.full_like(tokens, pad_token_id), tokens)
        generated[rows, step] = tokens
        done = done | torch.isin(tokens, eos)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        step_positions = step_positions[:, -1:] + 1  # (B', 1)
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)  # (B', L + step + 1)
        step_input = tokens[:, None]  # (B', 1)
        finished = int(done.sum())
        if finished and finished >= compact_at * done.numel():
            keep = (~done).nonzero().flatten()  # (B'',)
            cache.batch_select_indices(keep)
            rows, done, step_input, step_positions = rows[keep], done[keep], step_input[keep], step_positions[keep]
            if mask is not None:
                mask = mask[keep]
    return generated
