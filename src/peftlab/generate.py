"""Decoding for E2E-style generation: once per unique input, batched by length, cut at the end of the line."""
from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from .beam import OutputNoRepeatNGram, beam_generate, check_ngram_scope
from .greedy import fast_greedy_blocker, greedy_generate, transformers_model

ENGINES = ("peftlab", "transformers")


def newline_token_ids(tokenizer) -> list[int]:
    """Ids of vocabulary tokens that contain a line break (generation stops on them)."""
    ids = []
    for token, index in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([token])
        if "\n" in text:
            ids.append(index)
    return ids


_NEWLINE_CACHE: dict[int, list[int]] = {}


def _newline_ids_cached(tokenizer) -> list[int]:
    key = id(tokenizer)
    if key not in _NEWLINE_CACHE:
        _NEWLINE_CACHE[key] = newline_token_ids(tokenizer)
    return _NEWLINE_CACHE[key]


def _contiguous_input(module: torch.nn.Module, args: tuple):
    if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


def contiguous_head_input(model: torch.nn.Module) -> bool:
    """Make the LM head's input contiguous before its matmul (a forward pre-hook on the output embeddings; once).

    Why: on the CPU, ``F.linear`` of a non-contiguous 3-D bf16 input, such as generation's prefill slice
    ``hidden[:, -1:, :]`` (logits of the last position only), expands the weight to the batch and copies it: 1.7 GB
    for SmolLM2's (49152, 576) head at 32 prompts, in fp32 6 MB (``benchmarks/bench_decode.py``). The copy of the
    slice is 32 x 576 numbers. Returns True when the hook was added (False: no output embeddings, or already there).
    """
    inner = transformers_model(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Module):
        return False
    if any(hook is _contiguous_input for hook in head._forward_pre_hooks.values()):
        return False
    head.register_forward_pre_hook(_contiguous_input)
    return True


def cut_output(text: str) -> str:
    """The first line of a generated text, stripped (the E2E convention: stop at EOS or a line break)."""
    return text.split("\n", 1)[0].strip()


@torch.no_grad()
def generate_texts(model, tokenizer, prompts: Sequence[str], *, num_beams: int = 1, max_new_tokens: int = 64,
                   no_repeat_ngram_size: int = 0, length_penalty: float = 1.0, batch_size: int = 32,
                   stop_at_newline: bool = True, progress: bool = True, engine: str = "peftlab",
                   no_repeat_ngram_scope: str = "output") -> list[str]:
    """Generate a continuation of every prompt (identical prompts are generated once), in input order.

    Prompts are decoded in batches of ``batch_size``, shortest first, left-padded. ``engine="peftlab"`` (the
    default) decodes greedy search with :func:`peftlab.greedy.greedy_generate` (finished rows leave the batch, the
    LM head sees only the last position, the KV cache grows in place) and beam search with
    :func:`peftlab.beam.beam_generate` (each prompt prefilled once, not once per beam; prompts whose search is over
    stay in the batch, as in ``generate``: on a CPU whose fp32 kernels round a row differently with the number of
    rows, letting them leave changed E2E outputs in 3 of 4 runs), both token for token ``generate``'s;
    ``engine="transformers"`` is plain ``model.generate``.
    Where the model's generation config asks for something these loops do not reproduce
    (:func:`~peftlab.greedy.fast_greedy_blocker`), ``generate`` decodes.
    ``no_repeat_ngram_size`` blocks repeated n-grams within each output (``no_repeat_ngram_scope="output"``, the
    default: an output may still copy its prompt's words, as the papers' E2E beam search allowed), or over prompt
    and output (``"sequence"``: ``generate``'s own ``no_repeat_ngram_size`` of a decoder-only model).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown decoding engine {engine!r}; choose one of {', '.join(ENGINES)}")
    check_ngram_scope(no_repeat_ngram_scope)
    unique = list(dict.fromkeys(prompts))
    order = sorted(range(len(unique)), key=lambda i: len(tokenizer(unique[i], add_special_tokens=False)["input_ids"]))
    eos_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if stop_at_newline:
        eos_ids += _newline_ids_cached(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    own_loop = engine == "peftlab" and bool(eos_ids) and pad_id is not None and fast_greedy_blocker(model) is None
    fast_greedy = own_loop and num_beams == 1 and not no_repeat_ngram_size
    fast_beam = own_loop and num_beams > 1
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    contiguous_head_input(model)
    outputs: dict[str, str] = {}
    try:
        bar = tqdm(total=len(unique), desc="decode", unit="input", disable=not progress)
        for start in range(0, len(order), batch_size):
            batch_prompts = [unique[i] for i in order[start:start + batch_size]]
            enc = tokenizer(batch_prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            device = next(model.parameters()).device
            enc = {k: v.to(device) for k, v in enc.items()}
            # an empty first line would end the output before it starts
            suppress = eos_ids if stop_at_newline and eos_ids else []
            if fast_greedy:
                new_tokens = greedy_generate(model, enc["input_ids"], enc.get("attention_mask"),
                                             max_new_tokens=max_new_tokens, eos_token_ids=eos_ids,
                                             pad_token_id=pad_id, begin_suppress_tokens=suppress)
            elif fast_beam:
                new_tokens = beam_generate(model, enc["input_ids"], enc.get("attention_mask"), num_beams=num_beams,
                                           max_new_tokens=max_new_tokens, eos_token_ids=eos_ids, pad_token_id=pad_id,
                                           length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                                           no_repeat_ngram_scope=no_repeat_ngram_scope, begin_suppress_tokens=suppress,
                                           drop_finished=False)
            else:
                kwargs = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                              pad_token_id=pad_id, eos_token_id=eos_ids or None, length_penalty=length_penalty)
                if suppress:
                    kwargs["begin_suppress_tokens"] = suppress
                if no_repeat_ngram_size and no_repeat_ngram_scope == "sequence":
                    kwargs["no_repeat_ngram_size"] = no_repeat_ngram_size
                elif no_repeat_ngram_size:
                    from transformers import LogitsProcessorList

                    kwargs["logits_processor"] = LogitsProcessorList(
                        [OutputNoRepeatNGram(no_repeat_ngram_size, enc["input_ids"].shape[1])])
                generated = model.generate(**enc, **kwargs)
                new_tokens = generated[:, enc["input_ids"].shape[1]:]
            for prompt, tokens in zip(batch_prompts, new_tokens):
                outputs[prompt] = cut_output(tokenizer.decode(tokens, skip_special_tokens=True))
            bar.update(len(batch_prompts))
        bar.close()
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return [outputs[p] for p in prompts]
