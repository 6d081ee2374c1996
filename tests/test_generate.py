"""Decoding: peftlab's engine (greedy loop, beam search, growing KV cache) against transformers' generate, and its
bad input.

The per-method equivalence lives in test_method_contract.py (test_fast_greedy_equals_generate,
test_peftlab_beam_search_equals_generate, beam search on a GrowingCache); here are the cache on its own, the beam
search's settings, generate_texts end to end on real text, and the refusals.
"""
from __future__ import annotations

import pytest
import torch
from conftest import make_tiny
from transformers import DynamicCache

from peftlab.beam import beam_generate
from peftlab.generate import generate_texts
from peftlab.greedy import fast_greedy_blocker, greedy_generate
from peftlab.kv_cache import GrowingCache, GrowingLayer


def _states(batch, length, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 4, generator=gen), torch.randn(batch, 2, length, 4, generator=gen)


def test_growing_cache_holds_what_dynamic_cache_holds():
    growing, dynamic = GrowingCache(capacity=3), DynamicCache()
    for step, length in enumerate((2, 1, 1, 3)):  # passes the capacity of 3 on the third update
        keys, values = _states(3, length, step)
        for cache in (growing, dynamic):
            got = cache.update(keys, values, layer_idx=0)
        want = dynamic.layers[0]
        assert torch.equal(got[0], want.keys) and torch.equal(got[1], want.values)
        assert growing.get_seq_length() == dynamic.get_seq_length() == want.keys.shape[-2]
    rows = torch.tensor([2, 0])
    growing.batch_select_indices(rows)
    dynamic.batch_select_indices(rows)
    assert torch.equal(growing.layers[0].keys, dynamic.layers[0].keys)
    growing.crop(-2)
    assert growing.get_seq_length() == 5
    assert torch.equal(growing.layers[0].values, dynamic.layers[0].values[:, :, :5])


def test_growing_layer_refuses_a_capacity_below_one():
    with pytest.raises(ValueError, match="capacity of at least 1"):
        GrowingLayer(0)


def test_greedy_refuses_a_compaction_fraction_outside_0_1():
    model = make_tiny("llama").eval()
    with pytest.raises(ValueError, match="compact_at"):
        greedy_generate(model, torch.ones(1, 3, dtype=torch.long), None, max_new_tokens=2, eos_token_ids=[2],
                        pad_token_id=0, compact_at=1.5)


def test_generation_config_with_a_logits_processor_blocks_the_fast_path():
    model = make_tiny("llama")
    assert fast_greedy_blocker(model) is None
    model.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in fast_greedy_blocker(model)
    assert "not a transformers generation model" in fast_greedy_blocker(torch.nn.Linear(2, 2))


def test_generate_texts_refuses_an_unknown_engine():
    with pytest.raises(ValueError, match="peftlab, transformers"):
        generate_texts(make_tiny("llama"), None, ["x"], engine="vllm")


@pytest.mark.parametrize("num_beams,ngram,scope", [(1, 0, "output"), (3, 0, "output"), (4, 3, "output"),
                                                   (4, 3, "sequence"), (1, 2, "output")])
def test_generate_texts_engines_agree_on_real_text(num_beams, ngram, scope):
    """Both engines with SmolLM2's real tokenizer (newline stop, begin suppression, length-sorted batches)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftlab.zoo import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=64, vocab_size=len(tokenizer),
                                         max_position_embeddings=128)).eval()
    prompts = ["name : The Eagle | food : French ||", "name : Alimentum ||", "name : The Eagle | area : city "
               "centre | near : Burger King ||", "name : Alimentum ||"]
    kwargs = dict(num_beams=num_beams, max_new_tokens=8, batch_size=3, progress=False, no_repeat_ngram_size=ngram,
                  no_repeat_ngram_scope=scope)
    want = generate_texts(model, tokenizer, prompts, engine="transformers", **kwargs)
    got = generate_texts(model, tokenizer, prompts, engine="peftlab", **kwargs)
    assert got == want and len(got) == 4 and got[1] == got[3]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("settings", [dict(length_penalty=1.0), dict(length_penalty=0.8, no_repeat_ngram_size=2),
                                      dict(length_penalty=1.3, early_stopping=True),
                                      dict(length_penalty=1.0, early_stopping="never"),
                                      dict(length_penalty=0.0), dict(length_penalty=0.5, eos_every=2)])
@pytest.mark.parametrize("drop_finished", [True, False])
def test_beam_generate_equals_generate(arch, settings, drop_finished):
    """peftlab's beam search against generate's on left-padded prompts of different lengths: the same tokens (and
    the same output length) for length penalties, n-gram blocking and every early-stopping rule; with a low length
    penalty the prompts whose search is over leave the batch before the end."""
    settings = dict(settings)
    eos = list(range(3, 96, settings.pop("eos_every", 4)))
    torch.manual_seed(0)
    model = make_tiny(arch).eval()
    gen = torch.Generator().manual_seed(7)
    ids, mask = torch.zeros(4, 7, dtype=torch.long), torch.zeros(4, 7, dtype=torch.long)
    for row, length in enumerate((7, 5, 3, 2)):
        ids[row, 7 - length:] = torch.randint(3, 96, (length,), generator=gen)
        mask[row, 7 - length:] = 1
    ngram = settings.get("no_repeat_ngram_size")
    want = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, num_beams=3,
                          pad_token_id=0, eos_token_id=eos, begin_suppress_tokens=eos, **settings)[:, 7:]
    trace: list[int] = []
    got = beam_generate(model, ids, mask, num_beams=3, max_new_tokens=10, eos_token_ids=eos, pad_token_id=0,
                        begin_suppress_tokens=eos, trace=trace, drop_finished=drop_finished,
                        **{**settings, "no_repeat_ngram_size": ngram or 0})
    assert torch.equal(got, want)
    if not drop_finished:
        assert set(trace) == {4}  # every prompt stays to the end
    elif settings["length_penalty"] < 1.0 and not ngram:
        assert min(trace) < 4  # some prompt left the batch early


def test_output_ngram_block_lets_the_output_copy_its_prompt():
    """no_repeat_ngram_scope="output": an n-gram of the prompt may be generated, one of the output may not repeat;
    "sequence" (generate's no_repeat_ngram_size) bans both."""
    from peftlab.beam import ngram_processor

    prompt = [7, 1, 2, 3, 9]  # holds the 3-gram (1, 2, 3)
    cases = {  # generated so far -> banned next tokens under (output, sequence)
        (5, 1, 2): (set(), {3}),  # (1, 2) -> 3 only repeats the prompt's 3-gram
        (1, 2, 4, 1, 2): ({4}, {3, 4}),  # the output's own (1, 2, 4) would repeat
    }
    for generated, (want_output, want_sequence) in cases.items():
        ids = torch.tensor([prompt + list(generated)])
        for scope, want in (("output", want_output), ("sequence", want_sequence)):
            scores = ngram_processor(3, scope, len(prompt))(ids, torch.zeros(1, 12))
            assert {int(i) for i in torch.nonzero(scores[0] == -float("inf"))} == want, (scope, generated)
    assert ngram_processor(0, "output", 5) is None
    with pytest.raises(ValueError, match="output, sequence"):
        ngram_processor(3, "prompt", 5)
    with pytest.raises(ValueError, match="output, sequence"):
        generate_texts(make_tiny("llama"), None, ["x"], no_repeat_ngram_scope="prompt")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_beam_generate_output_scope_equals_generate_with_the_output_block(arch):
    """beam_generate's "output" n-gram block is generate's beam search with OutputNoRepeatNGram as its processor;
    on prompts made of what the model itself generates, it differs from the "sequence" block."""
    from transformers import LogitsProcessorList

    from peftlab.beam import OutputNoRepeatNGram

    torch.manual_seed(0)
    model = make_tiny(arch).eval()
    common = dict(num_beams=3, max_new_tokens=10, eos_token_ids=[95], pad_token_id=0, length_penalty=0.9)
    seed = torch.randint(3, 90, (3, 2), generator=torch.Generator().manual_seed(3))
    ids = torch.cat([seed, beam_generate(model, seed, None, **common)[:, :6]], dim=1)  # the model's own words
    ids[ids == 0] = 1
    mask = torch.ones_like(ids)
    want = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, num_beams=3,
                          pad_token_id=0, eos_token_id=[95], length_penalty=0.9,
                          logits_processor=LogitsProcessorList([OutputNoRepeatNGram(2, ids.shape[1])])
                          )[:, ids.shape[1]:]
    got = beam_generate(model, ids, mask, no_repeat_ngram_size=2, no_repeat_ngram_scope="output", **common)
    assert torch.equal(got, want)
    sequence = beam_generate(model, ids, mask, no_repeat_ngram_size=2, no_repeat_ngram_scope="sequence", **common)
    assert not torch.equal(sequence, got)


def test_beam_generate_refuses_fewer_than_two_beams():
    with pytest.raises(ValueError, match="2 or more beams"):
        beam_generate(make_tiny("llama"), torch.ones(1, 3, dtype=torch.long), None, num_beams=1, max_new_tokens=2,
                      eos_token_ids=[2], pad_token_id=0)


@pytest.mark.parametrize("engine", ["peftlab", "transformers"])
def test_the_recipe_picks_the_decoding_engine(engine, shared_data, tmp_path, monkeypatch):
    """decode.engine reaches generate_texts from an E2E run's final evaluation; an unknown engine is a recipe error."""
    import peftlab.metrics.e2e as e2e_metrics
    from peftlab import ConfigError
    from peftlab.train import tasks
    from peftlab.train.recipe import recipe_from_dict

    recipe = recipe_from_dict({"task": "e2e", "data": {"data_dir": str(shared_data), "eval_limit": 2,
                                                       "train_limit": 2, "dev_limit": 2},
                               "decode": {"engine": engine, "no_repeat_ngram_size": 4}})
    seen: dict[str, object] = {}

    def fake_generate(model, tokenizer, prompts, **kwargs):
        seen.update(kwargs)
        return ["text"] * len(prompts)

    monkeypatch.setattr(tasks, "generate_texts", fake_generate)
    monkeypatch.setattr(e2e_metrics, "score_e2e", lambda predictions, refs: type("S", (), {"as_dict": dict})())
    task = tasks.E2ETask(recipe)
    task.final_eval(None, None, tmp_path, progress=False)
    assert seen["engine"] == engine
    assert seen["no_repeat_ngram_size"] == 4 and seen["no_repeat_ngram_scope"] == "output"  # the default scope
    assert (tmp_path / "predictions.txt").read_text() == "text\ntext\n"
    with pytest.raises(ConfigError, match=r"decode\.engine: expected one of \['peftlab', 'transformers'\]"):
        recipe_from_dict({"decode": {"engine": "vllm"}})
