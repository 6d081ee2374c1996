"""The fused, chunked LM-head cross-entropy equals F.cross_entropy on the full logits, values and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import make_batch, make_tiny
from peftlab import LoraConfig, get_peft_model
from peftlab.train.fused_ce import linear_cross_entropy
from peftlab.train.tasks import TargetOnlyCausalLMLoss


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 5, 64])  # one row per chunk, uneven chunks, a single chunk
def test_equals_cross_entropy_in_float64(label_smoothing, with_bias, chunk_rows):
    gen = torch.Generator().manual_seed(0)
    n, d, vocab = 37, 16, 101
    hidden = torch.randn(n, d, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(vocab, d, dtype=torch.float64, generator=gen, requires_grad=True)
    bias = torch.randn(vocab, dtype=torch.float64, generator=gen, requires_grad=True) if with_bias else None
    targets = torch.randint(0, vocab, (n,), generator=gen)
    inputs = [hidden, weight] + ([bias] if with_bias else [])
    ref = F.cross_entropy(F.linear(hidden, weight, bias), targets, label_smoothing=label_smoothing)
    ref_grads = torch.autograd.grad(2.5 * ref, inputs)
    out = linear_cross_entropy(hidden, weight, targets, bias=bias, label_smoothing=label_smoothing,
                               chunk_elements=chunk_rows * vocab)
    grads = torch.autograd.grad(2.5 * out, inputs)  # the upstream gradient scales the saved ones
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_frozen_head_under_bf16_autocast_matches_unfused():
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(50, 32, generator=gen, requires_grad=True)
    weight = torch.randn(1000, 32, generator=gen) * 0.2  # frozen LM head: no gradient is computed for it
    targets = torch.randint(0, 1000, (50,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy(F.linear(hidden, weight).float(), targets, label_smoothing=0.1)
        out = linear_cross_entropy(hidden, weight, targets, label_smoothing=0.1, chunk_elements=16 * 1000)
    (ref_grad,) = torch.autograd.grad(ref, hidden)
    (grad,) = torch.autograd.grad(out, hidden)
    assert out.dtype == torch.float32 and grad.dtype == hidden.dtype
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad, ref_grad, rtol=2e-2, atol=1e-4)  # bf16 products on both sides


def test_no_grad_and_bad_shapes():
    hidden, weight = torch.randn(4, 8), torch.randn(10, 8, requires_grad=True)
    targets = torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        out = linear_cross_entropy(hidden, weight, targets)
    torch.testing.assert_close(out, F.cross_entropy(hidden @ weight.detach().T, targets))
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        linear_cross_entropy(hidden[None], weight, targets)


def test_target_only_loss_fused_equals_unfused_on_a_model():
    model = get_peft_model(make_tiny("llama"), LoraConfig(r=2, target_modules=["q", "v"], init_weights=False))
    batch = make_batch("llama", batch=3, length=11)
    batch["labels"][:, :4] = -100  # a prompt part without loss
    losses, grads = [], []
    for fused in (True, False):
        loss = TargetOnlyCausalLMLoss(model, label_smoothing=0.1, fused=fused)(**batch)
        params = [p for p in model.parameters() if p.requires_grad]
        grads.append(torch.autograd.grad(loss, params))
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-6)
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
