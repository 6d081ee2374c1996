"""Beam search that prefills each prompt once and stops computing the prompts that are done: the beam half of
:func:`peftlab.generate.generate_texts`'s ``engine="peftlab"``.

``transformers``' ``generate`` repeats every prompt ``num_beams`` times before its first forward, so the prefill,
most of a short decoding's arithmetic on E2E (prompts of ~40 tokens, outputs of ~25), runs ``num_beams`` times on
the same rows; and it keeps every prompt of the batch in every step until the last one is done. :func:`beam_generate`
is the same search (``generate``'s candidates per step, scores, length penalty, early-stopping rule, stopping
criteria and logits processors) with three changes that leave each row's numbers as they are:

- the prompts are prefilled once, and the cache and the first logits are repeated for the beams (the rows
  ``generate`` computes are copies of each other);
- with ``drop_finished``, a prompt whose search can no longer change (``generate``'s early-stop heuristic says no
  running beam can beat its worst finished hypothesis) leaves the batch, the cache and the mask. Each row's inputs
  stay the same, but the products then have fewer rows, and some CPU kernels round a row differently with the
  number of rows (the same prefill gave other bf16 logits at 8 rows than at 16 on an AVX512 Xeon's fp32 kernels):
  there it changed 1 of 128 E2E outputs, so :func:`~peftlab.generate.generate_texts` keeps every prompt;
- ``no_repeat_ngram_size`` and the first-step suppression use ``transformers``' own logits processors (the n-gram
  block over prompt and output as ``generate``'s, or within the output only: :class:`OutputNoRepeatNGram`).

The outputs equal ``generate``'s token for token (``tests/test_generate.py``, and for every method
``tests/test_method_contract.py``; with ``drop_finished`` where the kernels do not depend on the row count).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .greedy import DecodingStep, transformers_model

_NEG = -1.0e9  # generate's "not this one" score offset


def _gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tensor`` (B, N, ...) at ``index`` (B, M) along dim 1: (B, M, ...)."""
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)


NGRAM_SCOPES = ("output", "sequence")


class OutputNoRepeatNGram:
    """``transformers``' ``NoRepeatNGramLogitsProcessor`` on the generated tokens only: an n-gram may not repeat
    within the output, but it may repeat one of the prompt's. A ``generate`` logits processor (``logits_processor=
    [OutputNoRepeatNGram(n, prompt_length)]``), for left-padded prompts of width ``prompt_length``.

    Why: ``generate``'s ``no_repeat_ngram_size`` of a decoder-only model counts the prompt, so a data-to-text output
    cannot copy a 4-gram of its input: an E2E output of the MR ``near[Crowne Plaza Hotel]`` became "near the Crown
    Plaza Hotel" and "5 out of 5" became "5out of 5" (SmolLM2, beam 10). The LoRA paper's E2E beam search (its
    ``gpt2_beam.py``), whose recipe the papers' E2E numbers follow, blocks n-grams within the output alone, as an
    encoder-decoder's ``generate`` does."""

    def __init__(self, ngram_size: int, prompt_length: int) -> None:
        from transformers import NoRepeatNGramLogitsProcessor

        self.prompt_length = prompt_length
        self._within = NoRepeatNGramLogitsProcessor(ngram_size)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self._within(input_ids[:, self.prompt_length:], scores)  # (rows, generated so far)


def check_ngram_scope(scope: str) -> None:
    if scope not in NGRAM_SCOPES:
        raise ValueError(f"no_repeat_ngram_scope: expected one of {', '.join(NGRAM_SCOPES)}, got {scope!r}")


def ngram_processor(no_repeat_ngram_size: int, scope: str, prompt_length: int):
    """The n-gram block of ``scope``: ``"output"`` (:class:`OutputNoRepeatNGram`) or ``"sequence"`` (``generate``'s
    ``no_repeat_ngram_size``: prompt and output); None for size 0."""
    check_ngram_scope(scope)
    if not no_repeat_ngram_size:
        return None
    if scope == "output":
        return OutputNoRepeatNGram(no_repeat_ngram_size, prompt_length)
    from transformers import NoRepeatNGramLogitsProcessor

    return NoRepeatNGramLogitsProcessor(no_repeat_ngram_size)


def _processors(no_repeat_ngram_size: int, begin_suppress_tokens: Sequence[int], prompt_length: int, device,
                ngram_scope: str = "sequence"):
    from transformers import SuppressTokensAtBeginLogitsProcessor

    processors = []
    ngram = ngram_processor(no_repeat_ngram_size, ngram_scope, prompt_length)
    if ngram is not None:
        processors.append(ngram)
    if len(begin_suppress_tokens):
        processors.append(SuppressTokensAtBeginLogitsProcessor(list(begin_suppress_tokens), prompt_length,
                                                               device=device))
    return processors


@torch.no_grad()
def beam_generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
                  num_beams: int, max_new_tokens: int, eos_token_ids: Sequence[int], pad_token_id: int,
                  length_penalty: float = 1.0, early_stopping: bool | str | None = None,
                  no_repeat_ngram_size: int = 0, no_repeat_ngram_scope: str = "sequence",
                  begin_suppress_tokens: Sequence[int] = (), drop_finished: bool = True,
                  trace: list[int] | None = None) -> torch.Tensor:
    """The best beam's new tokens for each prompt of a left-padded batch: (B, T) with ``generate``'s T (the longest
    best beam), ``pad_token_id`` after each one's end.

    ``input_ids`` and ``attention_mask`` (B, L) as the tokenizer gives them (left padding). A hypothesis ends at a
    token of ``eos_token_ids`` (kept) or at ``max_new_tokens``. ``early_stopping`` as ``generate`` reads it (None:
    the model's generation config). ``no_repeat_ngram_scope``: ``"sequence"`` blocks n-grams over prompt and output
    (``generate``'s ``no_repeat_ngram_size``), ``"output"`` within the output only (:class:`OutputNoRepeatNGram`).
    ``drop_finished``: prompts whose search is over leave the batch (above).
    ``trace``, if given, gets the number of prompts in the batch at each step.
    """
    if num_beams < 2:
        raise ValueError(f"beam_generate searches with 2 or more beams, got num_beams={num_beams}")
    inner = transformers_model(model)
    if early_stopping is None:
        early_stopping = getattr(getattr(inner, "generation_config", None), "early_stopping", False)
    batch, prompt_length = input_ids.shape
    device = input_ids.device
    n = num_beams
    max_length = prompt_length + max_new_tokens
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
    keep_k = max(2, 1 + len(eos_token_ids)) * n  # candidates per prompt and step, as generate keeps them
    top_n = torch.arange(keep_k, device=device) < n  # (K,): the candidates that may become hypotheses
    fill = pad_token_id if pad_token_id else (int(eos[0]) if len(eos) else -1)  # generate's fill value
    processors = _processors(no_repeat_ngram_size, begin_suppress_tokens, prompt_length, device,
                             no_repeat_ngram_scope)
    step_logits, positions, mask = DecodingStep.prepare(model, input_ids, attention_mask)

    from transformers import DynamicCache

    cache = DynamicCache()
    logits = step_logits(input_ids, cache, mask, positions)  # (B, V): one prefill per prompt
    vocab = logits.shape[-1]
    logits = logits.repeat_interleave(n, dim=0)  # (B*n, V): generate's rows, prompt b at b*n ... b*n+n-1
    cache.batch_repeat_interleave(n)
    step_positions = positions[:, -1:].repeat_interleave(n, dim=0)  # (B*n, 1)
    if mask is not None:
        mask = mask.repeat_interleave(n, dim=0)  # (B*n, L)

    # the search state of the prompts still in the batch (B' of them); `items` maps them to the batch
    items = torch.arange(batch, device=device)  # (B',)
    seqs = torch.full((batch, n, max_length), fill, dtype=torch.long, device=device)  # (B', n, L + new)
    seqs[:, :, :prompt_length] = input_ids[:, None, :]
    run_scores = torch.zeros(batch, n, dtype=torch.float32, device=device)
    run_scores[:, 1:] = _NEG  # only the first beam's candidates at the first step
    hyp_seqs = seqs.clone()  # finished hypotheses, best first
    hyp_scores = torch.full((batch, n), _NEG, dtype=torch.float32, device=device)
    hyp_done = torch.zeros(batch, n, dtype=torch.bool, device=device)
    hyp_lengths = torch.zeros(batch, n, dtype=torch.long, device=device)  # new tokens in each hypothesis
    open_ = torch.ones(batch, 1, dtype=torch.bool, device=device)  # may the running beams still improve on them?
    best = torch.full((batch, max_length), fill, dtype=torch.long, device=device)  # the result, per prompt
    best_lengths = torch.zeros(batch, dtype=torch.long, device=device)

    cur_len = prompt_length
    while True:
        rows = items.numel()
        if trace is not None:
            trace.append(rows)
        log_probs = F.log_softmax(logits.to(dtype=torch.float32, copy=True), dim=-1)  # (B'*n, V), as generate
        flat = seqs[:, :, :cur_len].reshape(rows * n, cur_len)
        for processor in processors:
            log_probs = processor(flat, log_probs)
        scores = (log_probs.view(rows, n, vocab) + run_scores[:, :, None]).reshape(rows, n * vocab)
        top_scores, top_index = torch.topk(scores, k=keep_k)  # (B', K)
        parent = top_index // vocab  # (B', K): the beam each candidate extends
        tokens = top_index % vocab

        def extended(which: torch.Tensor) -> torch.Tensor:
            """The sequences of candidates ``which`` (B', m): their parent beam's, with their token: (B', m, L+new).
            (generate builds all K of them; only the chosen ones are needed.)"""
            out = _gather(seqs, _gather(parent, which))
            out[:, :, cur_len] = _gather(tokens, which)
            return out

        ended = torch.isin(tokens, eos)  # (B', K): generate's stopping criteria on the candidates
        if cur_len + 1 >= max_length:
            ended = torch.ones_like(ended)
        # the best n candidates that have not ended run on
        running = top_scores + ended.to(torch.float32) * _NEG
        chosen = torch.topk(running, k=n)[1]  # (B', n)
        next_seqs, run_scores, next_parent = extended(chosen), _gather(running, chosen), _gather(parent, chosen)
        # the candidates among the best n that ended compete with the finished hypotheses
        just_ended = ended & top_n[None, :]
        candidate = top_scores / ((cur_len + 1 - prompt_length) ** length_penalty)
        candidate += (torch.all(hyp_done, dim=-1, keepdim=True) & (early_stopping is True)).to(torch.float32) * _NEG
        candidate += (~open_).to(torch.float32) * _NEG
        candidate += (~just_ended) * _NEG
        merged = torch.topk(torch.cat((hyp_scores, candidate), dim=1), k=n)[1]  # (B', n): < n a hypothesis kept
        kept, from_candidates = merged < n, (merged - n).clamp(min=0)
        hyp_seqs = torch.where(kept[:, :, None], _gather(hyp_seqs, merged.clamp(max=n - 1)),
                               extended(from_candidates))
        hyp_scores = _gather(torch.cat((hyp_scores, candidate), dim=1), merged)
        hyp_done = _gather(torch.cat((hyp_done, just_ended), dim=1), merged)
        hyp_lengths = torch.where(kept, _gather(hyp_lengths, merged.clamp(max=n - 1)), cur_len + 1 - prompt_length)
        seqs, parent = next_seqs, next_parent
        cur_len += 1
        # generate's early-stop heuristic: can the best running beam still beat the worst hypothesis?
        if early_stopping == "never" and length_penalty > 0.0:
            best_length = max_length - prompt_length
        else:
            best_length = cur_len - prompt_length
        best_running = run_scores[:, :1] / (best_length ** length_penalty)
        worst = torch.where(hyp_done, torch.min(hyp_scores, dim=1, keepdim=True)[0], _NEG)
        open_ = open_ & torch.any(best_running > worst, dim=-1, keepdim=True)
        go_on = bool(open_.any()) and not (bool(hyp_done.all()) and early_stopping is True) and not bool(ended.all())
        # a prompt that cannot change any more leaves the batch (all of them when the search ends)
        if not go_on:
            leaving = torch.ones(rows, dtype=torch.bool, device=device)
        elif drop_finished:
            leaving = ~open_[:, 0]
        else:  # they stay (their state can no longer change), so every step multiplies the same number of rows
            leaving = torch.zeros(rows, dtype=torch.bool, device=device)
        if bool(leaving.any()):
            best[items[leaving]] = hyp_seqs[leaving, 0]
            best_lengths[items[leaving]] = hyp_lengths[leaving, 0]
        if not go_on:
            break
        stay = (~leaving).nonzero().flatten()  # (B'',)
        beam_rows = (stay[:, None] * n + parent[stay]).flatten()  # (B''*n,): the cache rows the beams continue
        cache.reorder_cache(beam_rows)
        if bool(leaving.any()):
            items, seqs, run_scores = items[stay], seqs[stay], run_scores[stay]
            hyp_seqs, hyp_scores, hyp_done, hyp_lengths = hyp_seqs[stay], hyp_scores[stay], hyp_done[stay], \
                hyp_lengths[stay]
            open_ = open_[stay]
        # every beam of a prompt shares its mask and positions, so any row of the prompt serves
        step_positions = step_positions[beam_rows] + 1  # (B''*n, 1)
        if mask is not None:
            mask = torch.cat([mask[beam_rows], mask.new_ones(beam_rows.numel(), 1)], dim=-1)  # (B''*n, cur_len)
        logits = step_logits(seqs[:, :, cur_len - 1].reshape(-1, 1), cache, mask, step_positions)  # (B''*n, V)
    return best[:, prompt_length:prompt_length + int(best_lengths.max())]
