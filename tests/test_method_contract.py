"""Contract every method must hold, on tiny GPT-2, Llama (GQA) and BERT models.

Each test is parametrized over METHOD_CASES (tests/method_cases.py) x architectures.
"""
from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, DEVICE, make_batch, make_tiny, model_output, on_device
from method_cases import METHOD_CASES, MethodCase
from safetensors import safe_open

from peftlab import AdapterError, PeftModel, get_peft_model
from peftlab.io import WEIGHTS_NAME
from peftlab.tuners.base import AdapterLayer

ATOL = 1e-5
matrix = pytest.mark.parametrize("case", METHOD_CASES, ids=str)
archs = pytest.mark.parametrize("arch", ARCHS)


def build(case: MethodCase, arch: str, init: bool = True, seed: int = 0):
    if arch not in case.archs:
        pytest.skip(f"{case} does not apply to {arch}")
    base = make_tiny(arch, seed)
    reference = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(base, case.make_config(arch, init))
    return model, reference


def base_logits(arch: str, batch, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return model_output(make_tiny(arch, seed).eval(), batch)


def train_steps(model, batch, steps: int = 3) -> None:
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        optim.zero_grad()
        model(**batch).loss.backward()
        optim.step()
    model.eval()


@matrix
@archs
def test_identity_at_init(case, arch):
    if not case.identity_at_init:
        pytest.skip(f"{case} defines no identity at init")
    model, _ = build(case, arch)
    batch = make_batch(arch)
    with torch.no_grad():
        torch.testing.assert_close(model_output(model.eval(), batch), base_logits(arch, batch), atol=0, rtol=0)


@matrix
@archs
def test_non_identity_without_init(case, arch):
    if not case.has_init_switch:
        pytest.skip(f"{case} has no init_weights switch")
    model, _ = build(case, arch, init=False)
    batch = make_batch(arch)
    with torch.no_grad():
        diff = (model_output(model.eval(), batch) - base_logits(arch, batch)).abs().max().item()
    assert diff > 1e-4


@matrix
@archs
def test_only_adapter_params_get_grads_and_change(case, arch):
    model, reference = build(case, arch, init=False)
    adapter = set(model.adapter_parameters("default").values())
    trainable = {p for p in model.parameters() if p.requires_grad}
    # everything trainable is the adapter's (saved, non-trained adapter state such as step counters may exist)
    assert trainable and trainable == {p for p in adapter if p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = make_batch(arch)
    model.train()
    model(**batch).loss.backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == (param in trainable), name
    model.zero_grad()
    train_steps(model, batch)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    adapter_names = {n for n, p in model.named_parameters() if p in trainable}
    assert changed and changed <= adapter_names
    if case.adapter_only:  # the wrapped base weights themselves are untouched
        with model.disable_adapter(), torch.no_grad():
            torch.testing.assert_close(model_output(model, batch), base_logits(arch, batch), atol=0, rtol=0)


@matrix
@archs
def test_save_load_roundtrip(case, arch, tmp_path):
    model, reference = build(case, arch, init=False)
    batch = make_batch(arch)
    train_steps(model, batch, steps=1)
    with torch.no_grad():
        expected = model_output(model, batch)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / WEIGHTS_NAME), "pt") as handle:
        saved_keys = set(handle.keys())
    adapter_keys = set(model.get_peft_model_state_dict())
    assert saved_keys == adapter_keys
    if case.adapter_only:  # no base weights in the folder
        assert saved_keys == set(model.adapter_parameters("default"))
        assert not any(".base_layer." in k for k in saved_keys)
    fresh = make_tiny(arch, seed=99)  # different seed: any init-time randomness of the adapter differs
    fresh.load_state_dict(reference)
    loaded = PeftModel.from_pretrained(fresh, tmp_path).eval()
    assert not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model_output(loaded, batch), expected, atol=0, rtol=0)


@matrix
@archs
def test_merge_unmerge_and_unload(case, arch):
    model, _ = build(case, arch, init=False)
    batch = make_batch(arch)
    model.eval()
    with torch.no_grad():
        adapted = model_output(model, batch)
        if not case.mergeable:
            with pytest.raises(AdapterError):
                model.merge_and_unload()
            return
        model.merge_adapter()
        torch.testing.assert_close(model_output(model, batch), adapted, atol=ATOL, rtol=0)
        model.unmerge_adapter()
        torch.testing.assert_close(model_output(model, batch), adapted, atol=ATOL, rtol=0)
        plain = model.merge_and_unload()
        assert type(plain).__name__ == type(make_tiny(arch)).__name__
        assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
        assert not any("base_layer" in n for n, _ in plain.named_parameters())
        torch.testing.assert_close(model_output(plain, batch), adapted, atol=ATOL, rtol=0)


@matrix
@archs
def test_disable_adapter_is_base_and_restores(case, arch):
    model, _ = build(case, arch, init=False)
    batch = make_batch(arch)
    model.eval()
    if not case.adapter_only:
        with pytest.raises(AdapterError):
            with model.disable_adapter():
                pass
        return
    def requires_grad_map():
        return {n: p.requires_grad for n, p in model.named_parameters()}

    with torch.no_grad():
        adapted = model_output(model, batch)
        before = requires_grad_map()
        with model.disable_adapter():
            torch.testing.assert_close(model_output(model, batch), base_logits(arch, batch), atol=0, rtol=0)
        torch.testing.assert_close(model_output(model, batch), adapted, atol=0, rtol=0)
        assert requires_grad_map() == before
        if not case.mergeable:  # the merged half below applies to mergeable methods only
            return
        model.merge_adapter()
        before_merged = requires_grad_map()
        with model.disable_adapter():
            torch.testing.assert_close(model_output(model, batch), base_logits(arch, batch), atol=ATOL, rtol=0)
        assert all(layer.merged for _, layer in _adapter_layers(model))
        torch.testing.assert_close(model_output(model, batch), adapted, atol=ATOL, rtol=0)
        assert requires_grad_map() == before_merged


def _adapter_layers(model):
    from peftlab.tuners.base import ModulesToSaveWrapper, iter_adapter_layers

    return [(p, layer) for p, layer in iter_adapter_layers(model.model) if not isinstance(layer, ModulesToSaveWrapper)]


@matrix
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_cached_equals_uncached(case, arch, num_beams):
    model, _ = build(case, arch, init=False)
    model.eval()
    prompt = make_batch(arch, batch=2, length=5)
    kwargs = dict(input_ids=prompt["input_ids"], attention_mask=prompt["attention_mask"], max_new_tokens=6,
                  do_sample=False, num_beams=num_beams, output_scores=True, return_dict_in_generate=True,
                  pad_token_id=0, min_new_tokens=6)
    cached = model.generate(use_cache=True, **kwargs)
    uncached = model.generate(use_cache=False, **kwargs)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.scores, uncached.scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def _left_padded_prompts(arch: str):
    """Four prompts of 2 to 7 tokens, left-padded to (4, 7), as generate_texts batches them."""
    gen = torch.Generator().manual_seed(7)
    ids = torch.zeros(4, 7, dtype=torch.long)
    mask = torch.zeros(4, 7, dtype=torch.long)
    for row, length in enumerate((7, 5, 3, 2)):
        ids[row, 7 - length:] = torch.randint(3, 96, (length,), generator=gen)
        mask[row, 7 - length:] = 1
    return on_device(ids), on_device(mask)


@matrix
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("compact_at", [0.0, 0.5, 1.0])
def test_fast_greedy_equals_generate(case, arch, compact_at):
    """peftlab's greedy loop (finished rows leave the batch, growing cache) gives generate's tokens exactly."""
    from peftlab.greedy import greedy_generate

    model, _ = build(case, arch, init=False)
    model.eval()
    ids, mask = _left_padded_prompts(arch)
    eos = list(range(3, 96, 4))  # a quarter of the vocabulary: rows end at different steps
    want = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                          pad_token_id=0, eos_token_id=eos, begin_suppress_tokens=eos)[:, ids.shape[1]:]
    got = greedy_generate(model, ids, mask, max_new_tokens=10, eos_token_ids=eos, pad_token_id=0,
                          begin_suppress_tokens=eos, compact_at=compact_at)
    assert not torch.isin(got[:, 0], torch.tensor(eos, device=got.device)).any()  # begin suppression held
    assert torch.equal(got[:, :want.shape[1]], want)
    assert (got[:, want.shape[1]:] == 0).all()


@matrix
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_peftlab_beam_search_equals_generate(case, arch):
    """peftlab's beam search (each prompt prefilled once, prompts whose search is over leave the batch) gives
    generate's tokens exactly, with the first-step suppression and the n-gram block."""
    from peftlab.beam import beam_generate

    model, _ = build(case, arch, init=False)
    model.eval()
    ids, mask = _left_padded_prompts(arch)
    eos = list(range(3, 96, 2))  # half the vocabulary: hypotheses end early, and prompts finish at different steps
    kwargs = dict(max_new_tokens=8, pad_token_id=0, length_penalty=0.5, no_repeat_ngram_size=2)
    want = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=3, eos_token_id=eos,
                          begin_suppress_tokens=eos[:5], **kwargs)[:, ids.shape[1]:]
    trace: list[int] = []
    got = beam_generate(model, ids, mask, num_beams=3, eos_token_ids=eos, begin_suppress_tokens=eos[:5],
                        trace=trace, **kwargs)
    assert torch.equal(got, want)
    assert trace[0] == 4 and trace == sorted(trace, reverse=True)


@matrix
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_beam_search_on_growing_cache_equals_dynamic_cache(case, arch):
    from peftlab.kv_cache import GrowingCache

    model, _ = build(case, arch, init=False)
    model.eval()
    ids, mask = _left_padded_prompts(arch)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                  num_beams=3, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    want = model.generate(**kwargs)
    got = model.generate(past_key_values=GrowingCache(capacity=4), **kwargs)  # too small: it must grow
    assert torch.equal(got.sequences, want.sequences)
    for a, b in zip(got.scores, want.scores):
        assert torch.equal(a, b)


@matrix
@archs
def test_gradient_checkpointing_same_grads(case, arch):
    batch = make_batch(arch)
    grads = []
    for checkpointing in (False, True):
        model, _ = build(case, arch, init=False)
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        model(**batch).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


@matrix
@archs
def test_several_adapters(case, arch):
    model, _ = build(case, arch, init=False)
    batch = make_batch(arch)
    model.eval()
    if not case.adapter_only:
        with pytest.raises(AdapterError):
            model.add_adapter("other", case.make_config(arch, False))
        return
    with torch.no_grad():
        first = model_output(model, batch)
        torch.manual_seed(7)
        model.add_adapter("other", case.make_config(arch, False))
        torch.testing.assert_close(model_output(model, batch), first, atol=0, rtol=0)  # add does not activate
        model.set_adapter("other")
        second = model_output(model, batch)
        assert (second - first).abs().max() > 1e-4
        model.set_adapter("default")
        torch.testing.assert_close(model_output(model, batch), first, atol=0, rtol=0)
        model.delete_adapter("default")
        assert list(model.peft_config) == ["other"] and model.active_adapter == "other"
        torch.testing.assert_close(model_output(model, batch), second, atol=0, rtol=0)
        model.delete_adapter("other")
        assert not any(True for _ in _adapter_layers(model))
        torch.testing.assert_close(model_output(model, batch), base_logits(arch, batch), atol=0, rtol=0)


@matrix
@archs
def test_module_moves_and_copies(case, arch):
    import copy

    model, _ = build(case, arch, init=False)
    batch = make_batch(arch)
    model.eval()
    with torch.no_grad():
        expected = model_output(model, batch)
        moved = model.to(DEVICE).float()  # what accelerate/DDP do: nn.Module._apply must work
        torch.testing.assert_close(model_output(moved, batch), expected, atol=0, rtol=0)
        torch.testing.assert_close(model_output(copy.deepcopy(model), batch), expected, atol=0, rtol=0)


class _IdsTokenizer:
    """Texts of space-separated token ids (the collate's tokenizer interface, for a tiny random model)."""

    pad_token_id, eos_token_id = 0, 2

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [int(t) for t in text.split()]}


def _packing_batches(pack_per_row: int):
    from peftlab.train import collate_causal_lm

    gen = torch.Generator().manual_seed(5)
    lengths = [(3, 6), (5, 2), (2, 9), (4, 4), (6, 1)]  # (prompt, target) tokens: rows of unequal length
    prompts, targets = [], []
    for n_prompt, n_target in lengths:
        ids = torch.randint(3, 96, (n_prompt + n_target,), generator=gen).tolist()
        prompts.append(" ".join(map(str, ids[:n_prompt])))
        targets.append(" ".join(map(str, ids[n_prompt:])))
    tokenizer = _IdsTokenizer()
    return (on_device(collate_causal_lm(tokenizer, prompts, targets).as_model_inputs()),
            on_device(collate_causal_lm(tokenizer, prompts, targets, pack_per_row=pack_per_row).as_model_inputs()))


@matrix
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_packed_batch_gives_the_padded_loss_and_gradients(case, arch):
    """Packing (several examples per row, attending only to themselves) changes nothing but the layout: the
    target-only loss, the model's own loss and every trainable gradient equal the padded batch's."""
    from peftlab.train.tasks import TargetOnlyCausalLMLoss

    model, _ = build(case, arch, init=False)
    model.eval()  # no dropout: the two layouts draw different masks
    padded, packed = _packing_batches(pack_per_row=2)
    assert packed["input_ids"].shape[0] == 3 and packed["input_ids"].numel() < padded["input_ids"].numel()
    loss_module = TargetOnlyCausalLMLoss(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    results = []
    for batch in (padded, packed):
        model.zero_grad()
        loss = loss_module(**batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainable if p.grad is not None}
        with torch.no_grad():  # transformers reads packed positions only without a KV cache
            own_loss = model(**batch, use_cache=False).loss
        results.append((loss.detach(), own_loss, grads))
    (want, want_own, want_grads), (got, got_own, got_grads) = results
    torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(got_own, want_own, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(got_own, got, atol=ATOL, rtol=1e-5)
    assert want_grads and set(got_grads) == set(want_grads)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, atol=ATOL, rtol=1e-4, msg=name)
