"""peftlab's CPU adapter dropout: nn.Dropout's contract (rate, expectation, eval identity, gradient)."""
from __future__ import annotations

import pytest
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


# --- the base model's dropout layers (peftlab.train.speed.fast_base_dropout, recipe model.fast_dropout) ----------
def _gpt2_with_dropout(p: float = 0.1):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=97, n_positions=32, resid_pdrop=p, embd_pdrop=p,
                     attn_pdrop=p, attn_implementation="eager")
    return GPT2LMHeadModel(cfg)


def test_fast_base_dropout_replaces_every_plain_dropout_and_keeps_the_model():
    from peftlab.train.speed import fast_base_dropout

    model = _gpt2_with_dropout()
    plain = [(name, m.p) for name, m in model.named_modules() if type(m) is torch.nn.Dropout]
    assert len(plain) == 1 + 2 * 3  # embeddings; per block: attention probabilities, attention output, MLP output
    keys = list(model.state_dict())
    ids = torch.randint(0, 97, (2, 12))
    model.eval()
    with torch.no_grad():
        before = model(ids).logits
    assert fast_base_dropout(model) == len(plain)
    assert all(type(m) is not torch.nn.Dropout for m in model.modules())
    assert [(name, m.p) for name, m in model.named_modules() if isinstance(m, Dropout)] == plain
    assert list(model.state_dict()) == keys
    assert not any(m.training for m in model.modules())  # eval mode kept
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)  # no dropout in eval: the same outputs, bit for bit
    model.train()
    with torch.no_grad():
        trained_a, trained_b = model(ids).logits, model(ids).logits
    assert not torch.equal(trained_a, before) and not torch.equal(trained_a, trained_b)  # masks drawn per call
    assert fast_base_dropout(model) == 0  # idempotent: peftlab's Dropout is a subclass, left alone


def test_fast_base_dropout_leaves_zero_rate_in_place_and_subclassed_dropouts():
    from peftlab.train.speed import fast_base_dropout

    class Custom(torch.nn.Dropout):
        pass

    model = torch.nn.Sequential(torch.nn.Dropout(0.0), torch.nn.Dropout(0.2, inplace=True), Custom(0.3),
                                torch.nn.Sequential(torch.nn.Dropout(0.4)))
    assert fast_base_dropout(model) == 1
    assert [type(m).__name__ for m in model[:3]] == ["Dropout", "Dropout", "Custom"]
    assert type(model[0]) is torch.nn.Dropout and type(model[1]) is torch.nn.Dropout
    assert type(model[3][0]) is Dropout and model[3][0].p == 0.4


@pytest.mark.parametrize("fast", [True, False])
def test_train_uses_fast_dropout_by_default_and_torchs_when_asked(tmp_path, shared_data, monkeypatch, fast):
    """``peftlab train`` swaps the base model's dropouts before adding adapters (model.fast_dropout, default true);
    ``model.fast_dropout=false`` keeps transformers' nn.Dropout."""
    import peftlab.train.loop as loop
    from peftlab.cli import main

    swapped: list[int] = []
    original = loop.fast_base_dropout
    monkeypatch.setattr(loop, "fast_base_dropout", lambda model: swapped.append(original(model)) or swapped[-1])
    args = ["train", "glue", "--task", "sst2", "--model", "minilm-l6", "--method", "lora", "--max-steps", "1",
            "--train-limit", "8", "--eval-limit", "8", "--output-dir", str(tmp_path / "run"), "--data-dir",
            str(shared_data), "--no-progress", "optim.batch_size=8", "run.report_to=none"]
    assert main(args + ([] if fast else ["model.fast_dropout=false"])) == 0
    # MiniLM-L6: the embeddings', 3 per layer (attention probabilities, whose p the attention function reads;
    # attention output; FFN output) and the classifier's
    assert swapped == ([1 + 3 * 6 + 1] if fast else [])


def test_a_stored_recipe_without_the_field_ran_torchs_dropout():
    """Result lines from before the field read as ``fast_dropout: false`` (recipe.LEGACY_VALUES): current for a
    suite recipe that says false, stale against the new default."""
    import json

    from peftlab.bench.recipes import normalised_recipe, same_recipe

    for task in ("glue", "e2e"):
        torch_dropout = normalised_recipe({"task": task, "method": "lora", "model": {"fast_dropout": False}})
        older = json.loads(json.dumps(torch_dropout))
        del older["model"]["fast_dropout"]
        assert same_recipe(older, torch_dropout), task
        assert not same_recipe(older, normalised_recipe({"task": task, "method": "lora"})), task
