"""Trackers through accelerate: `run.report_to` resolution, flattening, and a real TensorBoard log of a run."""
from __future__ import annotations

import json

import pytest

from peftlab import ConfigError
from peftlab.cli import main
from peftlab.train.trackers import flatten_scalars, hparams, resolve_trackers


def test_report_to_resolution(monkeypatch):
    assert resolve_trackers("none") == [] and resolve_trackers("") == []
    assert resolve_trackers("tensorboard, tensorboard") == ["tensorboard"]
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_trackers("auto") == ["tensorboard"]  # installed with the test extra; W&B never unconfigured
    with pytest.raises(ConfigError, match=r"unknown tracker 'tensorbord'.*tensorboard"):
        resolve_trackers("tensorbord")
    with pytest.raises(ConfigError, match=r"'swanlab' is not installed.*pip install swanlab"):
        resolve_trackers("swanlab")


def test_flatten_scalars_and_hparams():
    record = {"loss": 2.5, "eval": {"dev_loss": 1.25, "selection": -1.25}, "gate": [[0.5, 1.0], [0.0, 0.5]],
              "method": "lora", "best_step": None, "flag": True}
    assert flatten_scalars(record) == {"loss": 2.5, "eval/dev_loss": 1.25, "eval/selection": -1.25,
                                       "gate/mean": 0.5, "gate/min": 0.0, "gate/max": 1.0, "flag": 1.0}
    flat = hparams({"optim": {"lr": 1e-3, "betas": [0.9, 0.999], "max_steps": None}, "method": "solo"})
    assert flat == {"optim.lr": 1e-3, "optim.betas": "[0.9, 0.999]", "optim.max_steps": "None", "method": "solo"}


@pytest.mark.slow
def test_tensorboard_gets_the_jsonl_values(tmp_path, shared_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    code = main(["train", "glue", "--model", "minilm-l6", "--method", "lora", "--task", "sst2", "--train-limit",
                 "32", "--eval-limit", "16", "--max-steps", "4", "--data-dir", str(shared_data), "--output-dir",
                 str(run), "--no-progress", "optim.batch_size=8", "run.log_every=1", "run.eval_every=2",
                 "run.report_to=tensorboard"])
    assert code == 0
    events = EventAccumulator(str(run / "trackers" / "peftlab"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "lr", "tokens_per_second", "eval/accuracy", "final/accuracy"} <= tags
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in log if "loss" in r]
    assert [e.step for e in events.Scalars("loss")] == [r["step"] for r in train_records] == [1, 2, 3, 4]
    for event, record in zip(events.Scalars("loss"), train_records):
        assert event.value == pytest.approx(record["loss"], rel=1e-6)
    eval_steps = [r["step"] for r in log if "eval" in r]
    assert [e.step for e in events.Scalars("eval/accuracy")] == eval_steps == [0, 2, 4]
    final = json.loads((run / "metrics.json").read_text())
    assert events.Scalars("final/accuracy")[-1].value == pytest.approx(final["accuracy"], rel=1e-6)
