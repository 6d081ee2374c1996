"""`peftlab report`: synthetic run folders with known numbers -> markdown table (mean ± std over seeds) and PNGs."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import yaml

from peftlab.errors import DataError, PeftlabError
from peftlab.report import RunFolderError, group_runs, load_run, register_cli, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_run(root: Path, name: str, *, method: str, seed: int, metrics: dict, task: str = "e2e",
             glue_task: str = "sst2", model: str = "smollm2-135m", method_args: dict | None = None,
             trainable: int = 1000, train_seconds: float = 10.0, peak_mb: float = 500.0, steps: int = 5,
             extra_log: dict | None = None, lr: float = 1e-3) -> Path:
    """A run folder as `peftlab train` writes it (no training): metrics.json, metrics.jsonl, config.yaml."""
    run = root / name
    run.mkdir(parents=True)
    config = {"task": task, "method": method, "method_args": method_args or {"r": 8},
              "model": {"name": model, "dtype": "float32"}, "data": {"glue_task": glue_task},
              "optim": {"lr": lr}, "run": {"output_dir": str(run), "seed": seed}}
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    final = {**metrics, "method": method, "task": "e2e" if task == "e2e" else glue_task.upper(),
             "trainable_params": trainable, "total_params": 10**6, "steps": steps, "best_step": steps,
             "train_seconds": train_seconds, "peak_memory_mb": peak_mb, "world_size": 1}
    (run / "metrics.json").write_text(json.dumps(final))
    lines = []
    for step in range(1, steps + 1):
        record = {"step": step, "loss": 3.0 / step + 0.1 * seed, "lr": 1e-3, "tokens_per_second": 100.0}
        for key, value in (extra_log or {}).items():
            record[key] = value(step) if callable(value) else value
        lines.append(json.dumps(record))
    lines.append(json.dumps({"step": steps, "eval": {"dev_loss": 1.0}, "best_step": steps}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run


def e2e(bleu: float, nist: float, meteor: float | None = 0.45) -> dict:
    return {"BLEU": bleu, "NIST": nist, "METEOR": meteor, "ROUGE_L": 0.7, "CIDEr": 2.0}


def solo_log() -> dict:
    return {"solo_step": lambda s: float(s), **{f"solo_t[{i}->{i + 2}]": (lambda s, i=i: min(1.0, 0.2 * s + 0.01 * i))
                                                for i in range(4)}}


def gate_log() -> dict:  # (L=3, l=4) gates growing with the step, larger in deeper layers
    return {"gate": lambda s: [[round(0.1 * s * (layer + 1) + 0.01 * p, 4) for p in range(4)] for layer in range(3)]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    return [
        make_run(root, "lora-s0", method="lora", seed=0, metrics=e2e(0.60, 8.0), trainable=294912,
                 train_seconds=100.0, peak_mb=1000.0),
        make_run(root, "lora-s1", method="lora", seed=1, metrics=e2e(0.64, 8.5, meteor=None), trainable=294912,
                 train_seconds=120.0, peak_mb=1100.0),
        make_run(root, "solo-s0", method="solo", seed=0, metrics=e2e(0.50, 7.0), trainable=184320,
                 method_args={"rank": 8}, extra_log=solo_log()),
        make_run(root, "gated-s0", method="gated-prefix", seed=0, metrics=e2e(0.55, 7.5), trainable=30720,
                 method_args={"num_virtual_tokens": 4}, extra_log=gate_log()),
        make_run(root, "glue-lora-s0", method="lora", seed=0, task="glue", model="minilm-l6",
                 metrics={"accuracy": 0.80}, trainable=75266),
        make_run(root, "glue-lora-s1", method="lora", seed=1, task="glue", model="minilm-l6",
                 metrics={"accuracy": 0.90}, trainable=75266),
        make_run(root, "glue-lora-s2", method="lora", seed=2, task="glue", model="minilm-l6",
                 metrics={"accuracy": 0.85}, trainable=75266),
        make_run(root, "mrpc-bitfit-s0", method="bitfit", seed=0, task="glue", glue_task="mrpc",
                 model="minilm-l6", metrics={"f1": 0.81, "accuracy": 0.70}, trainable=100),
    ]


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    return write_report(runs, tmp_path_factory.mktemp("report") / "out")


def table_row(markdown: str, section: str, label: str) -> dict[str, str]:
    """The cells of the row labelled ``label`` in the table under heading ``section``, by column name."""
    block = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == label:
            return dict(zip(header, cells))
    raise AssertionError(f"no row {label!r} in section {section!r}:\n{block}")


def test_e2e_table_aggregates_seeds_to_mean_and_sample_std(report):
    md = report.read_text()
    row = table_row(md, "E2E (test)", "lora")
    # by hand: BLEU (0.60, 0.64): mean 0.62, sample std sqrt(2 * 0.02**2 / 1) = 0.028284
    assert row["BLEU"] == "0.6200 ± 0.0283"
    assert row["NIST"] == "8.2500 ± 0.3536"  # (8.0, 8.5): std 0.5 / sqrt(2) = 0.353553
    assert row["METEOR"] == "0.4500 (n=1)"  # null for seed 1 (no Java): one value, flagged
    assert row["ROUGE_L"] == "0.7000 ± 0.0000"
    assert row["Trainable params"] == "294,912"
    assert row["Train time (s)"] == "110.0 ± 14.1"  # (100, 120): std 20 / sqrt(2) = 14.142
    assert row["Peak memory (MB)"] == "1050 ± 71"  # (1000, 1100): std 70.71
    assert (row["n"], row["Seeds"], row["Model"]) == ("2", "0, 1", "smollm2-135m")
    solo = table_row(md, "E2E (test)", "solo")
    assert (solo["BLEU"], solo["n"], solo["Trainable params"]) == ("0.5000", "1", "184,320")
    assert "METEOR is null in 1 of 2 runs" in md


def test_glue_runs_get_their_own_table_per_task(report):
    md = report.read_text()
    row = table_row(md, "GLUE SST-2 (dev)", "lora")
    std = math.sqrt(((0.80 - 0.85) ** 2 + (0.90 - 0.85) ** 2 + 0) / 2)  # 0.05
    assert row["accuracy"] == f"0.8500 ± {std:.4f}" == "0.8500 ± 0.0500"
    assert (row["n"], row["Seeds"], row["Trainable params"]) == ("3", "0, 1, 2", "75,266")
    assert "BLEU" not in md.split("## GLUE SST-2 (dev)")[1].split("\n## ")[0]
    mrpc = table_row(md, "GLUE MRPC (dev)", "bitfit")
    assert (mrpc["f1"], mrpc["accuracy"]) == ("0.8100", "0.7000")
    assert md.index("## E2E (test)") < md.index("## GLUE SST-2 (dev)") < md.index("## GLUE MRPC (dev)")


@pytest.mark.parametrize("name", ["metric_vs_params.png", "loss_curves.png", "solo_t.png", "gates.png"])
def test_plots_are_valid_pngs_linked_from_the_report(report, name):
    path = report.parent / name
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert f"]({name})" in report.read_text()


def test_solo_and_gate_plots_only_when_such_runs_exist(runs, tmp_path):
    write_report(runs, tmp_path / "lora-only")
    assert (tmp_path / "lora-only" / "gates.png").is_file()
    out = write_report([runs[0], runs[1]], tmp_path / "lora-only")  # same folder: the old gates.png goes
    assert (out.parent / "loss_curves.png").is_file() and (out.parent / "metric_vs_params.png").is_file()
    assert not (out.parent / "solo_t.png").exists() and not (out.parent / "gates.png").exists()


def test_missing_metrics_json_is_a_clear_error(runs, tmp_path):
    broken = make_run(tmp_path, "unfinished", method="lora", seed=0, metrics=e2e(0.1, 1.0))
    (broken / "metrics.json").unlink()
    with pytest.raises(RunFolderError) as info:
        write_report([runs[0], broken], tmp_path / "out")
    assert isinstance(info.value, (DataError, PeftlabError))
    assert str(broken) in str(info.value) and "metrics.json" in str(info.value)
    assert not (tmp_path / "out").exists()  # nothing written when a run is bad
    with pytest.raises(RunFolderError, match="does not exist"):
        write_report([tmp_path / "nowhere"], tmp_path / "out")


def test_malformed_log_line_names_file_and_line(tmp_path):
    run = make_run(tmp_path, "r", method="lora", seed=0, metrics=e2e(0.1, 1.0))
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write("{not json\n")
    with pytest.raises(RunFolderError, match=r"metrics\.jsonl:7: not a JSON line"):
        load_run(run)


def test_grouping_ignores_seed_but_not_method_args_model_or_task(tmp_path):
    dirs = [make_run(tmp_path, "a0", method="lora", seed=0, metrics=e2e(0.1, 1.0), method_args={"r": 4}),
            make_run(tmp_path, "a1", method="lora", seed=1, metrics=e2e(0.2, 1.0), method_args={"r": 4}),
            make_run(tmp_path, "b0", method="lora", seed=0, metrics=e2e(0.3, 1.0), method_args={"r": 8}),
            make_run(tmp_path, "c0", method="lora", seed=0, metrics=e2e(0.3, 1.0), method_args={"r": 8},
                     model="gpt2")]
    groups = group_runs([load_run(d) for d in dirs])
    assert [(g.label, g.model, g.seeds) for g in groups] == [
        ("lora (r=4)", "smollm2-135m", [0, 1]), ("lora (r=8)", "smollm2-135m", [0]), ("lora (r=8)", "gpt2", [0])]
    assert groups[0].stat("BLEU").mean == pytest.approx(0.15)


def test_seeds_of_different_recipes_are_flagged(tmp_path):
    dirs = [make_run(tmp_path, "s0", method="lora", seed=0, metrics=e2e(0.1, 1.0), lr=1e-3),
            make_run(tmp_path, "s1", method="lora", seed=1, metrics=e2e(0.2, 1.0), lr=2e-3)]
    md = write_report(dirs, tmp_path / "out").read_text()
    assert "the runs differ in optim.lr besides the seed" in md


def test_group_by_splits_groups_by_recipe_fields(tmp_path):
    dirs = [make_run(tmp_path, f"lr{lr}-s{seed}", method="lora", seed=seed, metrics=e2e(0.1 * seed + lr * 100, 1.0),
                     lr=lr) for lr in (1e-3, 2e-3) for seed in (0, 1)]
    md = write_report(dirs, tmp_path / "out", group_by=["optim.lr"]).read_text()
    assert "differ in optim.lr" not in md  # the field now separates the groups instead of mixing them
    assert table_row(md, "E2E (test)", "lora [optim.lr=0.001]")["BLEU"] == "0.1500 ± 0.0707"
    assert table_row(md, "E2E (test)", "lora [optim.lr=0.002]")["BLEU"] == "0.2500 ± 0.0707"
    with pytest.raises(RunFolderError, match="optim.lrr"):
        group_runs([load_run(d) for d in dirs], group_by=["optim.lrr"])


def test_cli_and_parent_folder_expansion(tmp_path, capsys):
    parent = tmp_path / "runs"  # a folder holding run folders stands for them
    for seed in (0, 1):
        make_run(parent, f"lora-s{seed}", method="lora", seed=seed, metrics=e2e(0.5 + 0.1 * seed, 1.0))
    make_run(parent, "bitfit-s0", method="bitfit", seed=0, metrics=e2e(0.4, 1.0))
    parser = argparse.ArgumentParser(prog="peftlab")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(parent), "--out", str(tmp_path / "cli")])
    assert args.func(args) == 0
    md = (tmp_path / "cli" / "report.md").read_text()
    assert "3 run(s) in 2 group(s)" in md
    assert table_row(md, "E2E (test)", "lora")["BLEU"] == "0.5500 ± 0.0707"  # (0.5, 0.6): std 0.1 / sqrt(2)
    assert "report.md" in capsys.readouterr().out
