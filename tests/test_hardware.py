"""The machine in the record and `run.bf16=auto`: fp32 where bf16 is only emulated, bf16 where it is native; the
choice lands in the run folder as a bool, every run's meta.json names the machine, and the suite's results too."""
from __future__ import annotations

import json
import warnings

import pytest
import yaml

import peftlab.hardware as hardware
from peftlab import ConfigError
from peftlab.cli import main
from peftlab.train.recipe import apply_overrides, recipe_from_dict
from peftlab.train.speed import resolve_bf16


def test_describe_names_the_machine_in_json_friendly_fields():
    info = hardware.describe()
    assert set(info) == {"cpu", "cpu_capability", "cpu_bf16_native", "cpus", "torch_threads", "cuda"}
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert isinstance(info["cpu_bf16_native"], bool) and info["cpu_bf16_native"] == hardware.cpu_bf16_native()
    assert info["torch_threads"] >= 1
    json.dumps(info)  # goes into meta.json and the suite's result lines as it is
    line = hardware.summary(info)
    assert info["cpu"] in line and info["cpu_capability"] in line
    assert ("bf16 native" in line) == info["cpu_bf16_native"]


def test_summary_of_a_recorded_machine():
    avx2 = {"cpu": "AMD EPYC", "cpu_capability": "AVX2", "cpu_bf16_native": False, "cpus": 2, "cuda": None}
    assert hardware.summary(avx2) == "AMD EPYC (AVX2, bf16 emulated), 2 CPUs"
    gpu = dict(avx2, cpu_capability="AVX512", cpu_bf16_native=True, cuda="NVIDIA H100")
    assert hardware.summary(gpu) == "AMD EPYC (AVX512, bf16 native), 2 CPUs, CUDA NVIDIA H100"


def test_cpu_bf16_native_reads_the_cpu_flags_too(monkeypatch):
    import torch

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: {"flags": "fpu sse avx2 avx512f avx512_bf16"})
    assert hardware.cpu_bf16_native()
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: {"flags": "fpu sse avx avx2 fma"})
    assert not hardware.cpu_bf16_native()
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: {"Features": "fp asimd bf16 i8mm"})  # Arm
    assert hardware.cpu_bf16_native()


@pytest.mark.parametrize("matmuls", ["auto", "native"])
@pytest.mark.parametrize("native", [False, True])
def test_resolve_bf16(monkeypatch, capsys, native, matmuls):
    """bf16 where it is emulated: said, and a warning only where torch's slow emulated kernels would run it
    (PEFTLAB_BF16_MATMULS=native); by default its products go through fp32 kernels (peftlab.train.bf16_gemm)."""
    monkeypatch.setattr(hardware, "bf16_matmul_native", lambda device=None: native)
    monkeypatch.setenv("PEFTLAB_BF16_MATMULS", matmuls)
    assert resolve_bf16("auto") is native
    assert resolve_bf16(False) is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_bf16(True, "cpu") is True  # what the user asked for, always
    emulated = [w for w in caught if "without native bf16" in str(w.message)]
    assert len(emulated) == (1 if not native and matmuls == "native" else 0)
    said = "through an fp32 kernel" in capsys.readouterr().out
    assert said == (not native and matmuls == "auto")


def test_recipe_takes_auto_and_refuses_other_words():
    recipe = recipe_from_dict(apply_overrides({"task": "glue", "method": "lora"}, ["run.bf16=auto"]))
    assert recipe.run.bf16 == "auto"
    with pytest.raises(ConfigError, match="run.bf16"):
        recipe_from_dict(apply_overrides({"task": "glue", "method": "lora"}, ["run.bf16=maybe"]))


@pytest.mark.parametrize("native", [False, True])
def test_auto_run_records_the_choice_and_the_machine(native, tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.setattr(hardware, "bf16_matmul_native", lambda device=None: native)
    run = tmp_path / "run"
    code = main(["train", "glue", "--task", "sst2", "--model", "minilm-l6", "--method", "bitfit", "--max-steps", "2",
                 "--train-limit", "16", "--eval-limit", "8", "--output-dir", str(run), "--data-dir", str(shared_data),
                 "--no-progress", "optim.batch_size=8", "run.bf16=auto", "run.report_to=none"])
    assert code == 0
    assert f"run.bf16=auto: {'bf16' if native else 'fp32'}, on " in capsys.readouterr().out
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["run"]["bf16"] is native  # a bool, so --resume on the same machine matches it
    meta = json.loads((run / "meta.json").read_text())
    assert meta["hardware"] == hardware.describe()
    # resuming with the same words, even where auto would now choose the other precision, keeps the run's own
    monkeypatch.setattr(hardware, "bf16_matmul_native", lambda device=None: not native)
    assert main(["train", "glue", "--task", "sst2", "--model", "minilm-l6", "--method", "bitfit", "--max-steps", "2",
                 "--train-limit", "16", "--eval-limit", "8", "--output-dir", str(run), "--data-dir",
                 str(shared_data), "--no-progress", "optim.batch_size=8", "run.bf16=auto", "run.report_to=none",
                 "--resume"]) == 0
    assert f"run.bf16=auto: {'bf16' if native else 'fp32'}, as the run being resumed" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["run"]["bf16"] is native
