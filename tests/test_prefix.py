"""Prefix tuning and gated prefix tuning: reference math, generation, checkpointing, files, peft interop, counts.

The shared contract (tests/test_method_contract.py) runs the directly trained prefixes of tests/cases_prefix.py;
the reparameterized variants, whose folder stores the ejected prefix rather than their parameters, are run here.
"""
from __future__ import annotations

import copy
import json
import math

import peft
import pytest
import torch
from conftest import make_batch, make_tiny, model_output
from safetensors import safe_open
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

from peftlab import (
    AdapterError,
    AdapterLoadError,
    ConfigError,
    GatedPrefixConfig,
    LoraConfig,
    PeftModel,
    PrefixTuningConfig,
    UnsupportedModelError,
    export_to_peft,
    get_peft_model,
)
from peftlab.io import WEIGHTS_NAME
from peftlab.tuners.gated_prefix import GateLogger, gate_values, plot_gate_trends, read_gate_log
from peftlab.tuners.lora import LoraLayer
from peftlab.tuners.prefix import REPARAMETERIZATION_NAME, PrefixLayer, prefix_parameter_counts

# reparameterized variants, which the shared matrix cannot save/reload as parameters
REPARAM = {
    "lili-mlp": dict(cls=PrefixTuningConfig, num_virtual_tokens=3, encoder_hidden_size=16),
    "ra-gate-kv": dict(cls=GatedPrefixConfig, num_virtual_tokens=3, encoder_hidden_size=16, init_weights=False),
    "rc-content-logit": dict(cls=GatedPrefixConfig, num_virtual_tokens=4, encoder_hidden_size=16, residual="R-c",
                             gate="G-c", gate_application="logit_bias", gate_init="half", init_weights=False),
    "rd-balanced-values-offset": dict(cls=GatedPrefixConfig, num_virtual_tokens=2, residual="R-d", gate="G-b",
                                      gate_application="values", prefix_position_offset=True),
    "rb-separate": dict(cls=GatedPrefixConfig, num_virtual_tokens=3, encoder_hidden_size=16, residual="R-b",
                        direct_init="normal", gate_application="separate", gate_init="half"),
}


def make_config(name: str, **overrides):
    kwargs = {**REPARAM[name], **overrides}
    return kwargs.pop("cls")(**kwargs)


def reparam_model(name: str, arch: str, seed: int = 0, **overrides) -> PeftModel:
    base = make_tiny(arch, seed)
    torch.manual_seed(seed + 1)
    return get_peft_model(base, make_config(name, **overrides))


def train(model, batch, steps: int = 2, lr: float = 1e-2) -> None:
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        optim.zero_grad()
        model(**batch).loss.backward()
        optim.step()
    model.eval()


def base_logits(arch: str, batch) -> torch.Tensor:
    with torch.no_grad():
        return model_output(make_tiny(arch).eval(), batch)


# --- the base model, exactly ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_zero_length_and_zero_gated_prefix_equal_base_exactly(arch):
    batch = make_batch(arch)
    expected = base_logits(arch, batch)
    # zero-length: a prefix whose per-layer keys/values have l = 0
    model = get_peft_model(make_tiny(arch), PrefixTuningConfig(num_virtual_tokens=2, prefix_projection=False))
    for layer in model.modules():
        if isinstance(layer, PrefixLayer):
            layer.key["default"] = torch.nn.Parameter(layer.key["default"][:, :0])
            layer.value["default"] = torch.nn.Parameter(layer.value["default"][:, :0])
    with torch.no_grad():
        torch.testing.assert_close(model_output(model.eval(), batch), expected, atol=0, rtol=0)
    # zero-gated, residual reparameterization, separate prefix term (g = tanh(0) = 0)
    model = get_peft_model(make_tiny(arch), GatedPrefixConfig(num_virtual_tokens=3, encoder_hidden_size=8,
                                                              gate_application="separate", gate_init="zero"))
    with torch.no_grad():
        torch.testing.assert_close(model_output(model.eval(), batch), expected, atol=0, rtol=0)
    # zero-gated logit bias: log 0 = -inf, every prefix token has weight 0 and is dropped
    model = get_peft_model(make_tiny(arch), GatedPrefixConfig(num_virtual_tokens=3, encoder_hidden_size=8,
                                                              gate_application="logit_bias", gate_init="half"))
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, PrefixLayer):
                layer.gate["default"].logit.fill_(-math.inf)
        torch.testing.assert_close(model_output(model.eval(), batch), expected, atol=0, rtol=0)


def test_logit_bias_dropping_a_zero_gate_equals_the_shorter_prefix():
    batch = make_batch("gpt2")
    config = dict(residual="none", prefix_projection=False, gate_application="logit_bias", gate_init="half")
    model = get_peft_model(make_tiny("gpt2"), GatedPrefixConfig(num_virtual_tokens=3, **config))
    short = get_peft_model(make_tiny("gpt2"), GatedPrefixConfig(num_virtual_tokens=2, **config))
    with torch.no_grad():
        for layer, other in zip(model.modules(), short.modules()):
            if isinstance(layer, PrefixLayer):
                layer.gate["default"].logit.copy_(torch.tensor([0.3, -math.inf, -0.7]))
                other.gate["default"].logit.copy_(torch.tensor([0.3, -0.7]))
                for name in ("key", "value"):
                    getattr(other, name)["default"].copy_(getattr(layer, name)["default"][:, [0, 2]])
        torch.testing.assert_close(model_output(model.eval(), batch), model_output(short.eval(), batch),
                                   atol=1e-6, rtol=1e-6)


def test_plain_prefix_and_gated_with_everything_off_are_one_code_path():
    batch = make_batch("llama")
    outputs = []
    for config in (PrefixTuningConfig(num_virtual_tokens=3, encoder_hidden_size=8),
                   GatedPrefixConfig(num_virtual_tokens=3, encoder_hidden_size=8, residual="none", gate="none")):
        base = make_tiny("llama")
        torch.manual_seed(3)
        with torch.no_grad():
            outputs.append(model_output(get_peft_model(base, config).eval(), batch))
    torch.testing.assert_close(outputs[0], outputs[1], atol=0, rtol=0)


# --- Li & Liang parity ---------------------------------------------------------------------------------------------
def _lili_prefix_by_hand(encoder, n_layers: int, n_heads: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Li & Liang's get_prompt_p5: MLP(E) viewed as (l, 2L, heads, hd), layer i = (key 2i, value 2i + 1)."""
    E = encoder.embedding
    W1, b1 = encoder.mlp[0].weight, encoder.mlp[0].bias
    W2, b2 = encoder.mlp[2].weight, encoder.mlp[2].bias
    past = torch.tanh(E @ W1.T + b1) @ W2.T + b2  # (l, 2 L d_kv)
    past = past.view(E.shape[0], 2 * n_layers, n_heads, -1).permute(1, 2, 0, 3)  # (2L, heads, l, hd)
    return [(past[2 * i], past[2 * i + 1]) for i in range(n_layers)]


def _gpt2_by_hand(model, input_ids, prefix, position_offset: int) -> torch.Tensor:
    """GPT-2 written out, each layer's attention over [prefix keys | causal real keys] in one softmax."""
    t = model.transformer
    n = input_ids.shape[1]
    h = t.wte(input_ids) + t.wpe(torch.arange(n) + position_offset)
    for block, (pk, pv) in zip(t.h, prefix):
        attn = block.attn
        q, k, v = attn.c_attn(block.ln_1(h)).split(h.shape[-1], dim=2)
        heads = pk.shape[0]
        q, k, v = (x.view(*x.shape[:2], heads, -1).transpose(1, 2) for x in (q, k, v))  # (B, H, N, hd)
        k = torch.cat([pk.expand(k.shape[0], -1, -1, -1), k], dim=2)
        v = torch.cat([pv.expand(v.shape[0], -1, -1, -1), v], dim=2)
        l = pk.shape[1]
        visible = torch.cat([torch.ones(n, l, dtype=torch.bool), torch.ones(n, n, dtype=torch.bool).tril()], 1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        out = scores.masked_fill(~visible, -math.inf).softmax(-1) @ v  # (B, H, N, hd)
        h = h + attn.c_proj(out.transpose(1, 2).reshape(h.shape))
        h = h + block.mlp(block.ln_2(h))
    return model.lm_head(t.ln_f(h))


@pytest.mark.parametrize("offset", [False, True], ids=["positions-0", "positions-offset"])
def test_li_liang_parity_gpt2_hand_written(offset):
    model = get_peft_model(make_tiny("gpt2"), PrefixTuningConfig(num_virtual_tokens=4, encoder_hidden_size=24,
                                                                  prefix_position_offset=offset)).eval()
    encoder = model.model.transformer.h[0].attn.prefix.encoder["default"]
    ids = make_batch("gpt2")["input_ids"]
    with torch.no_grad():
        prefix = _lili_prefix_by_hand(encoder, n_layers=3, n_heads=4)
        expected = _gpt2_by_hand(make_tiny("gpt2"), ids, prefix, position_offset=4 if offset else 0)
        torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("offset", [False, True], ids=["positions-0", "positions-offset"])
def test_li_liang_parity_as_past_key_values(arch, offset):
    """Li & Liang's own mechanism: the prefix as a pre-filled cache (positions offset by l unless told otherwise)."""
    model = get_peft_model(make_tiny(arch), PrefixTuningConfig(num_virtual_tokens=3, encoder_hidden_size=16,
                                                                prefix_position_offset=offset)).eval()
    owner = next(m for m in model.modules() if isinstance(m, PrefixLayer))
    n_kv = owner.n_kv_heads  # Llama: 2 KV heads for 4 query heads
    batch = make_batch(arch, length=6)
    plain = make_tiny(arch).eval()
    with torch.no_grad():
        prefix = _lili_prefix_by_hand(owner.encoder["default"], n_layers=3, n_heads=n_kv)
        cache = DynamicCache(config=plain.config)
        for i, (pk, pv) in enumerate(prefix):
            cache.update(pk.expand(2, -1, -1, -1), pv.expand(2, -1, -1, -1), i)
        mask = torch.cat([torch.ones(2, 3, dtype=torch.long), batch["attention_mask"]], dim=1)
        extra = {} if offset else {"position_ids": torch.arange(6)[None]}
        expected = plain(input_ids=batch["input_ids"], attention_mask=mask, past_key_values=cache, **extra).logits
        got = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# --- generation --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("variant", ["lili-mlp", "rc-content-logit", "rd-balanced-values-offset", "rb-separate"])
def test_cached_and_uncached_generation_identical(arch, variant):
    model = reparam_model(variant, arch).eval()
    prompt = make_batch(arch, batch=2, length=5)
    kwargs = dict(input_ids=prompt["input_ids"], attention_mask=prompt["attention_mask"], max_new_tokens=5,
                  min_new_tokens=5, do_sample=False, output_scores=True, return_dict_in_generate=True, pad_token_id=0)
    cached = model.generate(use_cache=True, **kwargs)
    uncached = model.generate(use_cache=False, **kwargs)  # the GQA case peft 0.21 crashes on
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.scores, uncached.scores):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("offset", [False, True], ids=["positions-0", "positions-offset"])
def test_beam_search_left_padded_batch_matches_single_prompts(arch, offset):
    model = reparam_model("ra-gate-kv", arch, prefix_position_offset=offset).eval()
    gen = torch.Generator().manual_seed(11)
    prompts = [torch.randint(3, 96, (n,), generator=gen) for n in (6, 3)]
    ids = torch.zeros(2, 6, dtype=torch.long)
    mask = torch.zeros(2, 6, dtype=torch.long)
    for row, prompt in enumerate(prompts):  # left padding
        ids[row, 6 - len(prompt):] = prompt
        mask[row, 6 - len(prompt):] = 1
    kwargs = dict(max_new_tokens=4, min_new_tokens=4, num_beams=4, do_sample=False, pad_token_id=0,
                  output_scores=True, return_dict_in_generate=True)
    batched = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    for row, prompt in enumerate(prompts):
        single = model.generate(input_ids=prompt[None], attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                **kwargs)
        assert torch.equal(batched.sequences[row, -4:], single.sequences[0, -4:])
        torch.testing.assert_close(batched.sequences_scores[row], single.sequences_scores[0], atol=1e-4, rtol=1e-4)


# --- training ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("variant", ["ra-gate-kv", "rc-content-logit", "rb-separate"])
def test_only_adapter_params_train_and_disable_is_base(arch, variant):
    model = reparam_model(variant, arch)
    batch = make_batch(arch)
    trainable = {p for p in model.parameters() if p.requires_grad}
    assert trainable == {p for p in model.adapter_parameters("default").values()}
    model.train()
    model(**batch).loss.backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == (param in trainable), name
    train(model, batch)
    with model.disable_adapter(), torch.no_grad():
        torch.testing.assert_close(model_output(model, batch), base_logits(arch, batch), atol=0, rtol=0)
    assert model.model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_gradient_checkpointing_same_gradients(arch, reentrant):
    batch = make_batch(arch)
    grads = []
    for checkpointing in (False, True):
        model = reparam_model("rc-content-logit" if arch == "bert" else "ra-gate-kv", arch)
        if checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": reentrant})
        model.train()
        model(**batch).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 3
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


def _counted_encoder(model):
    """Block 0's encoder of ``model``, with a counter of its full() calls."""
    encoder = next(layer for _, layer in model.base_model.model.named_modules()
                   if isinstance(layer, PrefixLayer))._shared["default"]
    calls = {"full": 0}
    full = encoder.full

    def counted():
        calls["full"] += 1
        return full()

    encoder.full = counted
    return encoder, calls


@pytest.mark.parametrize("variant", ["ra-gate-kv", "lili-mlp", "rd-balanced-values-offset"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("checkpointing", ["none", "non-reentrant"])
def test_prefix_computed_once_per_forward_with_the_same_gradients(variant, arch, checkpointing):
    """A training forward computes the reparameterized prefix once, not once per block (R-a's LayerNorm spans every
    layer; the sliced heads of mlp / R-d would write a whole-weight gradient per block), with the gradients of the
    per-block computation."""
    batch = make_batch(arch)
    grads, counts = [], []
    for per_pass in (True, False):
        model = reparam_model(variant, arch)
        if checkpointing != "none":
            model.gradient_checkpointing_enable({"use_reentrant": False})
        encoder, calls = _counted_encoder(model)
        encoder.per_pass = per_pass  # False: the per-block path (one full prefix per block)
        model.train()
        model(**batch).loss.backward()
        counts.append(calls["full"])
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    n_blocks = model.base_model.model.config.num_hidden_layers
    assert counts[0] == 1
    if variant == "ra-gate-kv":
        assert counts[1] >= n_blocks  # per block (and again per recomputed block with checkpointing)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 3
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def test_residual_prefix_per_pass_accumulates_copies_and_falls_back():
    batch = make_batch("gpt2")
    model = reparam_model("ra-gate-kv", "gpt2")
    model.train()
    model(**batch).loss.backward()
    single = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    # two passes, one backward through both: each pass has its own prefix (and graph)
    (model(**batch).loss + model(**batch).loss).backward()
    for name, grad in single.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, 2 * grad, atol=1e-6, rtol=1e-5)
    loss = model(**batch).loss
    twin = copy.deepcopy(model)  # the pass's prefix (a graph) is not copied
    loss.backward()
    twin.zero_grad()
    twin(**batch).loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in twin.parameters() if p.grad is not None)
    # a block called outside the body's forward (no pass open) computes the prefix itself
    encoder, calls = _counted_encoder(model)
    key, _ = encoder.layer_kv(1)
    assert calls["full"] == 1 and key.requires_grad


def test_bert_encoder_with_padding_and_eager_attention():
    batch = make_batch("bert")
    batch["attention_mask"][1, 6:] = 0
    results = []
    for implementation in ("sdpa", "eager"):
        base = make_tiny("bert")
        base.config._attn_implementation = implementation
        torch.manual_seed(5)
        model = get_peft_model(base, make_config("ra-gate-kv")).eval()
        with torch.no_grad():
            results.append(model_output(model, batch))
            with model.disable_adapter():
                torch.testing.assert_close(model_output(model, batch), model_output(make_tiny("bert").eval(), batch),
                                           atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-5)
    model.train()
    assert torch.isfinite(model(**batch).loss)


@pytest.mark.parametrize("upcast", [False, True], ids=["eager", "eager-upcast"])
def test_gpt2_eager_paths_match_sdpa(upcast):
    batch = make_batch("gpt2")
    results = []
    for implementation in ("sdpa", "eager"):
        base = make_tiny("gpt2")
        base.config._attn_implementation = implementation
        base.config.reorder_and_upcast_attn = upcast
        for block in base.transformer.h:
            block.attn.reorder_and_upcast_attn = upcast
        torch.manual_seed(5)
        model = get_peft_model(base, make_config("rc-content-logit")).eval()
        with torch.no_grad():
            results.append(model_output(model, batch))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-5)


# --- files ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "bert"])
@pytest.mark.parametrize("variant", ["ra-gate-kv", "rc-content-logit"])
def test_saves_ejected_prefix_and_resumes_from_reparameterization(arch, variant, tmp_path):
    model = reparam_model(variant, arch)
    batch = make_batch(arch)
    train(model, batch)
    with torch.no_grad():
        expected = model_output(model, batch)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / WEIGHTS_NAME), "pt") as handle:
        stored = {k: handle.get_tensor(k) for k in handle.keys()}
    assert not any(".prefix.encoder." in k for k in stored)
    assert sum(k.endswith(".prefix.key") for k in stored) == 3
    counts = prefix_parameter_counts(model)
    heads = sum(v.numel() for k, v in stored.items() if "classifier" in k or "pooler" in k)
    assert sum(v.numel() for v in stored.values()) - heads == counts.stored
    with safe_open(str(tmp_path / REPARAMETERIZATION_NAME), "pt") as handle:
        assert set(handle.keys()) == set(model.adapter_parameters("default"))

    fresh = make_tiny(arch, seed=9)  # another seed: nothing may depend on the adapter's init randomness
    fresh.load_state_dict(make_tiny(arch).state_dict())
    inference = PeftModel.from_pretrained(fresh, tmp_path)
    assert set(inference.adapter_parameters("default")) == set(stored)
    resumed = PeftModel.from_pretrained(make_tiny(arch), tmp_path, is_trainable=True)
    with torch.no_grad():
        torch.testing.assert_close(model_output(inference.eval(), batch), expected, atol=0, rtol=0)
        torch.testing.assert_close(model_output(resumed.eval(), batch), expected, atol=0, rtol=0)
    for key, param in model.adapter_parameters("default").items():
        assert torch.equal(resumed.adapter_parameters("default")[key], param)
    # resuming continues the same optimisation: one more step on each gives the same adapter
    train(model, batch, steps=1)
    train(resumed, batch, steps=1)
    for key, param in model.adapter_parameters("default").items():
        torch.testing.assert_close(resumed.adapter_parameters("default")[key], param, atol=1e-6, rtol=1e-6)


def test_trainable_load_needs_a_matching_reparameterization(tmp_path):
    model = reparam_model("ra-gate-kv", "gpt2")
    model.save_pretrained(tmp_path / "a")
    (tmp_path / "a" / REPARAMETERIZATION_NAME).unlink()
    with pytest.raises(AdapterLoadError, match="reparameterization.safetensors.*is_trainable=False"):
        PeftModel.from_pretrained(make_tiny("gpt2"), tmp_path / "a", is_trainable=True)
    model.save_pretrained(tmp_path / "b")
    other = reparam_model("ra-gate-kv", "gpt2", seed=4)
    other.save_pretrained(tmp_path / "c")
    (tmp_path / "c" / REPARAMETERIZATION_NAME).replace(tmp_path / "b" / REPARAMETERIZATION_NAME)
    plain = make_tiny("gpt2")
    names = [n for n, _ in plain.named_modules()]
    with pytest.raises(AdapterLoadError, match="different saves"):
        PeftModel.from_pretrained(plain, tmp_path / "b", is_trainable=True)
    assert [n for n, _ in plain.named_modules()] == names  # nothing half-loaded stays attached


# --- HF peft -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,variant", [("gpt2", "plain-mlp"), ("gpt2", "gated-kv"), ("gpt2", "gated-values"),
                                          ("llama", "plain-mlp")])
def test_hf_peft_loads_export_with_identical_logits(arch, variant, tmp_path):
    """peft gets the prefix per KV head (token_dim = d_kv), so the GQA Llama export loads too."""
    configs = {
        "plain-mlp": PrefixTuningConfig(num_virtual_tokens=4, encoder_hidden_size=16, prefix_position_offset=True),
        "gated-kv": GatedPrefixConfig(num_virtual_tokens=4, encoder_hidden_size=16, prefix_position_offset=True,
                                      init_weights=False),
        "gated-values": GatedPrefixConfig(num_virtual_tokens=4, residual="R-c", encoder_hidden_size=16, gate="G-c",
                                          gate_application="values", prefix_position_offset=True,
                                          init_weights=False),
    }
    model = get_peft_model(make_tiny(arch), configs[variant])
    batch = make_batch(arch)
    train(model, batch, steps=1)
    export_to_peft(model, tmp_path)
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    assert data["peft_type"] == "PREFIX_TUNING" and data["prefix_projection"] is False
    n_kv = 4 if arch == "gpt2" else 2
    assert (data["num_virtual_tokens"], data["token_dim"], data["num_layers"], data["num_attention_heads"]) == \
        (4, n_kv * 8, 3, n_kv)
    hf_model = peft.PeftModel.from_pretrained(make_tiny(arch), str(tmp_path)).eval()
    with torch.no_grad():
        expected = model_output(model, batch)
        got = hf_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_export_refuses_what_peft_cannot_express_and_warns_on_positions(tmp_path):
    model = get_peft_model(make_tiny("gpt2"), GatedPrefixConfig(num_virtual_tokens=2, gate_application="logit_bias"))
    with pytest.raises(AdapterError, match="logit_bias"):
        export_to_peft(model, tmp_path)
    model = get_peft_model(make_tiny("gpt2"), PrefixTuningConfig(num_virtual_tokens=2))
    with pytest.warns(UserWarning, match="prefix_position_offset"):
        export_to_peft(model, tmp_path)


# --- parameter accounting ----------------------------------------------------------------------------------------
def _gpt2_small_shaped() -> torch.nn.Module:
    """GPT-2 small's L and d with a 16-token vocabulary, on the meta device (counting needs no memory)."""
    with torch.device("meta"):
        return GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=16, n_positions=32))


def test_parameter_counts_match_spec_formulas():
    L, d, l, m = 12, 768, 10, 512
    model = get_peft_model(_gpt2_small_shaped(), PrefixTuningConfig(num_virtual_tokens=l, encoder_hidden_size=m))
    counts = prefix_parameter_counts(model)
    assert counts.training_time == l * d + (d * m + m) + (m * 2 * L * d + 2 * L * d) == 9_857_024
    assert counts.stored == 2 * L * d * l == 184_320
    assert model.get_nb_trainable_parameters()[0] == counts.training_time
    assert "stored" in model.adapter_summary()
    D = 2 * L * d
    for residual, expected in [
        ("R-a", l * D + (D * m + m) + (m * D + D) + 2 * D),
        ("R-b", l * d + (d * m + m) + (m * D + D) + l * D),
        ("R-c", L * l * 2 * d + (2 * d * m + m) + (m * 2 * d + 2 * d) + 2 * 2 * d),
        ("R-d", l * d + (d * d + d) + (d * D + D)),
    ]:
        for gate, gate_params in [("G-a", L * l), ("G-c", L * (2 * d + 1))]:
            config = GatedPrefixConfig(num_virtual_tokens=l, encoder_hidden_size=m, residual=residual, gate=gate)
            counts = prefix_parameter_counts(get_peft_model(_gpt2_small_shaped(), config))
            assert counts.training_time == expected + gate_params, (residual, gate)
            assert counts.stored == 2 * L * d * l + gate_params == (184_320 + 120 if gate == "G-a" else counts.stored)


def test_residual_gated_counts_gpt2_medium():
    # spec 4.2: R-a on GPT-2 M with m = 512 costs 50,479,616 (MLP + LN) + l * 49,152; stored 491,520 + 240
    with torch.device("meta"):
        base = GPT2LMHeadModel(GPT2Config(n_layer=24, n_embd=1024, n_head=16, vocab_size=16, n_positions=32))
    counts = prefix_parameter_counts(get_peft_model(base, GatedPrefixConfig(num_virtual_tokens=10)))
    assert counts.reparameterization == 50_479_616 + 10 * 49_152
    assert counts.training_time == 50_479_616 + 10 * 49_152 + 240
    assert counts.stored == 491_520 + 240


def test_parameter_counts_gqa_use_kv_width():
    # tiny Llama: L=3, 2 KV heads x head_dim 8 -> d_kv = 16, d = 32
    model = get_peft_model(make_tiny("llama"), PrefixTuningConfig(num_virtual_tokens=5, encoder_hidden_size=8))
    counts = prefix_parameter_counts(model)
    assert counts.stored == 2 * 3 * 16 * 5
    assert counts.training_time == 5 * 32 + (32 * 8 + 8) + (8 * 2 * 3 * 16 + 2 * 3 * 16)


# --- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [0, -2])
def test_prefix_length_must_be_positive(length):
    with pytest.raises(ConfigError, match=r"PrefixTuningConfig\.num_virtual_tokens.*positive"):
        PrefixTuningConfig(num_virtual_tokens=length)
    with pytest.raises(ConfigError, match=r"GatedPrefixConfig\.num_virtual_tokens"):
        GatedPrefixConfig(num_virtual_tokens=length)


def test_prefix_longer_than_position_budget_is_refused_and_model_untouched():
    model = make_tiny("gpt2")  # n_positions = 64
    names = [n for n, _ in model.named_modules()]
    with pytest.raises(ConfigError, match=r"num_virtual_tokens: 64 .*max_position_embeddings=64.*1\.\.63"):
        get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=64))
    assert [n for n, _ in model.named_modules()] == names


def test_bad_gate_settings_name_field_and_allowed_values():
    with pytest.raises(ConfigError, match=r"GatedPrefixConfig\.gate: expected one of \['none', 'G-a', 'G-b', 'G-c'\]"):
        GatedPrefixConfig(gate="G-z")
    with pytest.raises(ConfigError, match=r"GatedPrefixConfig\.residual: expected one of"):
        GatedPrefixConfig(residual="R-e")
    with pytest.raises(ConfigError, match=r"GatedPrefixConfig\.gate_init: 'zero' is allowed only with"):
        GatedPrefixConfig(gate_init="zero")
    with pytest.raises(ConfigError, match=r"GatedPrefixConfig\.gate_init: G-b"):
        GatedPrefixConfig(gate="G-b", gate_init="half")


def test_unsupported_attention_implementation_is_explained():
    model = make_tiny("llama")
    model.config._attn_implementation_internal = "flex_attention"
    with pytest.raises(UnsupportedModelError, match="attn_implementation='sdpa'"):
        get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=2))
    assert not any(isinstance(m, PrefixLayer) for m in model.modules())


# --- lifecycle -----------------------------------------------------------------------------------------------------
def test_deepcopy_and_unload_leave_the_plain_model():
    batch = make_batch("gpt2")
    original = get_peft_model(make_tiny("gpt2"), make_config("rd-balanced-values-offset")).eval()
    with torch.no_grad():
        adapted = model_output(original, batch)
        model = copy.deepcopy(original)
        torch.testing.assert_close(model_output(model, batch), adapted, atol=0, rtol=0)
        plain = model.unload()
        torch.testing.assert_close(model_output(original, batch), adapted, atol=0, rtol=0)  # the copy's hooks only
        torch.testing.assert_close(model_output(plain, batch), base_logits("gpt2", batch), atol=0, rtol=0)
    assert plain.config._attn_implementation == "sdpa"
    assert not plain.transformer._forward_pre_hooks  # the position-offset hook retired itself
    for block in plain.transformer.h:  # the prefix layers and their hooks are gone
        assert not hasattr(block.attn, "prefix")
        assert not block.attn._forward_pre_hooks and not block.attn._forward_hooks
    assert [n for n, _ in plain.named_modules()] == [n for n, _ in make_tiny("gpt2").named_modules()]


def test_other_methods_reach_attention_projections_through_the_prefix_wrapper():
    batch = make_batch("gpt2")
    model = get_peft_model(make_tiny("gpt2"), PrefixTuningConfig(num_virtual_tokens=3, encoder_hidden_size=8)).eval()
    model.add_adapter("lora", LoraConfig(target_modules=["q", "v"], init_weights=False))  # "attn.c_attn" by layout
    assert isinstance(model.model.transformer.h[0].attn.c_attn, LoraLayer)
    assert all(".base_layer." not in k for k in model.get_peft_model_state_dict("lora"))  # LoRA keys unchanged
    with torch.no_grad():
        prefixed = model_output(model, batch)
        model.set_adapter("lora")
        assert (model_output(model, batch) - prefixed).abs().max() > 1e-4
        model.delete_adapter("lora")
        model.delete_adapter("default")
        torch.testing.assert_close(model_output(model, batch), base_logits("gpt2", batch), atol=0, rtol=0)
    assert not any(isinstance(m, (PrefixLayer, LoraLayer)) for m in model.modules())
    # the other order: the prefix attaches beside LoRA's wrapped projections
    model = get_peft_model(make_tiny("gpt2"), LoraConfig(target_modules=["q", "v"], init_weights=False))
    lora_keys = set(model.get_peft_model_state_dict())
    model.add_adapter("prefix", PrefixTuningConfig(num_virtual_tokens=3, encoder_hidden_size=8))
    assert set(model.get_peft_model_state_dict("default")) == lora_keys


# --- gate logging --------------------------------------------------------------------------------------------------
def test_gate_values_logging_and_plot(tmp_path):
    model = get_peft_model(make_tiny("gpt2"), GatedPrefixConfig(num_virtual_tokens=3, encoder_hidden_size=8))
    torch.testing.assert_close(gate_values(model), torch.ones(3, 3))  # g = 2 sigmoid(0) = 1 at init
    logger = GateLogger(tmp_path / "gates.jsonl", every=2)
    batch = make_batch("gpt2")
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-1)
    for step in range(5):
        logger(model, step)
        optim.zero_grad()
        model(**batch).loss.backward()
        optim.step()
    records = read_gate_log(tmp_path / "gates.jsonl")
    assert [r["step"] for r in records] == [0, 2, 4]
    assert torch.tensor(records[-1]["gates"]).shape == (3, 3)
    assert not torch.allclose(torch.tensor(records[-1]["gates"]), torch.ones(3, 3))
    with pytest.raises(AdapterError, match="no prefix gate"):
        gate_values(get_peft_model(make_tiny("gpt2"), PrefixTuningConfig(num_virtual_tokens=2)))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install matplotlib"):
            plot_gate_trends(tmp_path / "gates.jsonl", tmp_path / "gates.png")
    else:
        assert plot_gate_trends(tmp_path / "gates.jsonl", tmp_path / "gates.png").is_file()
