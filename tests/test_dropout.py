"""peftlab's CPU adapter dropout: nn.Dropout's contract (rate, expectation, eval identity, gradient)."""
from __future__ import annotations

import torch

from peftlab.tuners.dropout import Dropout, dropout


def test_rate_and_expectation():
    torch.manual_seed(0)
    x = torch.ones(1_000_003)  # not a multiple of 4: the last 64-bit draw is partly used
    y = dropout(x, 0.1)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 3e-3  # ~10 standard errors of a Bernoulli(0.1) mean over 1e6 draws
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 65536 / (65536 - round(0.1 * 65536))))
    assert abs(y.mean().item() - 1.0) < 4e-3
    assert not torch.equal(dropout(x, 0.1) == 0, y == 0)  # a new mask each call


def test_module_behaves_like_nn_dropout():
    layer = Dropout(0.25)
    assert isinstance(layer, torch.nn.Dropout)  # code that switches dropouts off by type still finds it
    x = torch.randn(64, 32, requires_grad=True)
    layer.eval()
    assert layer(x) is x
    layer.train()
    y = layer(x)
    y.sum().backward()
    mask = (y != 0).float()
    torch.testing.assert_close(x.grad, mask / (1 - 0.25))  # the gradient is the mask times the scale
    assert Dropout(0.0)(x) is x
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))


def test_low_precision_input_keeps_its_dtype():
    x = torch.randn(8, 16, dtype=torch.bfloat16)
    assert dropout(x, 0.5).dtype == torch.bfloat16
