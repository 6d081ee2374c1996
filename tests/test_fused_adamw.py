"""`optim.fused`: AdamW's fused kernel by default, the per-tensor loop on request, the same update to fp32 rounding;
a run folder or a suite result line written before the field existed reads as the per-tensor loop it ran, and such
a folder resumes with the implementation the current recipe asks for."""
from __future__ import annotations

import pytest
import torch
import yaml

from peftlab.bench.recipes import normalised_recipe, same_recipe
from peftlab.train.loop import FinetuneRecipe
from peftlab.train.recipe import apply_overrides, recipe_from_dict, with_legacy_values
from peftlab.train.speed import fused_adamw_supported


def glue_recipe(tmp_path, shared_data, *overrides: str):
    data = apply_overrides({"task": "glue", "method": "lora", "model": {"name": "minilm-l6"}}, [
        "optim.max_steps=2", "optim.batch_size=8", "data.train_limit=16", "data.eval_limit=8", "run.eval_every=2",
        "run.report_to=none", f"run.output_dir={tmp_path / 'run'}", f"data.data_dir={shared_data}", *overrides])
    return recipe_from_dict(data)


def groups(run: FinetuneRecipe) -> list[dict]:
    return run.optimizer.optimizer.param_groups if hasattr(run.optimizer, "optimizer") else run.optimizer.param_groups


def test_fused_and_loop_give_the_same_update_to_rounding():
    torch.manual_seed(0)
    params = [torch.randn(37, 5), torch.randn(1000)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(4)]
    results = {}
    for fused in (False, True):
        tensors = [torch.nn.Parameter(p.clone()) for p in params]
        assert fused_adamw_supported(tensors)
        optimizer = torch.optim.AdamW(tensors, lr=1e-2, weight_decay=0.01, fused=fused)
        for step in grads:
            for t, g in zip(tensors, step):
                t.grad = g.clone()
            optimizer.step()
        results[fused] = tensors
    for loop, fused in zip(results[False], results[True]):
        torch.testing.assert_close(fused, loop, rtol=1e-6, atol=1e-7)
    assert not fused_adamw_supported([torch.zeros(2, dtype=torch.long)])


@pytest.mark.parametrize("choice, expected", [(None, True), ("false", False)])
def test_the_run_builds_the_optimizer_it_was_asked_for(tmp_path, shared_data, choice, expected):
    extra = [f"optim.fused={choice}"] if choice else []
    run = FinetuneRecipe(glue_recipe(tmp_path, shared_data, *extra), progress=False)
    run.setup()
    try:
        assert all(bool(g["fused"]) is expected for g in groups(run))
    finally:
        run.cleanup()


def test_a_folder_from_before_the_field_resumes_with_the_current_choice(tmp_path, shared_data):
    from peftlab.train.loop import train

    train(glue_recipe(tmp_path, shared_data, "optim.fused=false"), progress=False)
    config_path = tmp_path / "run" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    del config["optim"]["fused"]  # as an older peftlab wrote it
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run = FinetuneRecipe(glue_recipe(tmp_path, shared_data, "optim.max_steps=3"), resume=True, progress=False)
    run.setup()
    try:
        assert run.state.step == 2
        assert all(g["fused"] is True for g in groups(run))  # the loaded groups said otherwise
    finally:
        run.cleanup()
    assert yaml.safe_load(config_path.read_text())["optim"]["fused"] is True  # the folder says what runs now


@pytest.mark.parametrize("saved_fused, wanted", [(False, True), (True, False)])
def test_a_loaded_optimizer_takes_the_wanted_implementation_and_its_step_placement(saved_fused, wanted):
    from peftlab.train.speed import set_adamw_implementation

    param = torch.nn.Parameter(torch.randn(4, 3))
    saved = torch.optim.AdamW([param], lr=1e-2, fused=saved_fused)
    param.grad = torch.randn_like(param)
    saved.step()
    optimizer = torch.optim.AdamW([param], lr=1e-2, fused=wanted)
    optimizer.load_state_dict(saved.state_dict())
    assert optimizer.param_groups[0]["fused"] is saved_fused  # torch keeps the saved groups' choice
    set_adamw_implementation(optimizer, wanted)
    group, step = optimizer.param_groups[0], optimizer.state[param]["step"]
    assert group["fused"] is wanted and (group["foreach"] is None or not wanted)
    assert step.dtype == torch.float32 and step.device == (param.device if wanted else torch.device("cpu"))
    before = param.detach().clone()
    param.grad = torch.randn_like(param)
    optimizer.step()  # steps with the implementation asked for
    assert not torch.equal(param, before) and float(optimizer.state[param]["step"]) == 2.0


def test_a_result_line_without_the_field_is_the_per_tensor_loop():
    current = normalised_recipe({"task": "glue", "method": "lora", "optim": {"fused": False}})
    old_line = normalised_recipe({"task": "glue", "method": "lora"})
    del old_line["optim"]["fused"]
    assert with_legacy_values(old_line)["optim"]["fused"] is False
    assert same_recipe(old_line, current)  # what the suite pins: still current
    assert not same_recipe(old_line, normalised_recipe({"task": "glue", "method": "lora"}))  # fused now: another recipe


def test_only_the_named_fields_of_an_older_folder_follow_the_current_recipe(tmp_path):
    from peftlab import ConfigError
    from peftlab.train.rundir import prepare_run_dir

    def recipe(*overrides: str):
        return recipe_from_dict(apply_overrides({"task": "e2e", "method": "lora"},
                                                [f"run.output_dir={tmp_path}", *overrides]))

    old = recipe("optim.fused=false").to_dict()
    del old["optim"]["fused"], old["data"]["pack_per_row"]  # two fields an older peftlab did not write
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    with pytest.raises(ConfigError, match="different recipe"):  # it ran unpacked: packing now is another recipe
        prepare_run_dir(tmp_path, recipe("data.pack_per_row=2"), resume=True, overwrite=False)
    prepare_run_dir(tmp_path, recipe(), resume=True, overwrite=False)  # fused (now the default) is taken
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["optim"]["fused"] is True
