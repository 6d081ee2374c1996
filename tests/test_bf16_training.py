"""`run.bf16` with `run.bf16_frozen_weights`: frozen base weights in bf16, every trainable tensor fp32, for every
method of the shared matrix; a bf16-autocast step trains and plain (decode-time) forwards still run."""
from __future__ import annotations

import pytest
import torch

from conftest import make_batch, make_tiny
from method_cases import METHOD_CASES
from peftlab import get_peft_model
from peftlab.train.checkpoint import training_state_params
from peftlab.train.speed import cast_frozen_weights


@pytest.mark.parametrize("case", [c for c in METHOD_CASES if "llama" in c.archs], ids=str)
def test_frozen_weights_bf16_trainable_fp32(case):
    model = get_peft_model(make_tiny("llama"), case.make_config("llama", False))
    state = training_state_params(model)
    frozen = [p for p in model.parameters() if id(p) not in {id(q) for q in state.values()}]
    cast = cast_frozen_weights(model, torch.bfloat16)
    assert cast == sum(p.numel() for p in frozen if p.is_floating_point())
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    if case.adapter_only:
        assert cast > 0  # the base model's weights
    batch = make_batch("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed, "a bf16-autocast step should move the trainable tensors"
    model.eval()
    with torch.no_grad():  # what decoding after training does: no autocast, mixed-dtype model
        logits = model(input_ids=batch["input_ids"]).logits
    assert torch.isfinite(logits.float()).all()


def test_bf16_head_sees_a_contiguous_input_when_generating():
    """A bf16 LM head on the CPU copies its weight per row of a non-contiguous 3-D input (generation's prefill
    slice ``hidden[:, -1:, :]``); cast_frozen_weights puts a pre-hook on the head that makes the input contiguous,
    once, and generate_texts does so for any model."""
    from peftlab import LoraConfig
    from peftlab.generate import _contiguous_input, contiguous_head_input

    model = get_peft_model(make_tiny("llama"), LoraConfig(r=2, target_modules=["q", "v"]))
    cast_frozen_weights(model, torch.bfloat16)
    head = model.model.get_output_embeddings()
    assert [h for h in head._forward_pre_hooks.values() if h is _contiguous_input] == [_contiguous_input]
    assert contiguous_head_input(model) is False  # already there: not added twice
    seen = []
    head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    input_ids = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])
    attention_mask = (input_ids != 0).long()
    model.eval()
    with torch.no_grad():
        hooked = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=4,
                                do_sample=False, pad_token_id=0)
        assert seen and all(seen)
        head._forward_pre_hooks.pop(next(k for k, h in head._forward_pre_hooks.items() if h is _contiguous_input))
        seen.clear()
        plain = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=4,
                               do_sample=False, pad_token_id=0)
    assert not all(seen)  # without the hook the prefill slice reaches the head as it is
    assert torch.equal(hooked, plain)
