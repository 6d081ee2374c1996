"""Checkpoints that really resume: their own cadence, recovery from a save killed between its renames, no poisoned
checkpoint after a NaN, a log cut back to the checkpoint, and SIGKILL at random points (MiniLM-L6 on SST-2)."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_same_adapter

from peftlab import ConfigError
from peftlab.cli import main
from peftlab.train.checkpoint import checkpoint_step, find_checkpoint
from peftlab.train.recipe import recipe_from_dict


def glue_args(shared_data, out: Path, *extra: str) -> list[str]:
    return ["train", "glue", "--model", "minilm-l6", "--method", "lora", "--task", "sst2", "--train-limit", "64",
            "--eval-limit", "16", "--data-dir", str(shared_data), "--output-dir", str(out), "--no-progress",
            "optim.batch_size=8", "optim.warmup_steps=0", "run.report_to=none", *extra]


# --- checkpoint cadence and recovery --------------------------------------------------------------------------------
def test_checkpoints_follow_their_own_cadence_without_evaluations(tmp_path, shared_data, monkeypatch):
    import peftlab.train.loop as loop

    saved: list[int] = []
    real = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda accelerator, d, m, state, best=None: (
        saved.append(state.step), real(accelerator, d, m, state, best=best)))
    assert main(glue_args(shared_data, tmp_path / "r", "--max-steps", "5", "run.eval_every=100",
                          "run.checkpoint_every=2")) == 0
    assert saved == [2, 4, 5]
    evals = [r["step"] for r in map(json.loads, (tmp_path / "r" / "metrics.jsonl").read_text().splitlines())
             if "eval" in r]
    assert evals == [0, 5]


def _fake_checkpoint(path: Path, step: int, complete: bool = True) -> None:
    path.mkdir(parents=True)
    (path / "params.safetensors").write_bytes(b"x")
    (path / "trainer_state.pt").write_bytes(b"x")
    (path / "state.json").write_text(json.dumps({"step": step}) if complete else '{"step": ')


def test_a_save_killed_between_its_renames_is_recovered(tmp_path):
    ckpt = tmp_path / "checkpoint"
    # killed after checkpoint -> checkpoint.old, before checkpoint.tmp -> checkpoint: the newer tmp wins
    _fake_checkpoint(tmp_path / "checkpoint.old", 4)
    _fake_checkpoint(tmp_path / "checkpoint.tmp", 6)
    assert find_checkpoint(ckpt) == ckpt and checkpoint_step(ckpt) == 6
    assert not (tmp_path / "checkpoint.old").exists() and not (tmp_path / "checkpoint.tmp").exists()
    # killed while writing the tmp folder: the complete checkpoint is kept, the torn one removed
    _fake_checkpoint(tmp_path / "checkpoint.tmp", 8, complete=False)
    assert find_checkpoint(ckpt) == ckpt and checkpoint_step(ckpt) == 6
    assert not (tmp_path / "checkpoint.tmp").exists()
    # only a torn folder: nothing to resume
    other = tmp_path / "other" / "checkpoint"
    _fake_checkpoint(other.with_name("checkpoint.tmp"), 2, complete=False)
    assert find_checkpoint(other) is None


def test_nan_never_replaces_the_last_good_checkpoint(tmp_path, shared_data):
    from peftlab.cli import build_parser
    from peftlab.train.loop import NonFiniteLossError

    parser = build_parser()
    args, extra = parser.parse_known_args(glue_args(shared_data, tmp_path / "nan", "--max-steps", "6",
                                                    "optim.lr=1e30", "run.eval_every=1"))
    args.overrides = list(args.overrides) + extra
    with pytest.raises(NonFiniteLossError) as caught:
        args.func(args)
    ckpt = tmp_path / "nan" / "checkpoint"
    if ckpt.exists():  # whatever was kept holds finite weights, and the message names it
        assert str(ckpt) in str(caught.value)
        tensors = load_file(str(ckpt / "params.safetensors"))
        assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())
        assert all(abs(float(t.abs().max())) < 1e6 for t in tensors.values() if t.is_floating_point())
    else:
        assert "no checkpoint was written" in str(caught.value)


def _as_format_1(ckpt: Path) -> None:
    """Rewrite a checkpoint the way peftlab wrote them before accelerate's save_state: trainer_state.pt (optimizer,
    scheduler, torch and numpy RNG) and the python RNG in state.json."""
    import numpy as np

    rng = torch.load(ckpt / "random_states_0.pkl", weights_only=False)
    name, keys, pos, has_gauss, cached = rng["numpy_random_seed"]
    torch.save({"optimizer": torch.load(ckpt / "optimizer.bin"), "scheduler": torch.load(ckpt / "scheduler.bin"),
                "rng": {"torch": rng["torch_manual_seed"],
                        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}},
               ckpt / "trainer_state.pt")
    version, internal, gauss = rng["random_state"]
    state = json.loads((ckpt / "state.json").read_text())
    state.pop("format")
    (ckpt / "state.json").write_text(json.dumps({**state, "python_rng": [version, list(internal), gauss]}))
    for name in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"):
        (ckpt / name).unlink()


def test_format_1_checkpoints_resume_and_doctored_pickles_are_refused(tmp_path, shared_data, capsys):
    extra = ["optim.lr=1e-3", "optim.schedule=constant", "run.eval_every=2"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(glue_args(shared_data, full, "--max-steps", "4", *extra)) == 0
    assert main(glue_args(shared_data, part, "--max-steps", "2", *extra)) == 0
    ckpt = part / "checkpoint"
    assert {"params.safetensors", "best.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl",
            "custom_checkpoint_0.pkl", "state.json"} == {p.name for p in ckpt.iterdir()}
    assert "model.safetensors" not in {p.name for p in ckpt.iterdir()}  # no base weights
    backup = tmp_path / "format2"
    shutil.copytree(ckpt, backup)

    class Evil:  # unpickling this would run a command
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    torch.save({"step": 2, "x": Evil()}, ckpt / "custom_checkpoint_0.pkl")
    assert main(glue_args(shared_data, part, "--max-steps", "4", "--resume", *extra)) == 1
    assert "unreadable checkpoint" in capsys.readouterr().err and not (tmp_path / "ran").exists()
    shutil.rmtree(ckpt)
    shutil.copytree(backup, ckpt)
    _as_format_1(ckpt)
    assert checkpoint_step(ckpt) == 2
    assert main(glue_args(shared_data, part, "--max-steps", "4", "--resume", *extra)) == 0
    want = load_file(str(full / "checkpoint" / "params.safetensors"))
    got = load_file(str(ckpt / "params.safetensors"))
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-5)
    assert json.loads((ckpt / "state.json").read_text())["format"] == 2  # saved again in the current format


# --- values checked before the model loads --------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("optim.max_steps=-1", r"optim\.max_steps: must be >= 1"), ("optim.max_steps=0", r"optim\.max_steps: must be"),
    ("run.eval_every=-5", r"run\.eval_every: must be >= 1"), ("optim.warmup_steps=-3", r"warmup_steps: must be >= 0"),
    ("run.checkpoint_every=0", r"checkpoint_every: must be >= 1"), ("optim.batch_size=0", r"batch_size: must be"),
    ("optim.grad_accum=0", r"grad_accum: must be"), ("run.log_every=0", r"log_every: must be"),
    ("optim.lr=-1", r"optim\.lr: expected a finite number > 0"), ("optim.lr=.inf", r"optim\.lr: expected a finite"),
    ("data.max_length=0", r"max_length: must be"), ("data.train_limit=0", r"train_limit: must be"),
    ("decode.num_beams=0", r"num_beams: must be >= 1"), ("optim.label_smoothing=1.0", r"label_smoothing"),
    ("optim.betas=[0.9, 1.5]", r"optim\.betas"),
])
def test_bad_recipe_values_fail_before_anything_loads(override, message):
    from peftlab.train.recipe import apply_overrides

    with pytest.raises(ConfigError, match=message):
        recipe_from_dict(apply_overrides({"task": "glue"}, [override]))


def test_a_run_that_fails_during_setup_leaves_no_run_folder(tmp_path, shared_data, capsys):
    out = tmp_path / "failed"
    bad = glue_args(shared_data, out, "--max-steps", "2", "method_args.target_modules=[nonexistent]")
    assert main(bad) == 1
    assert "nonexistent" in capsys.readouterr().err
    assert not out.exists()  # the same command (fixed) can run again without --overwrite
    assert main(glue_args(shared_data, out, "--max-steps", "1")) == 0


# --- SIGKILL at random points ---------------------------------------------------------------------------------------
def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _steps_logged(run: Path) -> int:
    try:
        return max((r["step"] for r in _records(run)), default=0)
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
def test_sigkill_at_random_points_resumes_to_the_uninterrupted_run(tmp_path, shared_data):
    """20 kills: some while the process starts, most during training (some land in a checkpoint write). Every
    --resume continues the same run: same losses, evaluations, best step and final adapter as the uninterrupted
    run, and no checkpoint is ever left unreadable."""
    extra = ["--max-steps", "120", "optim.lr=3e-3", "optim.schedule=constant", "run.eval_every=10",
             "run.checkpoint_every=3", "run.log_every=2"]
    command = [sys.executable, "-m", "peftlab.cli"]
    reference = tmp_path / "reference"
    subprocess.run(command + glue_args(shared_data, reference, *extra), check=True, capture_output=True)
    run = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    while kills < 20:
        target = _steps_logged(run) + rng.randint(1, 8)
        process = subprocess.Popen(command + glue_args(shared_data, run, *extra, "--resume"),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        early = rng.random() < 0.2  # some kills during start-up
        deadline = time.time() + (rng.uniform(0.5, 4.0) if early else 120)
        while process.poll() is None and time.time() < deadline and (early or _steps_logged(run) < target):
            time.sleep(0.02)
        if process.poll() is not None:
            assert process.returncode == 0
            break  # finished before this kill
        time.sleep(rng.uniform(0.0, 0.15))
        process.kill()
        process.wait()
        kills += 1
        ckpt = run / "checkpoint"
        for folder in (ckpt, ckpt.with_name("checkpoint.old")):  # never a corrupt complete-looking checkpoint
            if checkpoint_step(folder) is not None:
                load_file(str(folder / "params.safetensors"))
    assert kills == 20, "the run finished before 20 kills; lengthen it"
    subprocess.run(command + glue_args(shared_data, run, *extra, "--resume"), check=True, capture_output=True)
    want, got = _records(reference), _records(run)
    assert [r["step"] for r in got] == [r["step"] for r in want]  # no record twice, none missing
    for a, b in zip(want, got):
        if "loss" in a:
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
        if "eval" in a:
            assert b["eval"] == pytest.approx(a["eval"], abs=1e-6) and b["best_step"] == a["best_step"]
    metrics_a = json.loads((reference / "metrics.json").read_text())
    metrics_b = json.loads((run / "metrics.json").read_text())
    assert metrics_b["best_step"] == metrics_a["best_step"] and metrics_b["accuracy"] == metrics_a["accuracy"]
    assert_same_adapter(reference / "adapter", run / "adapter")
