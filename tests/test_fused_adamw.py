"""`optim.fused`: AdamW's fused kernel by default, the per-tensor loop on request, the same update to fp32 rounding;
a run folder or a suite result line written before the field existed reads as the per-tensor loop it ran, and such
a folder resumes with the implementation the current recipe asks for."""
from __future__ import annotations

import pytest
import torch
import yaml

from peftlab.bench.runner import _normalised, same_recipe
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


def test_a_result_line_without_the_field_is_the_per_tensor_loop():
    current = _normalised({"task": "glue", "method": "lora", "optim": {"fused": False}})
    old_line = _normalised({"task": "glue", "method": "lora"})
    del old_line["optim"]["fused"]
    assert with_legacy_values(old_line)["optim"]["fused"] is False
    assert same_recipe(old_line, current)  # what the suite pins: still current
    assert not same_recipe(old_line, _normalised({"task": "glue", "method": "lora"}))  # fused now: another recipe
