"""The benchmark scripts' inputs are what they claim to measure (their timings live in the scripts, never here)."""
from __future__ import annotations

import importlib.util
import json
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


def test_decoding_check_reads_named_settings_and_skips_runs_not_finished_here(tmp_path, capsys):
    """benchmarks/quality/decoding_check.py: NAME=KEY=VALUE,... settings; a run folder without its adapter (trained
    elsewhere, or cut off) is skipped and nothing is recorded."""
    check = _script("quality/decoding_check")
    assert check.parse_setting("beam4=decode.num_beams=4,decode.length_penalty=0.9") == (
        "beam4", ["decode.num_beams=4", "decode.length_penalty=0.9"])
    for bad in ("beam4", "beam4=", "=decode.num_beams=4", "beam4=decode.num_beams"):
        with pytest.raises(SystemExit, match="NAME=KEY=VALUE"):
            check.parse_setting(bad)
    (tmp_path / "e2e-mini" / "e2e" / "lora" / "seed0").mkdir(parents=True)
    results = tmp_path / "checks.jsonl"
    assert check.main(["--runs-dir", str(tmp_path), "--arms", "lora", "--setting", "beam4=decode.num_beams=4",
                       "--results", str(results)]) == 0
    assert "seed0: not finished here, skipped" in capsys.readouterr().out
    assert not results.exists()


def test_decoding_check_adds_repetition_counts_to_recorded_lines_where_the_run_is_here(tmp_path, capsys):
    """A recorded line without `repeats` gets a newer copy with them when its run's greedy and setting predictions
    are here with n_inputs lines each; a --limit trial's shorter file, or a missing run, adds nothing."""
    check = _script("quality/decoding_check")
    restated = "X is near Raja Indian Cuisine. It is near Raja Indian Cuisine."
    plain = "X is a pub."
    run = tmp_path / "e2e-mini" / "e2e" / "lora" / "seed1"
    (run / "check-beam4").mkdir(parents=True)
    (run / "predictions.txt").write_text("\n".join([restated, restated, plain]) + "\n")
    (run / "check-beam4" / "predictions.txt").write_text("\n".join([plain, restated, plain]) + "\n")
    line = {"protocol": "e2e-mini", "task": "e2e", "arm": "lora", "seed": 1, "setting": "beam4",
            "metrics": {"BLEU": 0.6}, "greedy": {"BLEU": 0.5}, "n_inputs": 3}
    elsewhere = {**line, "arm": "solo-r4"}  # trained on another machine: no run folder here
    results = tmp_path / "checks.jsonl"
    results.write_text(json.dumps(line) + "\n" + json.dumps(elsewhere) + "\n")
    check.add_missing_repeats(results, tmp_path)
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert len(lines) == 3 and lines[2] == {**line, "repeats": {"n": 3, "greedy": 2, "setting": 1}}
    assert "lora seed 1 beam4: outputs repeating a 3-gram, greedy 2 -> 1" in capsys.readouterr().out
    check.add_missing_repeats(results, tmp_path)  # the newest line has them now: nothing more
    assert len(results.read_text().splitlines()) == 3
    (run / "check-beam4" / "predictions.txt").write_text(plain + "\n")  # a --limit 1 trial overwrote it
    assert check.repeats(run, "beam4", 3) is None
