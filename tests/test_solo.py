"""Solo Connection: parity with hand-written math, the homotopy schedule, the learned-t pitfall, the parameter
formula, cached generation, activation checkpointing, no backward through lower blocks, and bad input."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import VOCAB, make_batch, make_tiny, model_output
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from peftlab import AdapterError, ConfigError, PeftConfig, PeftModel, SoloConnectionConfig, get_layout, get_peft_model
from peftlab.tuners.solo import (
    SoloBlock,
    advance_homotopy,
    attach_homotopy_schedule,
    complete_homotopy,
    current_t,
    homotopy_step,
    resolve_ramp_steps,
    set_homotopy_step,
    solo_states,
    unfinished_ramps,
)

PREFIX = "base_model.model."


def deep_llama(n_layers: int = 6, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(num_hidden_layers=n_layers, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=1,
                      eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(cfg)


def randomize_adapter(model: PeftModel, seed: int = 5) -> None:
    """Random values in every trainable adapter tensor (maps, biases, thetas), so no term of the math is zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in model.adapter_parameters("default").items():
            if param.is_floating_point() and ".solo." in key:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)


# --- parity with hand-written math -------------------------------------------------------------------------------
def reference_logits(arch: str, config: SoloConnectionConfig, saved: dict[str, torch.Tensor], step: int,
                     batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """h_j <- Block_j(h_{j-1}) + sum_i t_ij (B_ij A_ij h_i + b_ij), written with hooks on an unwrapped base model."""
    base = make_tiny(arch).eval()
    layout = get_layout(base)
    blocks = layout.blocks()
    pairs = config.resolve_pairs(len(blocks))
    hub = min(min(max(i, 0) for i, _ in pairs), min(j for _, j in pairs))

    def key(block: int, rest: str) -> str:
        return f"{PREFIX}{layout.block_path(block)}.solo.{rest}"

    def weight(i: int, j: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        site, name = (hub, "shared") if config.share_maps else (j, "from_emb" if i < 0 else f"from_{i}")
        if config.rank is None:
            W = saved[key(site, f"maps.{name}.weight")]
        else:
            W = saved[key(site, f"maps.{name}.B")] @ saved[key(site, f"maps.{name}.A")]  # (d, r) @ (r, d)
        return W, saved.get(key(site, f"maps.{name}.bias"))

    def t(i: int, j: int) -> float:
        ramp = config.ramp_steps if isinstance(config.ramp_steps, int) else 500  # unresolved auto: the fallback
        schedule = min(1.0, step / ramp)
        if config.t_mode == "constant":
            return config.t_constant
        name = "from_emb" if i < 0 else f"from_{i}"
        theta = saved.get(key(hub, "theta.shared") if config.share_t else key(j, f"theta.{name}"))
        learned = None if theta is None else (
            float(theta.clamp(0, 1)) if config.learned_t == "clamp" else float(torch.sigmoid(theta)))
        products = {"schedule": schedule, "learned": learned, "schedule*learned": schedule * (learned or 0.0)}
        return products[config.t_mode]

    acts: dict[int, torch.Tensor] = {}

    def source(h: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(h, h.shape[-1:]) if config.source_norm else h

    def record_embeddings(module, args):
        acts[-1] = source(args[0])

    def after_block(k: int):
        def hook(module, args, out):
            h = out
            if not config.source_after_skips:
                acts[k] = source(h)
            for i, j in pairs:
                if j == k:
                    W, b = weight(i, j)
                    h = h + t(i, j) * (acts[i] @ W.T + (0 if b is None else b))
            if config.source_after_skips:
                acts[k] = source(h)
            return h
        return hook

    blocks[0].register_forward_pre_hook(record_embeddings)
    for k, block in enumerate(blocks):
        block.register_forward_hook(after_block(k))
    with torch.no_grad():
        return model_output(base, batch)


PARITY_CONFIGS = {
    "explicit-bias-constant": dict(topology=[[-1, 1], [0, 2], [1, 2]], rank=2, bias=True, t_mode="constant",
                                   t_constant=0.7),
    "span-before-skips-norm": dict(topology="span-1", include_embeddings=True, rank=3, source_after_skips=False,
                                   source_norm=True),
    "to-last-shared-full-learned": dict(topology="to-last", include_embeddings=True, rank=None, share_maps=True,
                                        bias=True, t_mode="learned"),
    "single-sigmoid-shared-t": dict(topology="single", rank=4, t_mode="schedule*learned", learned_t="sigmoid",
                                    share_t=True),
}


@pytest.mark.parametrize("name", list(PARITY_CONFIGS))
def test_parity_with_hand_written_math_gpt2(name):
    config = SoloConnectionConfig(ramp_steps=8, **PARITY_CONFIGS[name])
    model = get_peft_model(make_tiny("gpt2"), config).eval()
    randomize_adapter(model)
    set_homotopy_step(model, 3)  # schedule factor 3/8 where it applies
    batch = make_batch("gpt2")
    with torch.no_grad():
        got = model_output(model, batch)
        assert (got - model_output(make_tiny("gpt2").eval(), batch)).abs().max() > 1e-3  # the skips do something
    expected = reference_logits("gpt2", config, model.get_peft_model_state_dict(), 3, batch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_parity_other_families(arch):
    config = SoloConnectionConfig(topology=[[-1, 2], [0, 1], [0, 2]], rank=2, bias=True, t_mode="learned")
    model = get_peft_model(make_tiny(arch), config).eval()
    randomize_adapter(model)
    batch = make_batch(arch)
    with torch.no_grad():
        got = model_output(model, batch)
    torch.testing.assert_close(got, reference_logits(arch, config, model.get_peft_model_state_dict(), 0, batch),
                               atol=1e-5, rtol=1e-5)


# --- homotopy schedule -------------------------------------------------------------------------------------------
def test_schedule_ramps_with_optimizer_steps_and_is_saved(tmp_path):
    model = get_peft_model(make_tiny("gpt2"), SoloConnectionConfig(topology="span-1", ramp_steps=4))
    assert current_t(model) == {"step": 0.0, "t[0->1]": 0.0, "t[1->2]": 0.0}
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    handle = attach_homotopy_schedule(optim, model)
    batch = make_batch("gpt2")
    seen = []
    for _ in range(3):
        optim.zero_grad()
        model(**batch).loss.backward()
        optim.step()
        seen.append(current_t(model)["t[0->1]"])
    assert seen == [0.25, 0.5, 0.75] and homotopy_step(model) == 3
    handle.remove()
    optim.step()
    assert homotopy_step(model) == 3  # detached: no longer advances
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        expected = model_output(model.eval(), batch)
    loaded = PeftModel.from_pretrained(make_tiny("gpt2"), tmp_path, is_trainable=True)
    assert current_t(loaded) == current_t(model)
    with torch.no_grad():
        torch.testing.assert_close(model_output(loaded.eval(), batch), expected, atol=0, rtol=0)
    assert advance_homotopy(loaded, 5) == 8 and current_t(loaded)["t[1->2]"] == 1.0  # capped at 1
    set_homotopy_step(loaded, 1)
    complete_homotopy(loaded)
    assert homotopy_step(loaded) == 4 and current_t(loaded)["t[0->1]"] == 1.0


def test_schedule_at_step_zero_is_identity_and_the_first_step_already_trains():
    """t = 0 at inference before any step (exactly the base model), but the forward of optimizer step k uses
    t = k / T, so step 1 has a gradient on B (the old t = 0 at step 1 wasted the first step)."""
    base = make_tiny("gpt2")
    batch = make_batch("gpt2")
    with torch.no_grad():
        reference = model_output(base.eval(), batch)
    model = get_peft_model(base, SoloConnectionConfig(topology="span-1", ramp_steps=10))
    with torch.no_grad():
        torch.testing.assert_close(model_output(model.eval(), batch), reference, atol=0, rtol=0)
        torch.testing.assert_close(model_output(model.train(), batch), reference, atol=0, rtol=0)  # B = 0
    model.train()
    model(**batch).loss.backward()
    B = [p for n, p in model.named_parameters() if n.endswith(".B")]
    assert B and all(p.grad.abs().sum() > 0 for p in B)
    state = next(iter(solo_states(model).values()))
    assert float(state.schedule_factor(training=True)) == pytest.approx(0.1)
    assert float(state.schedule_factor()) == 0.0


def test_auto_ramp_follows_the_run_and_reaches_one_at_the_last_step():
    config = SoloConnectionConfig(topology="span-1")
    assert config.ramp_steps == "auto"
    assert config.auto_ramp_steps(40, warmup_steps=4) == 4  # the warm-up (the spec's T_h)
    assert config.auto_ramp_steps(40, warmup_steps=0) == 4  # else ramp_fraction (0.1) of the planned steps
    assert config.auto_ramp_steps(3, warmup_steps=100) == 3  # never longer than the run
    model = get_peft_model(make_tiny("gpt2"), SoloConnectionConfig(topology="span-1"))
    assert resolve_ramp_steps(model, total_steps=5, warmup_steps=0) == {"default": 1}
    assert model.peft_config["default"].ramp_steps == 1  # the saved adapter records the number
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    handle = attach_homotopy_schedule(optim, model)
    for _ in range(5):
        optim.zero_grad()
        model(**make_batch("gpt2")).loss.backward()
        optim.step()
    handle.remove()
    assert not unfinished_ramps(model) and current_t(model)["t[0->1]"] == 1.0


def test_a_ramp_longer_than_the_run_is_warned_about():
    model = get_peft_model(make_tiny("gpt2"), SoloConnectionConfig(topology="span-1", ramp_steps=500))
    with pytest.warns(UserWarning, match=r"ramp_steps=500 is longer than the run's 40 .* t = 0\.080 < 1"):
        resolve_ramp_steps(model, total_steps=40)
    advance_homotopy(model, 40)
    assert unfinished_ramps(model) == {"default": pytest.approx(0.08)}


def test_unresolved_auto_ramp_falls_back_with_a_warning():
    model = get_peft_model(make_tiny("gpt2"), SoloConnectionConfig(topology="span-1"))
    state = next(iter(solo_states(model).values()))
    with pytest.warns(UserWarning, match="ramp_steps='auto' was not resolved"):
        assert state.effective_ramp_steps() == 500


def test_advance_homotopy_touches_only_the_active_adapter():
    model = get_peft_model(make_tiny("gpt2"), SoloConnectionConfig(topology="span-1"))
    model.add_adapter("other", SoloConnectionConfig(topology="single"))
    advance_homotopy(model, 4)
    assert homotopy_step(model, "default") == 4 and homotopy_step(model, "other") == 0
    model.set_adapter("other")
    advance_homotopy(model)
    assert homotopy_step(model, "default") == 4 and homotopy_step(model, "other") == 1
    with pytest.raises(AdapterError, match="no Solo Connection adapter named 'nope'"):
        advance_homotopy(model, adapter_name="nope")


def test_deepcopy_gets_its_own_state_and_step():
    import copy

    model = get_peft_model(make_tiny("gpt2"), SoloConnectionConfig(topology="span-1", ramp_steps=4,
                                                                    init_weights=False))
    set_homotopy_step(model, 2)
    twin = copy.deepcopy(model)
    batch = make_batch("gpt2")
    with torch.no_grad():
        torch.testing.assert_close(model_output(twin.eval(), batch), model_output(model.eval(), batch), atol=0, rtol=0)
    advance_homotopy(twin)
    assert homotopy_step(twin) == 3 and homotopy_step(model) == 2
    assert solo_states(twin)["default"] is not solo_states(model)["default"]
    twin_params = {id(p) for p in twin.parameters()}
    assert all(id(p) in twin_params for p in solo_states(twin)["default"].maps[(0, 1)].parameters())


# --- learned t and its pitfall -----------------------------------------------------------------------------------
def test_learned_t_from_zero_with_zero_up_projection_is_rejected():
    with pytest.raises(ConfigError, match=r"SoloConnectionConfig\.init_up: 'zeros'.*can never train"):
        SoloConnectionConfig(t_mode="learned", init_up="zeros")
    with pytest.raises(ConfigError, match=r"SoloConnectionConfig\.init_up"):
        SoloConnectionConfig(t_mode="schedule*learned", init_up="zeros", theta_init=0.0)
    SoloConnectionConfig(t_mode="learned", init_up="zeros", theta_init=0.5)  # t starts above 0: fine
    SoloConnectionConfig(t_mode="learned", init_up="zeros", learned_t="sigmoid")  # sigmoid(-6) > 0: fine


def test_learned_t_auto_init_is_identity_and_trains():
    base = make_tiny("gpt2")
    batch = make_batch("gpt2")
    with torch.no_grad():
        reference = model_output(base, batch)
    model = get_peft_model(base, SoloConnectionConfig(topology="span-1", t_mode="learned"))
    B = [p for n, p in model.named_parameters() if n.endswith(".B")]
    assert B and all(p.abs().sum() > 0 for p in B)  # auto -> normal init, because t starts at exactly 0
    with torch.no_grad():
        torch.testing.assert_close(model_output(model, batch), reference, atol=0, rtol=0)
    model(**batch).loss.backward()
    thetas = [p for n, p in model.named_parameters() if ".theta." in n]
    assert len(thetas) == 2 and all(p.grad.abs() > 0 for p in thetas)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        optim.zero_grad()
        model(**batch).loss.backward()
        optim.step()
    assert any(v > 0 for k, v in current_t(model).items() if k.startswith("t["))


def test_clamped_t_keeps_a_gradient_below_zero():
    model = get_peft_model(make_tiny("gpt2"), SoloConnectionConfig(topology="single", t_mode="learned"))
    theta = next(p for n, p in model.named_parameters() if ".theta." in n)
    with torch.no_grad():
        theta.fill_(-0.3)
    assert current_t(model)["t[0->2]"] == 0.0
    model(**make_batch("gpt2")).loss.backward()
    assert theta.grad.abs() > 0  # straight-through: a step below 0 does not freeze t


def test_sigmoid_t_starts_small():
    model = get_peft_model(make_tiny("gpt2"), SoloConnectionConfig(topology="single", t_mode="learned",
                                                                    learned_t="sigmoid"))
    assert current_t(model)["t[0->2]"] == pytest.approx(torch.sigmoid(torch.tensor(-6.0)).item())
    B = next(p for n, p in model.named_parameters() if n.endswith(".B"))
    assert not B.any()  # auto -> zeros: t > 0 already, so B = 0 trains and keeps the exact identity


# --- parameter formula -------------------------------------------------------------------------------------------
def _gpt2_on_meta(n_layer: int, n_embd: int, n_head: int) -> GPT2LMHeadModel:
    with torch.device("meta"):  # the count depends only on d and the pairs: no need to allocate 350M weights
        return GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=8,
                                          n_positions=8, bos_token_id=1, eos_token_id=2))


@pytest.mark.parametrize("shape,expected", [((24, 1024, 16), 262_144), ((12, 768, 12), 98_304)])
def test_parameter_count_gpt2_shapes(shape, expected):
    config = SoloConnectionConfig()  # span = span-(L//3), rank 8: 16 pairs on GPT-2 M, 8 on GPT-2 S
    model = get_peft_model(_gpt2_on_meta(*shape), config)
    assert len(config.resolve_pairs(shape[0])) == shape[0] - shape[0] // 3
    assert model.get_nb_trainable_parameters()[0] == expected == config.parameter_count(shape[0], shape[1])


@pytest.mark.parametrize("kwargs", [
    dict(), dict(bias=True), dict(rank=None), dict(share_maps=True, bias=True),
    dict(t_mode="learned"), dict(t_mode="schedule*learned", share_t=True), dict(topology="to-last", rank=5),
    dict(topology=[[-1, 2], [1, 2]], rank=1, t_mode="learned", bias=True),
])
def test_parameter_formula_matches_the_model(kwargs):
    config = SoloConnectionConfig(**kwargs)
    model = get_peft_model(make_tiny("llama"), config)
    assert model.get_nb_trainable_parameters()[0] == config.parameter_count(3, 32)
    assert sum(p.numel() for p in model.adapter_parameters("default").values()) == config.parameter_count(3, 32) + 1


# --- generation, checkpointing, backward reach -------------------------------------------------------------------
@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_generation_equals_uncached(num_beams):
    config = SoloConnectionConfig(topology=[[-1, 2], [0, 1], [1, 2]], rank=4, bias=True, t_mode="constant",
                                  init_weights=False)
    model = get_peft_model(make_tiny("gpt2"), config).eval()
    prompt = make_batch("gpt2", batch=2, length=5)
    kwargs = dict(input_ids=prompt["input_ids"], attention_mask=prompt["attention_mask"], max_new_tokens=8,
                  min_new_tokens=8, do_sample=False, num_beams=num_beams, pad_token_id=0,
                  output_scores=True, return_dict_in_generate=True)
    cached = model.generate(use_cache=True, **kwargs)
    uncached = model.generate(use_cache=False, **kwargs)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.scores, uncached.scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # one cached step carries only the new position at source and destination: same logits as a full forward
    ids = cached.sequences[:1, :7]
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        past = model(input_ids=ids[:, :-1], use_cache=True).past_key_values
        step = model(input_ids=ids[:, -1:], past_key_values=past, use_cache=True).logits[:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)
    assert all(not s.activations for s in solo_states(model).values())  # state reset/freed after each pass


def _attention_call_counter(model: torch.nn.Module) -> list[int]:
    """Calls of each block's attention module (these run again when a checkpointed block is recomputed)."""
    layout = get_layout(model)
    counts = [0] * layout.n_blocks
    for k, block in enumerate(layout.blocks()):
        inner = block.base_layer if isinstance(block, SoloBlock) else block
        inner.get_submodule(layout.layout.attention).register_forward_hook(
            lambda m, a, o, k=k: counts.__setitem__(k, counts[k] + 1))
    return counts


def test_gradient_checkpointing_recomputes_blocks_not_solo_state():
    config = SoloConnectionConfig(topology=[[-1, 3], [1, 3], [3, 5]], rank=4, t_mode="constant", init_weights=False)
    batch = make_batch("llama")
    grads = []
    for mode in ("plain", "checkpointing", "checkpointing-without-input-grads"):
        model = get_peft_model(deep_llama(), config)
        if mode != "plain":
            model.gradient_checkpointing_enable()  # non-reentrant
        if mode == "checkpointing-without-input-grads":
            model.model.disable_input_require_grads()  # non-reentrant checkpointing does not need them
        counts = _attention_call_counter(model.model)
        wrapper_calls = []
        for _, module in model.named_modules():
            if isinstance(module, SoloBlock):
                module.register_forward_hook(lambda m, a, o: wrapper_calls.append(m.block_index))
        model.train()
        model(**batch).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert sorted(wrapper_calls) == [0, 1, 3, 5]  # the Solo bookkeeping ran once, never replayed
        # checkpointed blocks 4, 5 (above the lowest destination, 3) are replayed in backward. Blocks 0-3 need no
        # backward, unless transformers' enable_input_require_grads (which its checkpointing switch turns on for
        # every mode) makes the embeddings require grad: then every block is replayed and back-propagated.
        input_grads = bool(getattr(model.model, "_require_grads_hooks", None))
        low = 2 if input_grads else 1
        assert counts == ([1] * 6 if mode == "plain" else [low] * 4 + [2, 2])
    assert grads[0].keys() == grads[1].keys() == grads[2].keys() and len(grads[0]) == 6
    for other in grads[1:]:
        for name in grads[0]:
            torch.testing.assert_close(other[name], grads[0][name], atol=1e-6, rtol=1e-5)


def test_backward_never_reaches_lower_blocks():
    model = get_peft_model(deep_llama(), SoloConnectionConfig(topology=[[2, 4], [3, 5]], rank=4,
                                                               t_mode="constant", init_weights=False))
    layout = get_layout(model.model)
    inner = [b.base_layer if isinstance(b, SoloBlock) else b for b in layout.blocks()]
    fired, needs_grad = set(), {}
    for k, block in enumerate(inner):
        block.register_full_backward_hook(lambda m, gi, go, k=k: fired.add(k))
        block.register_forward_hook(lambda m, a, o, k=k: needs_grad.__setitem__(k, o.requires_grad))
    model.train()
    model(**make_batch("llama")).loss.backward()
    # nothing trainable below destination 4: blocks 0..4 build no autograd graph and get no backward
    assert needs_grad == {0: False, 1: False, 2: False, 3: False, 4: False, 5: True}
    assert fired == {5}
    assert all(p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)


def test_dropout_only_in_training():
    model = get_peft_model(make_tiny("gpt2"), SoloConnectionConfig(topology="span-1", dropout=0.5,
                                                                    t_mode="constant", init_weights=False))
    batch = make_batch("gpt2")
    with torch.no_grad():
        model.eval()
        assert torch.equal(model_output(model, batch), model_output(model, batch))
        model.train()
        assert not torch.equal(model_output(model, batch), model_output(model, batch))


# --- not mergeable, unload, config round trip --------------------------------------------------------------------
def test_merge_raises_clear_error_and_unload_restores_base():
    batch = make_batch("gpt2")
    with torch.no_grad():
        reference = model_output(make_tiny("gpt2"), batch)
    model = get_peft_model(make_tiny("gpt2"), SoloConnectionConfig(init_weights=False, t_mode="constant"))
    with pytest.raises(AdapterError, match=r"'default' \(SOLO\) cannot be merged into the base weights.*unload"):
        model.merge_and_unload()
    with pytest.raises(AdapterError, match="cannot be merged"):
        model.merge_adapter()
    plain = model.unload()
    assert not any(isinstance(m, SoloBlock) for m in plain.modules())
    with torch.no_grad():
        torch.testing.assert_close(model_output(plain, batch), reference, atol=0, rtol=0)


def test_config_round_trip_and_alias(tmp_path):
    config = SoloConnectionConfig(topology=[(-1, 2), (0, 2)], t_mode="schedule×learned", rank=None)
    assert config.t_mode == "schedule*learned" and config.topology == [[-1, 2], [0, 2]]
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    assert data["peft_type"] == "SOLO" and data["topology"] == [[-1, 2], [0, 2]]
    assert PeftConfig.from_pretrained(tmp_path) == config


# --- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,pattern", [
    (dict(topology=[[2, 1]]), r"topology\[0\]: pair \[2, 1\] must satisfy -1 <= i < j"),
    (dict(topology=[[1, 1]]), r"topology\[0\].*-1 <= i < j"),
    (dict(topology=[[-2, 1]]), r"topology\[0\].*-1 <= i < j"),
    (dict(topology=[[0, 2], [0, 2]]), r"topology\[1\].*listed twice"),
    (dict(topology=[[0, 1, 2]]), r"topology\[0\]: a pair is \[i, j\]"),
    (dict(topology=[]), r"topology: empty list"),
    (dict(topology="ring"), r"topology: expected one of span, span-<k>, single, to-last"),
    (dict(topology="span-0"), r"topology: span-k needs k >= 1"),
    (dict(topology=[[0, 1]], include_embeddings=True), r"include_embeddings: only applies to generated"),
    (dict(rank=0), r"rank: must be in \[1, hidden_size\]"),
    (dict(rank=-4), r"rank: must be in \[1, hidden_size\]"),
    (dict(rank="8"), r"rank: expected int \| None"),
    (dict(dropout=1.0), r"dropout: expected a probability in \[0, 1\)"),
    (dict(ramp_steps=0), r"ramp_steps: must be .auto. or >= 1"),
    (dict(ramp_steps="soon"), r"ramp_steps: expected int \| 'auto', got 'soon'"),
    (dict(ramp_fraction=0.0), r"ramp_fraction: must be in \(0, 1\]"),
    (dict(t_constant=0.0), r"t_constant: must be in \(0, 1\]"),
    (dict(t_mode="cosine"), r"t_mode: expected one of"),
])
def test_bad_config_names_field_and_range(kwargs, pattern):
    with pytest.raises(ConfigError, match=r"SoloConnectionConfig\." + pattern):
        SoloConnectionConfig(**kwargs)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(topology=[[0, 1], [0, 5]]), r"topology\[1\]: pair \[0, 5\] is out of range .* 3 blocks: "
                                      r"need -1 <= i < j <= 2"),
    (dict(topology="span-3"), r"topology: 'span-3' needs k in \[1, 2\]"),
    (dict(rank=33), r"rank: must be in \[1, 32\] for this model"),
])
def test_bad_config_for_the_model_is_rejected_and_rolled_back(kwargs, pattern):
    model = make_tiny("gpt2")
    names_before = [n for n, _ in model.named_modules()]
    with pytest.raises(ConfigError, match=r"SoloConnectionConfig\." + pattern):
        get_peft_model(model, SoloConnectionConfig(**kwargs))
    assert [n for n, _ in model.named_modules()] == names_before
