"""FSDP2 (gloo, CPU, 2 processes) trains the same adapter as one process (LoRA and Solo), and saving gathers it.

On CPU this uses torch's ``fully_shard`` directly: accelerate 1.15 enables FSDP only on accelerator back-ends (see
tests/fsdp_train.py and docs/integrations.md)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_same_adapter
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("fsdp_train.py")


def _run(method: str, out: Path, nproc: int, port: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(WORKER), method, str(out)] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
        str(WORKER), method, str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert f"world {nproc}" in result.stdout
    sharded = int(result.stdout.split("tensors, ")[1].split(" sharded")[0])
    assert (sharded > 0) == (nproc > 1), result.stdout  # FSDP2 really sharded the 2-process run


@pytest.mark.parametrize("method,port", [("lora", 29541), ("solo", 29542)])
def test_fsdp2_two_processes_match_one(tmp_path, method, port):
    _run(method, tmp_path / "single", 1, port)
    _run(method, tmp_path / "fsdp", 2, port)
    assert_same_adapter(tmp_path / "single", tmp_path / "fsdp", atol=2e-5, rtol=1e-4)
    saved = load_file(str(tmp_path / "fsdp" / "adapter_model.safetensors"))
    picked = torch.load(tmp_path / "fsdp" / "from_full_state_dict.pt")
    assert picked.keys() == saved.keys()
    for key in saved:
        torch.testing.assert_close(picked[key], saved[key])
    if method == "solo":
        steps = [v for k, v in saved.items() if k.endswith(".step")]
        assert steps and all(int(v) == 3 for v in steps)
    sys.path.insert(0, str(WORKER.parent))
    from fsdp_train import make_model

    start = make_model(method).get_peft_model_state_dict()
    assert any(not torch.allclose(saved[k], start[k]) for k in saved if saved[k].is_floating_point()), \
        "the adapter did not train"


def test_solo_scalar_state_is_one_element_and_old_zero_d_files_load(tmp_path):
    """FSDP2 refuses 0-d parameters, so Solo's step and thetas are shape (1,); adapters saved 0-d still load."""
    from conftest import make_tiny
    from safetensors.torch import save_file

    import peftlab
    from peftlab.tuners.solo.homotopy import advance_homotopy, homotopy_step

    config = peftlab.SoloConnectionConfig(rank=2, t_mode="schedule*learned", share_t=True, ramp_steps=4)
    model = peftlab.get_peft_model(make_tiny("gpt2"), config)
    advance_homotopy(model, 3)
    model.save_pretrained(tmp_path / "new")
    new = load_file(str(tmp_path / "new" / "adapter_model.safetensors"))
    scalars = {k: v for k, v in new.items() if k.endswith(".step") or ".theta." in k}
    assert scalars and all(tuple(v.shape) == (1,) for v in scalars.values())
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    (old_dir / "adapter_config.json").write_text((tmp_path / "new" / "adapter_config.json").read_text())
    save_file({k: v.reshape(()) if k in scalars else v for k, v in new.items()},
              str(old_dir / "adapter_model.safetensors"))
    loaded = peftlab.PeftModel.from_pretrained(make_tiny("gpt2"), old_dir)
    assert homotopy_step(loaded) == 3
    batch = torch.randint(3, 90, (2, 7))
    torch.testing.assert_close(loaded(input_ids=batch).logits, model(input_ids=batch).logits)
