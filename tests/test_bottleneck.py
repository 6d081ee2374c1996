"""Bottleneck adapters: where they attach per family, parity with hand-written math, the spec's parameter counts
(methods.md §1.6), presets and bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny
from transformers import GPT2Config, GPT2LMHeadModel

from peftlab import AdapterError, BottleneckConfig, ConfigError, TargetModuleError, get_peft_model
from peftlab.tuners.base import iter_adapter_layers
from peftlab.tuners.bottleneck import (
    BottleneckLayer,
    InputCaptureLayer,
    NormDeltaLayer,
    bottleneck_parameter_count,
)


def _adapter(model_arch: str, preset: str, **kw):
    config = BottleneckConfig.preset(preset, **{"bottleneck_size": 4, "init_weights": False, **kw})
    return get_peft_model(make_tiny(model_arch), config).eval()


def _bn(adapter, h, act=torch.relu):
    """scaling * W_up f(W_down LN?(h)) + biases, written out."""
    if isinstance(adapter.norm, torch.nn.LayerNorm):
        h = F.layer_norm(h, h.shape[-1:], adapter.norm.weight, adapter.norm.bias, adapter.norm.eps)
    low = act(h @ adapter.down.weight.T + adapter.down.bias)
    return (low @ adapter.up.weight.T + adapter.up.bias) * adapter.scaling


WRAPPED = {  # (layer class, path inside block 0) per family and preset
    "gpt2": {"houlsby": {(BottleneckLayer, "attn.c_proj"), (BottleneckLayer, "mlp.c_proj"),
                         (NormDeltaLayer, "ln_1"), (NormDeltaLayer, "ln_2")},
             "parallel": {(BottleneckLayer, "mlp.c_proj"), (InputCaptureLayer, "mlp.c_fc")}},
    "llama": {"houlsby": {(BottleneckLayer, "self_attn.o_proj"), (BottleneckLayer, "mlp.down_proj"),
                          (NormDeltaLayer, "input_layernorm"), (NormDeltaLayer, "post_attention_layernorm")},
              "parallel": {(BottleneckLayer, "mlp.down_proj"), (InputCaptureLayer, "mlp.up_proj")}},
    "bert": {"houlsby": {(BottleneckLayer, "attention.output.dense"), (BottleneckLayer, "output.dense"),
                         (NormDeltaLayer, "attention.output.LayerNorm"), (NormDeltaLayer, "output.LayerNorm")},
             "parallel": {(BottleneckLayer, "output.dense"), (InputCaptureLayer, "intermediate.dense")}},
}


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("preset", ["houlsby", "parallel"])
def test_attachment_points_per_family(arch, preset):
    model = _adapter(arch, preset)
    prefix = {"gpt2": "transformer.h.0.", "llama": "model.layers.0.", "bert": "bert.encoder.layer.0."}[arch]
    found = {(type(m), p[len(prefix):]) for p, m in iter_adapter_layers(model.model) if p.startswith(prefix)}
    assert found == WRAPPED[arch][preset]


def test_gpt2_houlsby_block_matches_hand_math():
    model = _adapter("gpt2", "houlsby")
    block = model.model.transformer.h[1]
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for norm in (block.ln_1, block.ln_2):  # make the trained-norm deltas visible
            for p in norm.norm_delta["default"].parameters():
                p.normal_(std=0.1)
        ln1 = block.ln_1
        w = ln1.base_layer.weight + ln1.norm_delta["default"].weight
        b = ln1.base_layer.bias + ln1.norm_delta["default"].bias
        torch.testing.assert_close(ln1(x), F.layer_norm(x, (32,), w, b, ln1.base_layer.eps), atol=1e-6, rtol=1e-6)
        # sequential adapter on the attention output projection: h + f(h), h = c_proj(a)
        c_proj = block.attn.c_proj
        a = torch.randn(2, 5, 32)
        h = a @ c_proj.base_layer.weight + c_proj.base_layer.bias
        torch.testing.assert_close(c_proj(a), h + _bn(c_proj.bottleneck["default"], h, F.silu), atol=1e-5, rtol=1e-5)
        # the FFN sub-layer: mlp(x) = c_proj(gelu(c_fc(x))) + adapter
        mlp = block.mlp
        inner = mlp.act(x @ mlp.c_fc.weight + mlp.c_fc.bias)
        h = inner @ mlp.c_proj.base_layer.weight + mlp.c_proj.base_layer.bias
        torch.testing.assert_close(mlp(x), h + _bn(mlp.c_proj.bottleneck["default"], h, F.silu), atol=1e-5,
                                   rtol=1e-5)


def test_llama_parallel_ffn_matches_hand_math():
    model = _adapter("llama", "parallel", adapter_norm=True)
    mlp = model.model.model.layers[2].mlp
    x = torch.randn(2, 4, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        up = x @ mlp.up_proj.base_layer.weight.T
        base = (F.silu(x @ mlp.gate_proj.weight.T) * up) @ mlp.down_proj.base_layer.weight.T
        adapter = mlp.down_proj.bottleneck["default"]
        assert adapter.scaling == 4.0  # He et al.'s fixed scalar
        torch.testing.assert_close(mlp(x), base + _bn(adapter, x), atol=1e-5, rtol=1e-5)  # input: the FFN input


def test_bert_parallel_attn_and_ffn_match_hand_math():
    # BERT's FFN is split in two modules: the adapter reads intermediate's input, adds at output.dense (before
    # dropout + residual + LayerNorm); the attention adapter reads the block input, adds at attention.output.dense
    model = _adapter("bert", "parallel", positions=["attn", "ffn"])
    layer = model.model.bert.encoder.layer[1]
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(2))
    lin = lambda m, t: t @ m.weight.T + m.bias  # noqa: E731
    with torch.no_grad():
        attn_in = x
        sa, so = layer.attention.self, layer.attention.output
        context, _ = sa(attn_in)
        dense = so.dense
        h = lin(dense.base_layer, context) + _bn(dense.bottleneck["default"], attn_in)
        attention_output = so.LayerNorm(h + attn_in)
        got_attention, _ = layer.attention(attn_in)
        torch.testing.assert_close(got_attention, attention_output, atol=1e-5, rtol=1e-5)
        inter = layer.intermediate(attention_output)
        torch.testing.assert_close(inter, layer.intermediate.intermediate_act_fn(
            lin(layer.intermediate.dense.base_layer, attention_output)), atol=0, rtol=0)
        out_dense = layer.output.dense
        h = lin(out_dense.base_layer, inter) + _bn(out_dense.bottleneck["default"], attention_output)
        torch.testing.assert_close(layer.output(inter, attention_output),
                                   layer.output.LayerNorm(h + attention_output), atol=1e-5, rtol=1e-5)


def test_llama_rmsnorm_delta():
    model = _adapter("llama", "houlsby")
    norm = model.model.model.layers[0].input_layernorm
    assert [n for n, _ in norm.norm_delta["default"].named_parameters()] == ["weight"]  # RMSNorm has no bias
    with torch.no_grad():
        norm.norm_delta["default"].weight.normal_(std=0.1)
        x = torch.randn(3, 32)
        rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.base_layer.variance_epsilon)
        torch.testing.assert_close(norm(x), rms * (norm.base_layer.weight + norm.norm_delta["default"].weight),
                                   atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("size, preset, kwargs, expected", [
    # methods.md §1.6 / param_counts.py, d = d_model, L layers, r = 8 unless said otherwise
    ("medium", "houlsby", {}, 934_272),  # AdapterH: L*[2(2dr + r + d) + 4d] (2 trained LNs per layer)
    ("small", "houlsby", {}, 350_400),
    ("medium", "lin", {}, 467_136),  # AdapterL: L*[(2dr + r + d) + 2d]
    ("small", "lin", {}, 175_200),
    ("medium", "parallel", {"bottleneck_size": 512}, 25_202_688),  # parallel: L*(2dr + r + d), r = 512
    ("small", "parallel", {"bottleneck_size": 512}, 9_452_544),
    ("medium", "houlsby", {"train_block_norms": False}, 24 * 2 * (2 * 1024 * 8 + 8 + 1024)),
    ("medium", "pfeiffer", {}, 24 * (2 * 1024 * 8 + 8 + 1024)),
])
def test_spec_parameter_counts(size, preset, kwargs, expected):
    L, d, H = {"small": (12, 768, 12), "medium": (24, 1024, 16)}[size]
    with torch.device("meta"):  # only shapes matter: no memory, no init time
        model = GPT2LMHeadModel(GPT2Config(n_layer=L, n_embd=d, n_head=H))
    config = BottleneckConfig.preset(preset, **{"bottleneck_size": 8, **kwargs})
    assert get_peft_model(model, config).get_nb_trainable_parameters()[0] == expected
    assert bottleneck_parameter_count(config, d, L) == expected


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_formula_matches_tiny_models(arch):
    config = BottleneckConfig.preset("houlsby", adapter_norm=True)  # r = 32 // 16 = 2
    model = get_peft_model(make_tiny(arch), config)
    classifier = sum(p.numel() for n, p in model.named_parameters() if ("classifier" in n or "pooler" in n) and p.requires_grad)
    norm_params = 32 if arch == "llama" else 64  # RMSNorm: weight only
    assert (model.get_nb_trainable_parameters()[0] - classifier
            == bottleneck_parameter_count(config, 32, 3, block_norm_params=norm_params))


def test_reduction_factor_and_presets():
    assert BottleneckConfig(reduction_factor=7.11).bottleneck_dim(768) == 108  # the Kernel-mix code's Pfeiffer
    assert BottleneckConfig().bottleneck_dim(32) == 2
    assert BottleneckConfig(bottleneck_size=5).bottleneck_dim(32) == 5
    parallel = BottleneckConfig.preset("parallel")
    assert (parallel.placement, parallel.positions, parallel.scaling, parallel.bottleneck_size) == \
        ("parallel", ["ffn"], 4.0, 512)
    houlsby = BottleneckConfig.preset("houlsby", activation="relu")
    assert houlsby.train_block_norms and houlsby.positions == ["attn", "ffn"] and houlsby.activation == "relu"


def test_identity_init_and_up_projection_zero():
    model = get_peft_model(make_tiny("gpt2"), BottleneckConfig.preset("houlsby", bottleneck_size=4))
    adapter = model.model.transformer.h[0].mlp.c_proj.bottleneck["default"]
    assert not adapter.up.weight.any() and not adapter.up.bias.any() and adapter.down.weight.abs().sum() > 0


def test_not_mergeable_clear_error():
    model = _adapter("llama", "pfeiffer")
    with pytest.raises(AdapterError, match="BOTTLENECK.*cannot be merged"):
        model.merge_and_unload()


def test_parallel_without_captured_input_is_a_clear_error():
    model = _adapter("gpt2", "parallel")
    c_proj = model.model.transformer.h[0].mlp.c_proj
    with pytest.raises(RuntimeError, match="parallel bottleneck adapter at the ffn output projection"):
        c_proj(torch.randn(2, 128))


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(bottleneck_size=0), r"BottleneckConfig\.bottleneck_size: must be >= 1"),
    (dict(reduction_factor=0.0), r"BottleneckConfig\.reduction_factor: must be a positive"),
    (dict(positions=[]), r"BottleneckConfig\.positions: empty"),
    (dict(positions=["ffn", "ffn"]), r"BottleneckConfig\.positions: duplicates"),
    (dict(positions=["mlp"]), r"BottleneckConfig\.positions\[0\]: expected one of \['attn', 'ffn'\]"),
    (dict(placement="serial"), r"BottleneckConfig\.placement: expected one of"),
    (dict(dropout=-0.1), r"BottleneckConfig\.dropout"),
    (dict(activation="softmax"), r"BottleneckConfig\.activation"),
])
def test_bad_config_values(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        BottleneckConfig(**kwargs)


def test_bad_input_against_a_model_leaves_it_untouched():
    model = make_tiny("bert")
    names = [n for n, _ in model.named_modules()]
    with pytest.raises(ConfigError, match=r"reduction_factor: 64 leaves no bottleneck .*\(0, 32\]"):
        get_peft_model(model, BottleneckConfig(reduction_factor=64))
    with pytest.raises(TargetModuleError, match=r"layers_to_transform: .*\[3\]"):
        get_peft_model(model, BottleneckConfig(layers_to_transform=[0, 3]))
    with pytest.raises(ConfigError, match="unknown preset 'adapterh'"):
        BottleneckConfig.preset("adapterh")
    assert [n for n, _ in model.named_modules()] == names
