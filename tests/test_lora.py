"""LoRA-specific properties: parity with hand-written reference math, and interop with HF peft."""
from __future__ import annotations

import json
import math

import peft
import pytest
import torch
from conftest import ARCHS, make_batch, make_tiny, model_output

from peftlab import LoraConfig, PeftModel, export_to_peft, get_peft_model, import_from_peft
from peftlab.tuners.lora import LoraLayer


def _reference_gpt2_qv_forward(x, weight, bias, A_q, B_q, A_v, B_v, scaling):
    """loralib MergedLinear(enable_lora=[True, False, True]) on a Conv1D, written out by hand.

    weight: (in, 3d) (GPT-2 Conv1D layout); A_*: (r, in); B_*: (d, r).
    """
    d = weight.shape[1] // 3
    out = x @ weight + bias
    q_update = (x @ A_q.T) @ B_q.T * scaling
    v_update = (x @ A_v.T) @ B_v.T * scaling
    return out + torch.cat([q_update, torch.zeros(*x.shape[:-1], d), v_update], dim=-1)


def test_lora_fused_qv_matches_reference_math():
    model = make_tiny("gpt2")
    peft_model = get_peft_model(model, LoraConfig(r=3, lora_alpha=12, target_modules=["q", "v"]))
    layer = peft_model.model.transformer.h[1].attn.c_attn
    assert isinstance(layer, LoraLayer)
    r, d = 3, 32
    gen = torch.Generator().manual_seed(5)
    A_q, A_v = torch.randn(r, d, generator=gen), torch.randn(r, d, generator=gen)
    B_q, B_v = torch.randn(d, r, generator=gen), torch.randn(d, r, generator=gen)
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(torch.cat([A_q, A_v]))
        layer.lora_B["default"].weight.copy_(torch.cat([B_q, B_v]))
    x = torch.randn(2, 5, d, generator=gen)
    expected = _reference_gpt2_qv_forward(x, layer.base_layer.weight, layer.base_layer.bias, A_q, B_q, A_v, B_v,
                                          scaling=12 / 3)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    # the k slice is untouched
    torch.testing.assert_close(layer(x)[..., d:2 * d], layer.base_layer(x)[..., d:2 * d], atol=0, rtol=0)


def test_lora_linear_matches_reference_math_with_rslora():
    model = make_tiny("llama")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["v"], use_rslora=True,
                                                  init_weights=False))
    layer = peft_model.model.model.layers[0].self_attn.v_proj
    x = torch.randn(3, 32)
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = x @ layer.base_layer.weight.T + (x @ A.T) @ B.T * (8 / math.sqrt(4))
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_parameter_count_matches_formula():
    # 4 * L * d * r for q,v LoRA (LoRA paper); tiny GPT-2: L=3, d=32, r=4
    model = get_peft_model(make_tiny("gpt2"), LoraConfig(r=4, target_modules=["q", "v"]))
    assert model.get_nb_trainable_parameters()[0] == 4 * 3 * 32 * 4
    # GQA: v_proj outputs n_kv_heads * head_dim = 16, so q costs r*(32+32) and v costs r*(32+16) per layer
    model = get_peft_model(make_tiny("llama"), LoraConfig(r=4, target_modules=["q", "v"]))
    assert model.get_nb_trainable_parameters()[0] == 3 * 4 * ((32 + 32) + (32 + 16))


def _hf_peft_logits(arch, folder, batch, base_state):
    base = make_tiny(arch, seed=5)
    base.load_state_dict(base_state)
    hf_model = peft.PeftModel.from_pretrained(base, str(folder)).eval()
    with torch.no_grad():
        return model_output(hf_model, batch)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("targets", [["q", "v"], ["q", "k", "v", "o", "ffn_up"]], ids=["qv", "qkvo-up"])
@pytest.mark.parametrize("rslora", [False, True], ids=["lora", "rslora"])
def test_hf_peft_loads_export_with_identical_logits(arch, targets, rslora, tmp_path):
    base = make_tiny(arch)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    ours = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=targets, use_rslora=rslora,
                                           init_weights=False)).eval()
    batch = make_batch(arch)
    with torch.no_grad():
        expected = model_output(ours, batch)
    export_to_peft(ours, tmp_path)
    got = _hf_peft_logits(arch, tmp_path, batch, base_state)
    assert (got - expected).abs().max().item() < 1e-5


def test_gpt2_qv_export_is_rank_2r_with_doubled_alpha(tmp_path):
    ours = get_peft_model(make_tiny("gpt2"), LoraConfig(r=4, lora_alpha=32, target_modules=["q", "v"]))
    export_to_peft(ours, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 64 and config["fan_in_fan_out"] is True
    assert not config["rank_pattern"] and not config["alpha_pattern"]


@pytest.mark.parametrize("arch", ARCHS)
def test_import_hf_peft_folder(arch, tmp_path):
    base = make_tiny(arch)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    targets = {"gpt2": ["c_attn", "c_fc"], "llama": ["q_proj", "v_proj", "down_proj"], "bert": ["query", "value"]}
    task = "SEQ_CLS" if arch == "bert" else "CAUSAL_LM"
    hf_config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets[arch], init_lora_weights=False,
                                task_type=task)
    hf_model = peft.get_peft_model(base, hf_config).eval()
    batch = make_batch(arch)
    with torch.no_grad():
        expected = model_output(hf_model, batch)
    hf_model.save_pretrained(str(tmp_path))
    fresh = make_tiny(arch, seed=3)
    fresh.load_state_dict(base_state)
    ours = import_from_peft(fresh, tmp_path).eval()
    with torch.no_grad():
        assert (model_output(ours, batch) - expected).abs().max().item() < 1e-5


def test_export_roundtrip_through_import(tmp_path):
    base = make_tiny("gpt2")
    state = {k: v.clone() for k, v in base.state_dict().items()}
    ours = get_peft_model(base, LoraConfig(r=2, target_modules=["q", "v", "o"], init_weights=False)).eval()
    batch = make_batch("gpt2")
    with torch.no_grad():
        expected = model_output(ours, batch)
    export_to_peft(ours, tmp_path)
    fresh = make_tiny("gpt2", seed=1)
    fresh.load_state_dict(state)
    back = import_from_peft(fresh, tmp_path)
    assert isinstance(back, PeftModel)
    with torch.no_grad():
        torch.testing.assert_close(model_output(back.eval(), batch), expected, atol=1e-5, rtol=0)


def test_bf16_base_keeps_fp32_adapter_and_output_dtype():
    base = make_tiny("llama").to(torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q", "v"], init_weights=False))
    layer = model.model.model.layers[0].self_attn.q_proj
    assert layer.lora_A["default"].weight.dtype == torch.float32
    assert layer.base_layer.weight.dtype == torch.bfloat16
    logits = model_output(model, make_batch("llama"))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
