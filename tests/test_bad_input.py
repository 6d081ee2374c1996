"""Bad input raises a peftlab error naming the field/file/module, and nothing half-loaded stays attached."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import make_batch, make_tiny, model_output

import peftlab
from peftlab import (
    AdapterError,
    AdapterLoadError,
    BitFitConfig,
    ConfigError,
    LoraConfig,
    PeftConfig,
    PeftlabError,
    PeftModel,
    TargetModuleError,
    UnsupportedModelError,
    get_peft_model,
)
from peftlab.tuners.base import iter_adapter_layers


def test_wrong_target_module_names_are_named():
    with pytest.raises(TargetModuleError, match=r"q_projj.*c_attn"):
        get_peft_model(make_tiny("gpt2"), LoraConfig(target_modules=["q_projj"]))


def test_failed_injection_leaves_model_untouched():
    model = make_tiny("llama")
    names_before = [n for n, _ in model.named_modules()]
    with pytest.raises(TargetModuleError):  # "q" resolves first, then "nope" fails: "q" must be rolled back
        get_peft_model(model, LoraConfig(target_modules=["q", "nope"]))
    assert [n for n, _ in model.named_modules()] == names_before
    assert not list(iter_adapter_layers(model))


@pytest.mark.parametrize("rank", [0, -3])
def test_rank_must_be_positive(rank):
    with pytest.raises(ConfigError, match=r"LoraConfig\.r"):
        LoraConfig(r=rank)


def test_config_wrong_type_names_field():
    with pytest.raises(ConfigError, match=r"LoraConfig\.lora_alpha.*number"):
        LoraConfig(lora_alpha="big")
    with pytest.raises(ConfigError, match=r"LoraConfig\.r.*integer"):
        LoraConfig(r=2.5)


def test_config_file_with_wrong_type_names_file_and_field(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": "four"}))
    with pytest.raises(ConfigError, match=r"adapter_config\.json.*LoraConfig\.r"):
        PeftConfig.from_pretrained(tmp_path)


def test_unknown_config_keys_dropped_with_warning(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "from_the_future": 1}))
    with pytest.warns(UserWarning, match="from_the_future"):
        config = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(config, LoraConfig) and config.r == 4


def test_config_json_is_stamped_with_version(tmp_path):
    model = get_peft_model(make_tiny("gpt2"), LoraConfig(r=2))
    model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    assert data["peftlab_version"] == peftlab.__version__ and data["peft_type"] == "LORA"


def test_unknown_method_lists_known_ones(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "MAGIC"}))
    with pytest.raises(ConfigError, match=r"MAGIC.*LORA"):
        PeftConfig.from_pretrained(tmp_path)


def test_adapter_from_other_base_is_rejected_and_detached(tmp_path):
    small = get_peft_model(make_tiny("gpt2"), LoraConfig(r=2, target_modules=["q", "v"]))
    small.save_pretrained(tmp_path)
    other = make_tiny("llama")  # same roles, other shapes
    names_before = [n for n, _ in other.named_modules()]
    with pytest.raises(AdapterLoadError, match=r"adapter_model\.safetensors"):
        PeftModel.from_pretrained(other, tmp_path)
    assert [n for n, _ in other.named_modules()] == names_before


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    get_peft_model(make_tiny("gpt2"), LoraConfig(r=2)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["r"] = 3
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    model = make_tiny("gpt2")
    with pytest.raises(AdapterLoadError, match=r"lora_.*shape"):
        PeftModel.from_pretrained(model, tmp_path)
    assert not list(iter_adapter_layers(model))


def test_load_adapter_failure_keeps_existing_adapter(tmp_path):
    get_peft_model(make_tiny("gpt2"), LoraConfig(r=2)).save_pretrained(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"not safetensors at all")
    model = get_peft_model(make_tiny("gpt2"), LoraConfig(r=2, init_weights=False)).eval()
    batch = make_batch("gpt2")
    with torch.no_grad():
        before = model_output(model, batch)
    with pytest.raises(AdapterLoadError, match=r"safetensors"):
        model.load_adapter(tmp_path, "second")
    assert list(model.peft_config) == ["default"]
    with torch.no_grad():
        torch.testing.assert_close(model_output(model, batch), before, atol=0, rtol=0)


def test_truncated_weight_file(tmp_path):
    get_peft_model(make_tiny("gpt2"), LoraConfig(r=2)).save_pretrained(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(AdapterLoadError, match=r"adapter_model\.safetensors"):
        PeftModel.from_pretrained(make_tiny("gpt2"), tmp_path)


def test_pickle_files_are_never_loaded(tmp_path):
    get_peft_model(make_tiny("gpt2"), LoraConfig(r=2)).save_pretrained(tmp_path)
    (tmp_path / "adapter_model.safetensors").rename(tmp_path / "adapter_model.bin")
    with pytest.raises(AdapterLoadError, match=r"pickle"):
        PeftModel.from_pretrained(make_tiny("gpt2"), tmp_path)


def test_unsupported_architecture_is_named():
    from transformers import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(T5Config(num_layers=1, d_model=16, d_ff=32, num_heads=2, d_kv=8,
                                                vocab_size=40))
    with pytest.raises(UnsupportedModelError, match=r"T5ForConditionalGeneration.*register_layout"):
        get_peft_model(model, LoraConfig())


def test_bitfit_on_bias_free_model_says_how():
    with pytest.raises(TargetModuleError, match="add_missing_bias"):
        get_peft_model(make_tiny("llama"), BitFitConfig())


def test_adapter_operations_on_unknown_names():
    model = get_peft_model(make_tiny("gpt2"), LoraConfig(r=2))
    with pytest.raises(AdapterError, match="nope"):
        model.set_adapter("nope")
    with pytest.raises(AdapterError, match="already exists"):
        model.add_adapter("default", LoraConfig(r=2))


def test_all_errors_share_one_hierarchy():
    for error in (AdapterError, AdapterLoadError, ConfigError, TargetModuleError, UnsupportedModelError):
        assert issubclass(error, PeftlabError)


# --- silent acceptance that is now refused (issue 11) ----------------------------------------------------------------
def test_lora_alpha_must_be_finite_and_rank_at_most_the_smallest_side():
    from conftest import make_tiny

    from peftlab import LoraConfig, get_peft_model

    with pytest.raises(ConfigError, match=r"LoraConfig.lora_alpha: expected a finite number, got inf"):
        LoraConfig(lora_alpha=float("inf"))
    with pytest.raises(ConfigError, match=r"alpha_pattern\['q'\]: expected a finite"):
        LoraConfig(alpha_pattern={"q": float("nan")})
    base = make_tiny("llama")
    flags = [p.requires_grad for p in base.parameters()]
    with pytest.raises(ConfigError, match=r"LoraConfig.r: 1000 is larger than .* Allowed: 1\.\.\d+"):
        get_peft_model(base, LoraConfig(r=1000, target_modules=["q"]))
    assert [p.requires_grad for p in base.parameters()] == flags  # a failed wrap leaves the base as it was
    assert not any(n for n, _ in base.named_modules() if "lora" in n)


def test_a_failed_get_peft_model_restores_requires_grad():
    from conftest import make_tiny

    from peftlab import LoraConfig, TargetModuleError, get_peft_model

    base = make_tiny("gpt2")
    before = sum(p.requires_grad for p in base.parameters())
    assert before > 0
    with pytest.raises(TargetModuleError):
        get_peft_model(base, LoraConfig(target_modules=["nonexistent"]))
    assert sum(p.requires_grad for p in base.parameters()) == before


@pytest.mark.parametrize("corrupt, message", [
    (lambda t: torch.full_like(t, float("nan")), r"holds \d+ NaN/inf value"),
    (lambda t: t.to(torch.int64), r"is torch.int64, the model expects torch.float32"),
])
def test_adapter_files_with_nan_or_integer_tensors_are_refused(tmp_path, corrupt, message):
    from conftest import make_tiny
    from safetensors.torch import load_file, save_file

    from peftlab import AdapterLoadError, LoraConfig, PeftModel, get_peft_model

    model = get_peft_model(make_tiny("gpt2"), LoraConfig(r=2, target_modules=["q", "v"], init_weights=False))
    model.save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: corrupt(v).contiguous() for k, v in tensors.items()}, str(weights))
    base = make_tiny("gpt2")
    trainable_before = sum(p.requires_grad for p in base.parameters())
    with pytest.raises(AdapterLoadError, match=message):
        PeftModel.from_pretrained(base, tmp_path)
    assert not any("lora" in n for n, _ in base.named_modules())
    assert sum(p.requires_grad for p in base.parameters()) == trainable_before > 0  # requires_grad restored too


def test_fp16_adapter_loads_with_a_note_and_a_newer_version_warns(tmp_path):
    import json

    from conftest import make_tiny
    from safetensors.torch import load_file, save_file

    from peftlab import LoraConfig, PeftModel, get_peft_model

    model = get_peft_model(make_tiny("gpt2"), LoraConfig(r=2, target_modules=["q", "v"], init_weights=False))
    model.save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    save_file({k: v.half().contiguous() for k, v in load_file(str(weights)).items()}, str(weights))
    with pytest.warns(UserWarning, match=r"lower precision(.|\n)*torch.float16"):
        PeftModel.from_pretrained(make_tiny("gpt2"), tmp_path)
    config_path = tmp_path / "adapter_config.json"
    data = json.loads(config_path.read_text())
    data["peftlab_version"] = "99.0"
    config_path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"written by peftlab 99\.0, newer than this peftlab"):
        PeftModel.from_pretrained(make_tiny("gpt2"), tmp_path)


def test_output_places_that_cannot_be_written_fail_early(tmp_path, shared_data, capsys):
    from peftlab.cli import main

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code = main(["train", "glue", "--model", "minilm-l6", "--method", "lora", "--task", "sst2", "--max-steps", "1",
                 "--output-dir", str(a_file), "--data-dir", str(shared_data), "--no-progress"])
    assert code == 1 and "is a file, not a folder" in capsys.readouterr().err
    code = main(["evaluate", "e2e", "--refs", str(shared_data / "e2e" / "testset_w_refs.csv"),
                 "--pred", str(shared_data / "e2e" / "metric_check" / "hyp_template.txt"),
                 "--output", str(tmp_path / "missing" / "scores.json")])
    assert code == 1 and "does not exist" in capsys.readouterr().err  # refused before minutes of scoring


def test_import_from_peft_refuses_a_config_that_is_not_an_object(tmp_path):
    from conftest import make_tiny

    from peftlab import AdapterLoadError
    from peftlab.interop import import_from_peft

    (tmp_path / "adapter_config.json").write_text("[1, 2]")
    with pytest.raises(AdapterLoadError, match="expected a JSON object"):
        import_from_peft(make_tiny("gpt2"), tmp_path)


def test_misspelled_method_args_get_the_closest_field():
    from peftlab.train.methods import build_method_config

    with pytest.raises(ConfigError, match=r"method_args\.ramp_step: .*did you mean 'ramp_steps'\?"):
        build_method_config("solo", {"ramp_step": 4}, "CAUSAL_LM")


def test_e2e_run_without_a_usable_ptb_tokenizer_fails_before_the_run_folder(tmp_path, monkeypatch):
    """The final E2E scoring needs the official tokenizer (Java) or the Python opt-in: checked before anything runs."""
    from peftlab.train.loop import train as run_training
    from peftlab.train.recipe import apply_overrides, recipe_from_dict

    monkeypatch.setenv("PEFTLAB_PTB_TOKENIZER", "jva")
    out = tmp_path / "run"
    recipe = recipe_from_dict(apply_overrides({}, ["task=e2e", "method=lora", f"run.output_dir={out}"]))
    with pytest.raises(peftlab.ConfigError, match="must be 'java' or 'python'"):
        run_training(recipe)
    assert not out.exists()
