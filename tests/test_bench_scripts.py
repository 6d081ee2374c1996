"""The benchmark scripts' inputs are what they claim to measure (their timings live in the scripts, never here)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gpt2_shaped_benchmark_tokenizes_real_text(shared_data):
    """The GPT-2-shaped rows of bench_methods once ran on one-token examples: transformers 5's keyword tokenizer
    constructor built an empty vocabulary. The loader must give GPT-2's real BPE ids and E2E batches of real length."""
    bench = _script("bench_methods")
    tokenizer = bench.load_gpt2_tokenizer(shared_data)
    assert len(tokenizer) == 50257
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    batches = bench.load_batches(tokenizer, n_batches=2, batch_size=8, data_dir=str(shared_data))
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    assert all(t > 8 * 20 for t in tokens), tokens  # E2E MR + reference: ~40-60 tokens an example


def test_gpt2_tokenizer_of_a_wrong_folder_is_an_error(tmp_path):
    bench = _script("bench_methods")
    (tmp_path / "gpt2-tokenizer").mkdir()
    with pytest.raises((OSError, RuntimeError, ValueError)):
        bench.load_gpt2_tokenizer(tmp_path)
