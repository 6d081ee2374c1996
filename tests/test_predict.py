"""`peftlab predict RUN_DIR`: a finished run evaluated again from its saved adapter, without training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftlab import ConfigError
from peftlab.cli import main
from peftlab.train.predict import default_output_dir, predict, run_recipe


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def e2e_bf16_run(tmp_path_factory, shared_data) -> Path:
    """A finished 3-step bf16 LoRA run on SmolLM2 (bf16 frozen weights; on a CPU without native bf16 its products go
    through fp32 kernels), 6 test MRs decoded."""
    run = tmp_path_factory.mktemp("predict") / "lora"
    assert main(["train", "e2e", "--model", "smollm2-135m", "--method", "lora", "--max-steps", "3", "--eval-limit",
                 "6", "--bf16", "--output-dir", str(run), "--data-dir", str(shared_data), "--no-progress",
                 "optim.lr=3e-3", "optim.warmup_steps=0", "run.eval_every=3"]) == 0
    return run


@pytest.mark.slow
def test_predict_with_the_runs_settings_gives_its_predictions_byte_for_byte(e2e_bf16_run, shared_data):
    """The model is rebuilt as training left it (adapter, bf16 frozen weights, the products' kernels, decoding
    attention): the same outputs and scores, in a new folder, the run untouched."""
    before = _files(e2e_bf16_run)
    metrics = predict(e2e_bf16_run, progress=False)
    out = e2e_bf16_run / "predict"
    assert (out / "predictions.txt").read_bytes() == (e2e_bf16_run / "predictions.txt").read_bytes()
    trained = json.loads((e2e_bf16_run / "metrics.json").read_text())
    for name in ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"):
        assert metrics[name] == trained[name]
        assert metrics["trained"][name] == trained[name]
    assert metrics["n_inputs"] == 6 and metrics["bf16"] is True and metrics["decode"]["num_beams"] == 1
    assert json.loads((out / "metrics.json").read_text())["BLEU"] == trained["BLEU"]
    assert {"config.yaml", "meta.json", "metrics.json", "predictions.txt"} <= set(_files(out))
    assert _files(e2e_bf16_run) == before


@pytest.mark.slow
def test_predict_with_beam_search_and_a_limit_through_the_cli(e2e_bf16_run, shared_data, capsys):
    """Overrides change how the test set is decoded: the folder is named after them and records them."""
    assert main(["predict", str(e2e_bf16_run), "decode.num_beams=2", "--eval-limit", "3", "--no-progress"]) == 0
    out = e2e_bf16_run / "predict-num_beams2-eval_limit3"
    assert "[predict] 3 inputs" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["decode"]["num_beams"] == 2 and metrics["n_inputs"] == 3
    assert metrics["overrides"] == ["decode.num_beams=2", "data.eval_limit=3"]
    assert len((out / "predictions.txt").read_text().splitlines()) == 3
    # the same again refuses to replace the folder, unless asked to
    assert main(["predict", str(e2e_bf16_run), "decode.num_beams=2", "--eval-limit", "3", "--no-progress"]) == 1
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_glue_gives_the_runs_dev_predictions(tmp_path, shared_data):
    """A GLUE run (LoRA with the trained pooler and classifier saved as modules_to_save): the same dev predictions."""
    run = tmp_path / "sst2"
    assert main(["train", "glue", "--task", "sst2", "--model", "minilm-l6", "--method", "lora", "--max-steps", "2",
                 "--train-limit", "16", "--eval-limit", "24", "--output-dir", str(run), "--data-dir", str(shared_data),
                 "--no-progress", "optim.batch_size=8", "optim.lr=5e-3"]) == 0
    metrics = predict(run, output_dir=tmp_path / "again", progress=False)
    assert (tmp_path / "again" / "predictions.txt").read_bytes() == (run / "predictions.txt").read_bytes()
    trained = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"] == trained["accuracy"] and metrics["task"] == trained["task"] == "SST-2"
    assert metrics["n_inputs"] == 24 and metrics["decode"] is None


def test_predict_refuses_what_it_cannot_do(tmp_path):
    """Not a run folder, a run that never finished, a key that changed the training, the run's own folder."""
    with pytest.raises(ConfigError, match="no config.yaml"):
        run_recipe(tmp_path)
    (tmp_path / "config.yaml").write_text("task: e2e\nmethod: lora\n")
    with pytest.raises(ConfigError, match="no adapter/"):
        run_recipe(tmp_path)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="optim.lr changes what was trained.*decode\\.\\*"):
        run_recipe(tmp_path, ["optim.lr=1e-3"])
    recipe = run_recipe(tmp_path, ["decode.num_beams=4", "data.eval_limit=10"])
    assert recipe.decode.num_beams == 4 and recipe.data.eval_limit == 10 and recipe.method == "lora"
    with pytest.raises(ConfigError, match="that is the run itself"):
        predict(tmp_path, output_dir=tmp_path)


def test_default_output_folder_names_the_overrides():
    assert default_output_dir("runs/x") == Path("runs/x/predict")
    assert default_output_dir("runs/x", ["decode.num_beams=10", "decode.length_penalty=0.9",
                                         "data.data_dir=/data"]) == Path("runs/x/predict-num_beams10-length_penalty0.9")
