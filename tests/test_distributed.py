"""A 2-process gloo DDP run (torchrun, CPU) gives the same adapter as one process with the same global batch, and
one resumed from its checkpoint the same as one that was not interrupted."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def _train(args: list[str], nproc: int, cwd: Path, port: int = 29533) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "peftlab.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
               "-m", "peftlab.cli", *args]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_process_ddp_matches_single_process(tmp_path, shared_data):
    common = ["train", "glue", "--model", "minilm-l6", "--method", "lora", "--task", "sst2", "--train-limit", "64",
              "--eval-limit", "16", "--max-steps", "3", "--data-dir", str(shared_data), "--no-progress",
              "model.disable_dropout=true", "method_args.lora_dropout=0.0", "optim.warmup_steps=0",
              "optim.lr=1e-3", "optim.schedule=constant"]
    _train(common + ["--output-dir", str(tmp_path / "single"), "optim.batch_size=8"], 1, tmp_path)
    _train(common + ["--output-dir", str(tmp_path / "ddp"), "optim.batch_size=4"], 2, tmp_path)  # 2 x 4 = 8
    single = load_file(str(tmp_path / "single" / "adapter" / "adapter_model.safetensors"))
    ddp = load_file(str(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors"))
    assert single.keys() == ddp.keys() and single
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], atol=2e-5, rtol=1e-4)
    import json

    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["world_size"] == 2


def test_two_process_ddp_resumes_to_the_uninterrupted_run(tmp_path, shared_data):
    """Dropout on: each process's RNG must come back from the checkpoint (random_states_<rank>.pkl)."""
    common = ["train", "glue", "--model", "minilm-l6", "--method", "lora", "--task", "sst2", "--train-limit", "64",
              "--eval-limit", "16", "--data-dir", str(shared_data), "--no-progress", "optim.batch_size=4",
              "optim.warmup_steps=0", "optim.lr=1e-3", "optim.schedule=constant", "run.eval_every=2",
              "run.report_to=none"]
    _train(common + ["--max-steps", "4", "--output-dir", str(tmp_path / "full")], 2, tmp_path, port=29534)
    _train(common + ["--max-steps", "2", "--output-dir", str(tmp_path / "part")], 2, tmp_path, port=29534)
    ckpt = tmp_path / "part" / "checkpoint"
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()
    _train(common + ["--max-steps", "4", "--output-dir", str(tmp_path / "part"), "--resume"], 2, tmp_path,
           port=29534)
    full = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    part = load_file(str(tmp_path / "part" / "adapter" / "adapter_model.safetensors"))
    assert full.keys() == part.keys() and full
    for key in full:
        torch.testing.assert_close(part[key], full[key], atol=1e-6, rtol=1e-5)
