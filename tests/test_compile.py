"""`run.compile`: torch.compile of the blocks trains exactly like eager mode, for every method that says it can
(the prefix methods: their FFN and norms, the attention eager); a method that says it cannot is refused before
training."""
from __future__ import annotations

import pytest
import torch

from conftest import make_batch, make_tiny
from method_cases import METHOD_CASES, MethodCase
from peftlab import ConfigError, GatedPrefixConfig, PrefixTuningConfig, get_peft_model
from peftlab.registry import get_method
from peftlab.train.speed import compile_blocks


def _train_losses(case, compiled: bool, steps: int = 3) -> tuple[list[float], dict[str, torch.Tensor]]:
    torch._dynamo.reset()
    model = get_peft_model(make_tiny("llama"), case.make_config("llama", False))
    for module in model.modules():  # compiled code draws other random numbers: compare without dropout
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if compiled:
        assert compile_blocks(model) == 3
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for step in range(steps):
        batch = make_batch("llama", length=7 + step)  # a new length each step: dynamic shapes, no recompile
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        for name in model.peft_config:
            model._tuner(name).on_optimizer_step(model, name)
        losses.append(loss.item())
    return losses, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


COMPILABLE = [c for c in METHOD_CASES if "llama" in c.archs
              and get_method(c.make_config("llama", True)).tuner_cls.supports_compile]
# the reparameterized prefixes (computed once per forward pass, outside the blocks) are what a compiled block kept
# stale; the matrix's prefix cases are trained directly, so these two join here
PREFIX_CASES = [MethodCase("prefix-mlp", lambda arch, init: PrefixTuningConfig(num_virtual_tokens=3),
                           identity_at_init=False, mergeable=False),
                MethodCase("gated-prefix-Ra-Ga", lambda arch, init: GatedPrefixConfig(num_virtual_tokens=3),
                           identity_at_init=False, mergeable=False)]


@pytest.mark.parametrize("case", COMPILABLE, ids=str)
def test_compiled_blocks_train_like_eager(case):
    eager_losses, eager_params = _train_losses(case, compiled=False)
    compiled_losses, compiled_params = _train_losses(case, compiled=True)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5, abs=1e-6)
    assert compiled_params.keys() == eager_params.keys()
    for name in eager_params:
        # Adam turns round-off in near-zero gradients into lr-sized steps: compare against the update size (~3e-2)
        torch.testing.assert_close(compiled_params[name], eager_params[name], rtol=1e-3, atol=5e-4)


@pytest.mark.parametrize("case", PREFIX_CASES, ids=str)
def test_reparameterized_prefixes_compile_outside_attention_and_train_like_eager(case):
    from torch._dynamo.utils import counters

    assert get_method(case.make_config("llama", True)).tuner_cls.compile_scope == "outside-attention"
    eager_losses, eager_params = _train_losses(case, compiled=False, steps=5)
    counters.clear()
    compiled_losses, compiled_params = _train_losses(case, compiled=True, steps=5)
    # compiled once, not again at every step: the whole block compiled made 15 graphs in 5 steps (the prefix, a new
    # tensor each forward, fails the block's guards), the FFN and the two norms make 3
    assert counters["stats"]["unique_graphs"] <= 3
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5, abs=1e-6)
    for name in eager_params:
        torch.testing.assert_close(compiled_params[name], eager_params[name], rtol=1e-3, atol=5e-4)
    torch._dynamo.reset()
    model = get_peft_model(make_tiny("llama"), case.make_config("llama", True))
    assert compile_blocks(model) == 3
    for block in model.model.model.layers:
        assert block._compiled_call_impl is None and block.self_attn._compiled_call_impl is None
        for part in (block.mlp, block.input_layernorm, block.post_attention_layernorm):
            assert part._compiled_call_impl is not None


def test_a_method_that_cannot_compile_is_refused(monkeypatch):
    from peftlab.tuners.lora.model import LoraTuner

    monkeypatch.setattr(LoraTuner, "supports_compile", False)
    model = get_peft_model(make_tiny("llama"), METHOD_CASES[0].make_config("llama", True))
    with pytest.raises(ConfigError, match="run.compile=false"):
        compile_blocks(model)


def test_uncompile_restores_eager_blocks_for_decoding():
    from torch._dynamo.utils import counters

    from peftlab.train.speed import uncompile_blocks

    torch._dynamo.reset()
    model = get_peft_model(make_tiny("llama"), METHOD_CASES[0].make_config("llama", True))
    compile_blocks(model)
    model(**make_batch("llama"))
    compiled_frames = counters["stats"]["unique_graphs"]
    assert compiled_frames > 0
    uncompile_blocks(model)
    model.eval()
    out = model.generate(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)
    assert counters["stats"]["unique_graphs"] == compiled_frames  # decoding compiled nothing new


@pytest.mark.slow
def test_train_cli_compile_flag(tmp_path, shared_data):
    from peftlab.cli import main

    common = ["--model", "minilm-l6", "--task", "sst2", "--train-limit", "16", "--eval-limit", "8", "--max-steps",
              "2", "--data-dir", str(shared_data), "--no-progress", "--compile", "optim.batch_size=8"]
    assert main(["train", "glue", "--method", "lora", "--output-dir", str(tmp_path / "lora"), *common]) == 0
    config = (tmp_path / "lora" / "config.yaml").read_text()
    assert "compile: true" in config
    assert main(["train", "glue", "--method", "prefix", "--output-dir", str(tmp_path / "prefix"), *common]) == 0
    assert "compile: true" in (tmp_path / "prefix" / "config.yaml").read_text()
