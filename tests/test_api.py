"""Public API properties: the open registry, counting, summaries, state-dict functions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn as nn
from conftest import make_batch, make_tiny, model_output

import peftlab
from peftlab import (
    ConfigError,
    LoraConfig,
    PeftConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    register_method,
    set_peft_model_state_dict,
)
from peftlab.tuners.base import AdapterLayer, Tuner, replace_module


@dataclass
class OutputScaleConfig(PeftConfig):
    """A third-party method defined outside peftlab: scale the attention output projection by (1 + s)."""

    peft_type: ClassVar[str] = "TEST_OUTPUT_SCALE"
    init_scale: float = 0.0
    """Initial s."""


class OutputScaleLayer(AdapterLayer):
    adapter_containers = ("scale",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.scale = nn.ParameterDict()

    def forward(self, x):
        out = self.base_layer(x)
        if not self.uses_adapter():
            return out
        return out * (1 + self.scale[self.active_adapters[0]])


@register_method
class OutputScaleTuner(Tuner):
    config_cls = OutputScaleConfig

    @classmethod
    def inject(cls, model, config, adapter_name, layout, trainable):
        for i in range(layout.n_blocks):
            target = layout.role_target(i, "o")
            layer = target.module if isinstance(target.module, OutputScaleLayer) else OutputScaleLayer(target.module)
            replace_module(model, target.path, layer)
            layer.scale[adapter_name] = nn.Parameter(torch.full((), config.init_scale), requires_grad=trainable)


def test_third_party_method_registers_and_round_trips(tmp_path):
    assert "TEST_OUTPUT_SCALE" in peftlab.list_methods()
    model = get_peft_model(make_tiny("llama"), OutputScaleConfig(init_scale=0.5)).eval()
    batch = make_batch("llama")
    with torch.no_grad():
        expected = model_output(model, batch)
    assert model.get_nb_trainable_parameters()[0] == 3
    with pytest.raises(peftlab.AdapterError, match="cannot be merged"):
        model.merge_and_unload()
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(make_tiny("llama"), tmp_path).eval()
    assert isinstance(loaded.peft_config["default"], OutputScaleConfig)
    with torch.no_grad():
        torch.testing.assert_close(model_output(loaded, batch), expected, atol=0, rtol=0)


def test_trainable_counts_and_summary():
    model = get_peft_model(make_tiny("gpt2"), LoraConfig(r=4, target_modules=["q", "v"]))
    trainable, total = model.get_nb_trainable_parameters()
    base_total = sum(p.numel() for p in make_tiny("gpt2").parameters())
    assert trainable == 4 * 3 * 32 * 4 and total == base_total + trainable
    assert model.base_parameter_count() == base_total
    summary = model.adapter_summary()
    assert "default*" in summary and "LORA" in summary and f"{trainable:,d}" in summary
    assert f"{100 * trainable / base_total:.4f}" in summary


def test_classifier_head_is_saved_for_sequence_classification(tmp_path):
    model = get_peft_model(make_tiny("bert"), LoraConfig(r=2, target_modules=["q", "v"]))
    assert model.peft_config["default"].modules_to_save == ["classifier", "bert.pooler"]
    keys = set(model.get_peft_model_state_dict())
    assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias",
            "base_model.model.bert.pooler.dense.weight", "base_model.model.bert.pooler.dense.bias"} <= keys
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("pooler" in n for n in trainable) and not any("bert.encoder" in n and "lora" not in n for n in trainable)


def test_the_pooler_trains_with_the_head_and_peft_s_default_is_one_setting_away():
    """The layout's pooler joins the classifier in modules_to_save by default (a frozen, never-trained pooler is a
    fixed random projection); an explicit modules_to_save is taken as given; a body built without a pooler (as
    RoBERTa's classifier builds it) gives the classifier alone."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from peftlab.tuners.base import classifier_head

    bert = make_tiny("bert")
    assert classifier_head(bert) == ["classifier", "bert.pooler"]
    assert classifier_head(bert, include_pooler=False) == ["classifier"]
    explicit = get_peft_model(make_tiny("bert"), LoraConfig(r=2, target_modules=["q", "v"],
                                                             modules_to_save=["classifier"]))
    assert not any("pooler" in n for n, p in explicit.named_parameters() if p.requires_grad)
    roberta = RobertaForSequenceClassification(RobertaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=4,
                                                             intermediate_size=64, vocab_size=64))
    assert roberta.roberta.pooler is None and classifier_head(roberta) == ["classifier"]
    assert classifier_head(make_tiny("gpt2")) is None  # not a sequence classifier


def test_state_dict_functions_accept_external_dicts():
    model = get_peft_model(make_tiny("gpt2"), LoraConfig(r=2, init_weights=False))
    full_state = {k: v.clone() for k, v in model.state_dict().items()}
    full_state = {k.replace(".default", ""): v for k, v in full_state.items()}  # as if gathered externally
    adapter_state = get_peft_model_state_dict(model, full_state)
    assert set(adapter_state) == set(model.get_peft_model_state_dict())
    other = get_peft_model(make_tiny("gpt2"), LoraConfig(r=2))
    set_peft_model_state_dict(other, adapter_state)
    batch = make_batch("gpt2")
    with torch.no_grad():
        torch.testing.assert_close(model_output(other.eval(), batch), model_output(model.eval(), batch))


def test_target_modules_type_is_checked():
    with pytest.raises(ConfigError, match="target_modules"):
        LoraConfig(target_modules=5)


def test_base_model_answers_peft_idioms():
    """``peft_model.base_model.merge_and_unload()`` and friends, as peft users write them."""
    import copy
    import pickle

    import torch
    from conftest import make_batch, make_tiny, model_output

    from peftlab import LoraConfig, get_peft_model

    batch = make_batch("gpt2")
    with torch.no_grad():
        base_out = model_output(make_tiny("gpt2").eval(), batch)
    model = get_peft_model(make_tiny("gpt2"), LoraConfig(r=2, target_modules=["q", "v"], init_weights=False)).eval()
    with torch.no_grad():
        adapted = model_output(model, batch)
    assert (adapted - base_out).abs().max() > 1e-4
    host = model.base_model
    assert host.peft_config is model.peft_config and host.active_adapter == "default"
    host.disable_adapter_layers()
    with torch.no_grad():
        torch.testing.assert_close(model_output(model, batch), base_out)
    host.enable_adapter_layers()
    twin = copy.deepcopy(model)  # the copy's base_model answers for the copy, not for the original
    assert twin.base_model.owner() is twin
    pickled = pickle.loads(pickle.dumps(model))
    assert pickled.base_model.owner() is pickled
    merged = host.merge_and_unload()
    with torch.no_grad():
        torch.testing.assert_close(model_output(merged, batch), adapted, atol=1e-5, rtol=1e-5)
    assert not any("lora" in name for name, _ in merged.named_modules())
    twin.base_model.set_adapter("default")
    twin.base_model.unload()


def test_full_finetuning_adapter_is_the_model_itself():
    """What a full fine-tuning "adapter" is comes from its tuner's hooks (PeftModel never asks the method kind)."""
    from peftlab import AdapterError, FullFinetuneConfig

    base_total = sum(p.numel() for p in make_tiny("bert").parameters())
    model = get_peft_model(make_tiny("bert"), FullFinetuneConfig())
    assert model.peft_config["default"].modules_to_save is None  # the head trains as part of the model
    names = {f"base_model.model.{n}" for n, _ in model.model.named_parameters()}
    assert set(model.adapter_parameters("default")) == names
    assert model.base_parameter_count() == base_total and model.get_nb_trainable_parameters()[1] == base_total
    assert all(p.requires_grad for n, p in model.model.named_parameters() if "embeddings" not in n)
    with pytest.raises(AdapterError, match="cannot be deleted"):
        model.delete_adapter("default")
    for operation in (model.disable_adapter_layers, lambda: model.disable_adapter().__enter__()):
        with pytest.raises(AdapterError, match="not possible with full fine-tuning"):
            operation()
    with pytest.raises(AdapterError, match="cannot share a model"):
        model.add_adapter("lora", LoraConfig(r=2))
    lora = get_peft_model(make_tiny("bert"), LoraConfig(r=2))
    with pytest.raises(AdapterError, match="cannot share a model"):
        lora.add_adapter("full", FullFinetuneConfig())
    assert list(lora.peft_config) == ["default"]


@dataclass
class PinnedScaleConfig(OutputScaleConfig):
    peft_type: ClassVar[str] = "TEST_PINNED_SCALE"


@register_method
class PinnedScaleTuner(OutputScaleTuner):
    """A third-party method that overrides the tuner hooks: it cannot be deleted and saves no classifier head."""

    config_cls = PinnedScaleConfig

    @classmethod
    def check_operation(cls, operation: str) -> None:
        if operation == "delete_adapter":
            raise peftlab.AdapterError("pinned adapters stay")

    @classmethod
    def default_modules_to_save(cls, model: nn.Module) -> list[str] | None:
        return None


def test_tuner_hooks_decide_operations_for_third_party_methods():
    model = get_peft_model(make_tiny("bert"), PinnedScaleConfig())
    assert model.peft_config["default"].modules_to_save is None
    with pytest.raises(peftlab.AdapterError, match="pinned adapters stay"):
        model.delete_adapter("default")
    with model.disable_adapter():  # the other operations keep their defaults
        pass
