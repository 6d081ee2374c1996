"""Kernel-mix: parity with the spec's math (methods.md §3.3) written out by hand, head mapping under GQA,
the key hand-off between separate k and v projections, presets' parameter counts, init schemes, bad input."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_batch, make_tiny, model_output
from transformers import GPT2Config, GPT2LMHeadModel, RobertaConfig, RobertaModel
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from peftlab import AdapterError, ConfigError, KernelMixConfig, TargetModuleError, get_layout, get_peft_model
from peftlab.tuners.base import iter_adapter_layers
from peftlab.tuners.kernel_mix import KernelMixLayer, KernelMixTuner, kernel_mix_parameter_count

RANKS = dict(r_q=2, r_v=3, s_q=4, s_v=5, r_o=2, s_o=3)


def _random_adapter(arch: str, **kw):
    config = KernelMixConfig(**{**RANKS, "dropout": 0.0, "init_weights": False, **kw})
    return get_peft_model(make_tiny(arch), config).eval()


def _causal_mask(n: int) -> torch.Tensor:
    """Additive (1, 1, n, n) mask: 0 on and below the diagonal, a large negative number above."""
    return torch.triu(torch.full((n, n), torch.finfo(torch.float32).min), diagonal=1)[None, None]


def _heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    return t.unflatten(-1, (n_heads, -1))  # (..., d) -> (..., H, d_h)


def _q_update(x, p):
    """Per-head loop: q^h += B_q^h A_q^h x + b_q^h, plus [U_q V_q x]_h (returned flat)."""
    per_head = [p.head_B[h] @ (p.head_A[h] @ x.unsqueeze(-1)) for h in range(p.head_A.shape[0])]
    per_head = torch.cat([u.squeeze(-1) + p.head_bias[h] for h, u in enumerate(per_head)], dim=-1)
    return per_head + x @ p.shared_down.T @ p.shared_up.T


def _v_update(x, k, p):
    """v^j += B_v^j A_v^j k^j + b_v^j for each key/value head j (its own key), plus [U_v V_v x]_j."""
    k_heads = _heads(k, p.head_A.shape[0])
    per_head = [(p.head_B[j] @ (p.head_A[j] @ k_heads[..., j, :].unsqueeze(-1))).squeeze(-1) + p.head_bias[j]
                for j in range(p.head_A.shape[0])]
    return torch.cat(per_head, dim=-1) + x @ p.shared_down.T @ p.shared_up.T


def _o_update(a, p, n_heads):
    """B_O concat_h(A_o^h a^h) + b_O + U_o V_o a."""
    a_heads = _heads(a, n_heads)
    low = torch.cat([a_heads[..., h, :] @ p.head_A[h].T for h in range(n_heads)], dim=-1)  # (..., H*r_o)
    return low @ p.head_B.T + p.head_bias + a @ p.shared_down.T @ p.shared_up.T


def _softmax_attention(q, k, v, scale):
    """q: (B, H, N, dh), k/v: (B, H, N, dh) -> (B, N, H*dh), causal."""
    n = q.shape[2]
    scores = q @ k.transpose(-1, -2) * scale + _causal_mask(n)
    return (scores.softmax(-1) @ v).transpose(1, 2).flatten(-2)


def test_gpt2_fused_attention_matches_hand_math():
    model = _random_adapter("gpt2")
    attn = model.model.transformer.h[1].attn
    c_attn, c_proj = attn.c_attn, attn.c_proj
    assert isinstance(c_attn, KernelMixLayer) and set(c_attn.roles) == {"q", "k", "v"}
    d, H, dh = 32, 4, 8
    x = torch.randn(2, 6, d, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        q, k, v = (x @ c_attn.base_layer.weight + c_attn.base_layer.bias).split(d, dim=-1)  # Conv1D: x W + b
        q = q + _q_update(x, c_attn.kmix_q["default"])
        v = v + _v_update(x, k, c_attn.kmix_v["default"])  # keys are not adapted
        torch.testing.assert_close(c_attn(x), torch.cat([q, k, v], -1), atol=1e-5, rtol=1e-5)
        a = _softmax_attention(*(_heads(t, H).transpose(1, 2) for t in (q, k, v)), scale=dh ** -0.5)
        out = a @ c_proj.base_layer.weight + c_proj.base_layer.bias + _o_update(a, c_proj.kmix_o["default"], H)
        got, _ = attn(x, attention_mask=_causal_mask(6))
        torch.testing.assert_close(got, out, atol=1e-5, rtol=1e-5)


def test_llama_gqa_attention_matches_hand_math():
    model = _random_adapter("llama")
    attn = model.model.model.layers[2].self_attn
    H, Hkv, dh = 4, 2, 8
    v_part = attn.v_proj.kmix_v["default"]
    assert v_part.head_A.shape == (Hkv, 3, dh) and attn.q_proj.kmix_q["default"].head_A.shape == (H, 2, 32)
    assert attn.o_proj.kmix_o["default"].head_A.shape == (H, 2, dh)
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    lin = lambda layer, t: t @ layer.base_layer.weight.T  # noqa: E731  (Llama projections have no bias)
    with torch.no_grad():
        k = lin(attn.k_proj, x)
        q = lin(attn.q_proj, x) + _q_update(x, attn.q_proj.kmix_q["default"])
        v = lin(attn.v_proj, x) + _v_update(x, k, v_part)  # v head j reads key head j (pre-rotary key)
        cos, sin = model.model.model.rotary_emb(x, torch.arange(5)[None])
        qh, kh = apply_rotary_pos_emb(_heads(q, H).transpose(1, 2), _heads(k, Hkv).transpose(1, 2), cos, sin)
        group = H // Hkv  # query head h attends with key/value head h // group
        kh = kh.repeat_interleave(group, dim=1)
        vh = _heads(v, Hkv).transpose(1, 2).repeat_interleave(group, dim=1)
        a = _softmax_attention(qh, kh, vh, scale=dh ** -0.5)
        out = lin(attn.o_proj, a) + _o_update(a, attn.o_proj.kmix_o["default"], H)
        got, _ = attn(hidden_states=x, position_embeddings=(cos, sin), attention_mask=_causal_mask(5))
        torch.testing.assert_close(got, out, atol=1e-5, rtol=1e-5)
    assert attn.k_proj.key_stash.recomputed == 0  # the v wrapper used the stashed key


def test_bert_projections_match_hand_math():
    model = _random_adapter("bert")
    layer = model.model.bert.encoder.layer[0]
    sa, dense = layer.attention.self, layer.attention.output.dense
    x = torch.randn(3, 4, 32, generator=torch.Generator().manual_seed(2))
    lin = lambda m, t: t @ m.base_layer.weight.T + m.base_layer.bias  # noqa: E731
    with torch.no_grad():
        k = lin(sa.key, x)
        assert torch.equal(sa.key(x), k)  # the key itself is not adapted
        torch.testing.assert_close(sa.value(x), lin(sa.value, x) + _v_update(x, k, sa.value.kmix_v["default"]),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sa.query(x), lin(sa.query, x) + _q_update(x, sa.query.kmix_q["default"]),
                                   atol=1e-5, rtol=1e-5)
        a = torch.randn(3, 4, 32)
        torch.testing.assert_close(dense(a), lin(dense, a) + _o_update(a, dense.kmix_o["default"], 4),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_key_handoff_stash_and_fallback(arch):
    model = _random_adapter(arch)
    batch = make_batch(arch)
    stashes = [m.key_stash for _, m in iter_adapter_layers(model.model) if getattr(m, "key_stash", None)]
    assert len(stashes) == 3
    model.gradient_checkpointing_enable()
    model.train()
    model(**batch).loss.backward()  # forward + checkpointed recompute: k always runs right before v
    with torch.no_grad():
        model.eval()
        model_output(model, batch)
    assert all(s.recomputed == 0 for s in stashes)
    # v called on its own (other order / no k call): the key is recomputed by the frozen base k projection
    if arch == "llama":
        attn = model.model.model.layers[0].self_attn
    else:
        attn = model.model.bert.encoder.layer[0].attention.self
    k_layer, v_layer = (attn.k_proj, attn.v_proj) if arch == "llama" else (attn.key, attn.value)
    x = torch.randn(2, 3, 32)
    with torch.no_grad():
        k_layer(x)
        via_stash = v_layer(x)
        alone = v_layer(x)
    assert k_layer.key_stash.recomputed == 1
    torch.testing.assert_close(alone, via_stash, atol=0, rtol=0)


def test_presets_parameter_counts():
    # only the attention shapes matter: build the models on the meta device (no memory, no init time)
    with torch.device("meta"):
        gpt2_small = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12))
        roberta_base = RobertaModel(RobertaConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                                  intermediate_size=3072))
    nlg = get_peft_model(gpt2_small, KernelMixConfig.preset("kernel-mix-nlg"))
    assert nlg.get_nb_trainable_parameters()[0] == 2_009_088 == 12 * 167_424
    nlu = get_peft_model(roberta_base, KernelMixConfig.preset("kernel-mix-nlu"))
    assert nlu.get_nb_trainable_parameters()[0] == 608_256 == 12 * 50_688
    medium = get_layout(gpt2_small).shape.__class__(1024, 16, 16, 64)
    assert kernel_mix_parameter_count(KernelMixConfig.preset("kernel-mix-nlg"), medium, 24) == 6_438_912
    assert kernel_mix_parameter_count(KernelMixConfig.preset("kernel-mix-nlu"), medium, 24) == 1_916_928
    assert KernelMixConfig.preset("kernel-mix-nlu", r_q=2).r_q == 2


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("extra", [{}, {"bandwidth": "kernel", "bandwidth_per_head": True},
                                   {"bandwidth": "bitfit", "r_o": 0, "s_q": 0}], ids=["plain", "kernel", "bitfit"])
def test_parameter_formula_matches_model(arch, extra):
    config = KernelMixConfig(**{**RANKS, **extra})
    model = get_peft_model(make_tiny(arch), config)
    classifier = sum(p.numel() for n, p in model.named_parameters() if ("classifier" in n or "pooler" in n) and p.requires_grad)
    expected = kernel_mix_parameter_count(config, model._layout.shape, 3)
    assert model.get_nb_trainable_parameters()[0] - classifier == expected


def test_bandwidth_variants_scale_or_shift_q_and_k():
    for kind, per_head in (("kernel", True), ("kernel", False), ("bitfit", True)):
        model = get_peft_model(make_tiny("llama"), KernelMixConfig(r_q=0, r_v=0, s_q=0, s_v=0, r_o=0, s_o=0,
                                                                   bandwidth=kind, bandwidth_per_head=per_head,
                                                                   init_weights=False))
        attn = model.model.model.layers[0].self_attn
        b_q, b_k = attn.q_proj.kmix_q["default"].bandwidth, attn.k_proj.kmix_k["default"].bandwidth
        assert b_q.shape == ((4 if per_head else 1), 8) and b_k.shape == ((2 if per_head else 1), 8)
        x = torch.randn(2, 32)
        with torch.no_grad():
            for layer, b, n in ((attn.q_proj, b_q, 4), (attn.k_proj, b_k, 2)):
                base = _heads(layer.base_layer(x), n)
                expected = (base * b if kind == "kernel" else base + b).flatten(-2)
                torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=1e-6)
    neutral = get_peft_model(make_tiny("gpt2"), KernelMixConfig(bandwidth="kernel", init_scheme="he"))
    assert torch.equal(neutral.model.transformer.h[0].attn.c_attn.kmix_k["default"].bandwidth, torch.ones(1, 8))


def test_init_schemes():
    houlsby = get_peft_model(make_tiny("gpt2"), KernelMixConfig.preset("kernel-mix-nlg"))
    params = torch.cat([p.flatten() for p in houlsby.adapter_parameters("default").values()])
    assert params.abs().max() < 0.02 and 0.008 < params.std() < 0.012  # folded N(0, 0.01^2), B not zero
    batch = make_batch("gpt2")
    with torch.no_grad():
        base = model_output(make_tiny("gpt2").eval(), batch)
        assert (model_output(houlsby.eval(), batch) - base).abs().max() > 0  # perturbed at step 0, as in the code
        he = get_peft_model(make_tiny("gpt2"), KernelMixConfig.preset("kernel-mix-nlg", init_scheme="he")).eval()
        torch.testing.assert_close(model_output(he, batch), base, atol=0, rtol=0)
    part = he.model.transformer.h[0].attn.c_attn.kmix_q["default"]
    assert part.head_A.abs().sum() > 0 and not part.head_B.any() and not part.head_bias.any()


def test_not_mergeable_clear_error():
    model = _random_adapter("gpt2")
    with pytest.raises(AdapterError, match="KERNEL_MIX.*cannot be merged"):
        model.merge_adapter()


@pytest.mark.parametrize("field, value, pattern", [
    ("r_q", -1, r"KernelMixConfig\.r_q: .*>= 0"),
    ("s_v", -2, r"KernelMixConfig\.s_v: .*>= 0"),
    ("r_o", -1, r"KernelMixConfig\.r_o"),
    ("dropout", 1.0, r"KernelMixConfig\.dropout: .*\[0, 1\)"),
    ("bandwidth", "scale", r"KernelMixConfig\.bandwidth: expected one of"),
])
def test_bad_config_values(field, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        KernelMixConfig(**{field: value})


def test_all_zero_ranks_and_unknown_preset():
    with pytest.raises(ConfigError, match="every rank"):
        KernelMixConfig(r_q=0, r_v=0, s_q=0, s_v=0)
    with pytest.raises(ConfigError, match="kernel-mix-nlg"):
        KernelMixConfig.preset("kernel-mix-lite")
    with pytest.raises(ConfigError, match="unknown fields"):
        KernelMixConfig.preset("kernel-mix-nlg", rank=4)


@pytest.mark.parametrize("arch, kwargs, pattern", [
    ("gpt2", dict(r_v=9), r"KernelMixConfig\.r_v: 9 .*d_h = 8.*0\.\.8"),
    ("llama", dict(r_q=12), r"KernelMixConfig\.r_q: 12 .*0\.\.8"),
    ("bert", dict(r_v=2, r_o=None, s_o=None, s_v=40), r"KernelMixConfig\.s_v: 40 .*0\.\.32"),
    ("llama", dict(s_v=17), r"KernelMixConfig\.s_v: 17 .*n_kv_heads\*d_h.*0\.\.16"),  # GQA: v is 16 wide
    ("gpt2", dict(r_v=9, r_o=2), r"KernelMixConfig\.r_v"),
])
def test_ranks_beyond_head_geometry(arch, kwargs, pattern):
    model = make_tiny(arch)
    names = [n for n, _ in model.named_modules()]
    with pytest.raises(ConfigError, match=pattern):
        get_peft_model(model, KernelMixConfig(**{**RANKS, **kwargs}))
    assert [n for n, _ in model.named_modules()] == names


def test_layout_without_head_geometry_or_roles():
    model = make_tiny("gpt2")
    layout = get_layout(model)
    layout.shape = None
    with pytest.raises(TargetModuleError, match="per-head geometry"):
        KernelMixTuner.inject(model, KernelMixConfig(), "default", layout, True)
    layout = get_layout(model)
    projections = {k: v for k, v in layout.layout.projections.items() if k != "o"}
    layout.layout = dataclasses.replace(layout.layout, projections=projections)
    with pytest.raises(TargetModuleError, match=r"q, k, v and o.*\['o'\]"):
        KernelMixTuner.inject(model, KernelMixConfig(), "default", layout, True)
    with pytest.raises(TargetModuleError, match=r"layers_to_transform: .*\[7\]"):
        get_peft_model(model, KernelMixConfig(layers_to_transform=[0, 7]))
    assert not list(iter_adapter_layers(model))


def test_layers_to_transform_and_no_key_wrapper_without_v():
    model = get_peft_model(make_tiny("llama"), KernelMixConfig(r_v=0, s_v=0, r_o=2, layers_to_transform=[1]))
    wrapped = {p for p, _ in iter_adapter_layers(model.model)}
    assert wrapped == {"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.o_proj"}
    # r_o / s_o default to r_v / s_v (the code reuses lora_V_rank): with both 0 the O terms are gone too
    model = get_peft_model(make_tiny("llama"), KernelMixConfig(r_v=0, s_v=0))
    assert all(p.endswith("q_proj") for p, _ in iter_adapter_layers(model.model))
