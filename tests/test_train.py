"""`peftlab train`: recipes, overrides, the quick contract on the real offline models, resume, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_same_adapter
from safetensors.torch import load_file

from peftlab import ConfigError, PeftModel
from peftlab.cli import main
from peftlab.registry import aliases_of, get_method, method_names


def builtin_methods() -> list[str]:
    """The shipped methods' names (tests may register third-party methods of their own)."""
    return [m for m in method_names(aliases=False) if get_method(m).tuner_cls.__module__.startswith("peftlab.")]


# every method name and alias with a shipped recipe on the offline models (the quick contract runs each)
QUICK = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "src" / "peftlab" / "recipes" / "e2e" /
                                 "smollm2-135m").glob("*.yaml"))
from peftlab.train.recipe import apply_overrides, recipe_from_dict

RECIPES = Path(__file__).resolve().parents[1] / "src" / "peftlab" / "recipes"
E2E_KEYS = {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}


def test_every_shipped_recipe_parses_and_builds_its_config():
    from peftlab.train.methods import build_method_config

    paths = sorted(RECIPES.glob("*/*/*.yaml"))
    assert len(paths) >= 25
    import yaml

    for path in paths:
        recipe = recipe_from_dict(yaml.safe_load(path.read_text()), source=str(path))
        assert path.parent.parent.name == recipe.task
        build_method_config(recipe.method, recipe.method_args, "CAUSAL_LM")
    for task, model in (("e2e", "smollm2-135m"), ("glue", "minilm-l6")):
        shipped = {p.stem for p in (RECIPES / task / model).glob("*.yaml")}
        for method in builtin_methods():  # each method, under its name or one of its aliases
            assert {method, *(a.name for a in aliases_of(method))} & shipped, f"no {task}/{model} recipe for {method}"
        assert shipped <= set(method_names()), "a recipe named after no method or alias"


def test_every_method_has_one_name_a_contract_case_a_recipe_and_a_docs_page():
    from method_cases import METHOD_CASES

    docs = Path(__file__).resolve().parents[1] / "docs" / "methods"
    covered = {get_method(case.make_config(arch, True)).name for case in METHOD_CASES for arch in case.archs[:1]}
    for method in builtin_methods():
        assert method in covered, f"{method}: no case in tests/method_cases.py or tests/cases_*.py"
        assert (docs / f"{method}.md").is_file(), f"{method}: no docs/methods/{method}.md"
        entry = get_method(method)
        assert entry.name == method and get_method(entry.peft_type) is entry  # the file format's id resolves too


def test_recipes_ship_in_the_package_and_a_missing_one_fails_loudly(tmp_path, monkeypatch, capsys):
    import peftlab.train.cli as train_cli

    assert train_cli.RECIPES_PACKAGE_DIR == RECIPES and RECIPES.is_relative_to(Path(train_cli.__file__).parents[1])
    monkeypatch.chdir(tmp_path)  # outside the repository: the package's recipes are still found
    assert main(["train", "e2e", "--method", "solo", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "ramp_steps: auto" in out and "recipe" in out
    assert main(["train", "e2e", "--model", "my-model", "--method", "lora", "--print-config"]) == 1
    assert "no recipe e2e/my-model/lora.yaml" in capsys.readouterr().err
    assert main(["train", "e2e", "--model", "my-model", "--method", "lora", "--recipe", "defaults",
                 "--print-config"]) == 0
    # `recipes cp` into ./recipes: the copy is what `peftlab train` then uses
    assert main(["recipes", "cp", "e2e/smollm2-135m/lora", "recipes"]) == 0
    copied = tmp_path / "recipes" / "e2e" / "smollm2-135m" / "lora.yaml"
    copied.write_text(copied.read_text().replace("r: 4", "r: 6"))
    capsys.readouterr()
    assert main(["train", "e2e", "--method", "lora", "--print-config"]) == 0
    assert "  r: 6" in capsys.readouterr().out
    assert main(["recipes", "cp", "e2e/smollm2-135m/lora", "recipes"]) == 1  # no silent overwrite
    assert main(["recipes", "ls", "--task", "glue"]) == 0
    assert "glue/minilm-l6/solo" in capsys.readouterr().out


def test_overrides_and_their_errors():
    data = apply_overrides({"task": "e2e"}, ["optim.lr=1e-3", "method_args.r=8", "run.bf16=true"])
    recipe = recipe_from_dict(data)
    assert recipe.optim.lr == 1e-3 and recipe.method_args == {"r": 8} and recipe.run.bf16 is True
    with pytest.raises(ConfigError, match=r"optim.*'lr'"):
        recipe_from_dict(apply_overrides({}, ["optim.lrr=1e-3"]))  # suggests the closest key
    with pytest.raises(ConfigError, match=r"optim\.batch_size.*integer"):
        recipe_from_dict(apply_overrides({}, ["optim.batch_size=big"]))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["optim.lr"])


def test_unknown_method_lists_valid_ones(tmp_path, shared_data, capsys):
    code = main(["train", "e2e", "--method", "lorra", "--max-steps", "1", "--output-dir", str(tmp_path / "r"),
                 "--data-dir", str(shared_data)])
    assert code == 1
    assert "lorra" in capsys.readouterr().err


def _check_run(run: Path, keys: set[str]) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    assert keys <= set(metrics)
    assert {"trainable_params", "train_seconds", "final_eval_seconds", "tokens_per_second", "peak_memory_mb",
            "compiled"} <= set(metrics)
    assert metrics["trainable_params"] > 0 and metrics["tokens_per_second"] > 0
    assert metrics["final_eval_seconds"] > 0  # the test set's decoding (E2E) or prediction (GLUE), and scoring
    assert (run / "predictions.txt").is_file() and (run / "config.yaml").is_file()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["versions"]["torch"].startswith("2.13")
    assert "git_revision" in meta
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in record for record in log)
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("method", QUICK)
def test_quick_contract_e2e(method, tmp_path, shared_data):
    run = tmp_path / method
    code = main(["train", "e2e", "--model", "smollm2-135m", "--method", method, "--max-steps", "2",
                 "--eval-limit", "4", "--output-dir", str(run), "--data-dir", str(shared_data), "--no-progress"])
    assert code == 0
    metrics = _check_run(run, E2E_KEYS)
    assert all(isinstance(metrics[k], float) for k in E2E_KEYS)  # METEOR included (Java is set up)
    assert len((run / "predictions.txt").read_text().splitlines()) == 4
    from peftlab.zoo import load_model

    loaded = PeftModel.from_pretrained(load_model("smollm2-135m"), run / "adapter")
    assert loaded.get_nb_trainable_parameters()[0] == 0  # loaded frozen, for inference


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.parametrize("method", QUICK)
def test_quick_contract_glue_every_method(method, tmp_path, shared_data):
    run = tmp_path / method
    code = main(["train", "glue", "--task", "sst2", "--model", "minilm-l6", "--method", method, "--max-steps", "2",
                 "--train-limit", "16", "--eval-limit", "8", "--output-dir", str(run), "--data-dir", str(shared_data),
                 "--no-progress", "optim.batch_size=8"])
    assert code == 0
    metrics = _check_run(run, {"accuracy"})
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert len((run / "predictions.txt").read_text().splitlines()) == 8
    from peftlab.zoo import load_model

    loaded = PeftModel.from_pretrained(load_model("minilm-l6", task="sequence-classification", num_labels=2),
                                       run / "adapter")
    assert loaded.get_nb_trainable_parameters()[0] == 0


def test_quick_contract_glue_and_resume(tmp_path, shared_data):
    common = ["--model", "minilm-l6", "--method", "lora", "--task", "sst2", "--train-limit", "64",
              "--eval-limit", "32", "--data-dir", str(shared_data), "--no-progress", "optim.batch_size=8",
              "optim.warmup_steps=0", "optim.lr=1e-3", "optim.schedule=constant", "run.eval_every=2"]
    full = tmp_path / "full"
    assert main(["train", "glue", *common, "--max-steps", "4", "--output-dir", str(full)]) == 0
    metrics = _check_run(full, {"accuracy"})
    assert 0.0 <= metrics["accuracy"] <= 1.0
    # refuse to mix runs
    with pytest.raises(ConfigError, match="--resume"):
        main_raises(["train", "glue", *common, "--max-steps", "4", "--output-dir", str(full)])
    # interrupted after 2 steps, then resumed to 4: same trained adapter as the uninterrupted run
    part = tmp_path / "part"
    assert main(["train", "glue", *common, "--max-steps", "2", "--output-dir", str(part)]) == 0
    assert main(["train", "glue", *common, "--max-steps", "4", "--output-dir", str(part), "--resume"]) == 0
    final_full = load_file(str(full / "checkpoint" / "params.safetensors"))
    final_part = load_file(str(part / "checkpoint" / "params.safetensors"))
    assert final_full.keys() == final_part.keys()
    for key in final_full:
        torch.testing.assert_close(final_part[key], final_full[key], atol=1e-6, rtol=1e-5)


def test_glue_head_trains_the_pooler_unless_model_train_pooler_is_false(tmp_path, shared_data):
    """MiniLM's pooler (never trained for [CLS]) trains with the classifier by default: 384 x 384 + 384 more trainable
    parameters, saved with the adapter; model.train_pooler=false gives peft's head (the classifier alone)."""
    common = ["--model", "minilm-l6", "--method", "lora", "--task", "sst2", "--train-limit", "16", "--eval-limit", "8",
              "--data-dir", str(shared_data), "--no-progress", "optim.batch_size=8", "--max-steps", "1"]
    counts, heads = {}, {}
    for flag in ("true", "false"):
        run = tmp_path / flag
        assert main(["train", "glue", *common, "--output-dir", str(run), f"model.train_pooler={flag}"]) == 0
        counts[flag] = json.loads((run / "metrics.json").read_text())["trainable_params"]
        heads[flag] = json.loads((run / "adapter" / "adapter_config.json").read_text())["modules_to_save"]
        saved = load_file(str(run / "adapter" / "adapter_model.safetensors"))
        assert any("pooler" in key for key in saved) == (flag == "true")
    assert heads == {"true": ["classifier", "bert.pooler"], "false": ["classifier"]}
    assert counts["true"] - counts["false"] == 384 * 384 + 384


def main_raises(argv):
    """Run the CLI's train path but let the PeftlabError propagate (main() turns it into exit code 1)."""
    from peftlab.cli import build_parser

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.overrides = list(args.overrides) + extra
    return args.func(args)


@pytest.mark.slow
def test_nan_loss_stops_with_clear_error(tmp_path, shared_data):
    from peftlab.train.loop import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match="checkpoint"):
        main_raises(["train", "glue", "--model", "minilm-l6", "--method", "lora", "--task", "sst2",
                     "--train-limit", "32", "--eval-limit", "16", "--max-steps", "4", "--data-dir", str(shared_data),
                     "--output-dir", str(tmp_path / "nan"), "--no-progress", "optim.lr=1e30", "optim.warmup_steps=0",
                     "optim.batch_size=8"])


def test_attention_choice_for_training_and_decoding():
    from peftlab.train.speed import decoding_attn_implementation, resolve_attn_implementation

    expected_train = "sdpa" if torch.cuda.is_available() else "eager"
    assert resolve_attn_implementation("auto") == expected_train
    assert resolve_attn_implementation("sdpa") == "sdpa" and resolve_attn_implementation("eager") == "eager"
    assert decoding_attn_implementation("auto") == (None if expected_train == "sdpa" else "sdpa")
    assert decoding_attn_implementation("eager") is None  # an explicit choice is kept for decoding too


def test_resume_restores_the_best_snapshot_when_nothing_improves_afterwards(tmp_path, shared_data):
    """The best step comes before the checkpoint a run resumes from, and no later step beats it: the resumed run
    must still ship (and evaluate) the best step's weights, exactly like the uninterrupted run."""
    common = ["--model", "minilm-l6", "--method", "lora", "--task", "sst2", "--train-limit", "64",
              "--eval-limit", "32", "--data-dir", str(shared_data), "--no-progress", "optim.batch_size=8",
              "optim.warmup_steps=0", "optim.lr=0.05", "optim.schedule=constant", "run.eval_every=2"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", "glue", *common, "--max-steps", "8", "--output-dir", str(full)]) == 0
    reference = json.loads((full / "metrics.json").read_text())
    assert reference["best_step"] < 6, "precondition: the best step must come before the resumed checkpoint"
    assert main(["train", "glue", *common, "--max-steps", "6", "--output-dir", str(part)]) == 0
    assert (part / "checkpoint" / "best.safetensors").is_file()
    assert main(["train", "glue", *common, "--max-steps", "8", "--output-dir", str(part), "--resume"]) == 0
    resumed = json.loads((part / "metrics.json").read_text())
    assert resumed["best_step"] == reference["best_step"] and resumed["accuracy"] == reference["accuracy"]
    assert_same_adapter(full / "adapter", part / "adapter")
