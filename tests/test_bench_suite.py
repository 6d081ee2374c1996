"""The quality suite: suite files are checked before anything runs, expand into the runs they promise, and the
runner trains only what is missing, resumes half-done folders and never counts a run twice (MiniLM-L6, tiny
budgets; never the suite itself)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from peftlab import ConfigError
from peftlab.bench import ResultsFileError, append_result, load_suite, read_results
from peftlab.bench.runner import choose_lr, plan, run_suite
from peftlab.bench.suite import result_key

GLUE_COMMON = ("overrides: {optim.batch_size: 8, optim.warmup_steps: 0, run.eval_every: 2, data.train_limit: 32, "
               "data.eval_limit: 16, run.report_to: none}")


def write_suite(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text("version: 1\nprotocols:\n" + textwrap.indent(textwrap.dedent(body), "  "), encoding="utf-8")
    return path


# --- checked before anything runs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("body, message", [
    ("p: {task: e2e, seedz: [0], arms: {a: {method: lora}}}", r"unknown key 'seedz'; did you mean 'seeds'"),
    ("p: {task: e2e, arms: {a: {method: lorra}}}", r"unknown method 'lorra'; did you mean 'lora'\? valid methods: .*lora"),
    ("p: {task: e2e, arms: {a: {method: lora, overrides: {optim.lrr: 0.1}}}}", r"arms\.a .*'lrr'.*'lr'"),
    ("p: {task: e2e, arms: {a: {method: lora, method_args: {rank: 4}}}}", r"arms\.a: method_args\.rank: not a field of LoraConfig"),
    ("p: {task: e2e, lr_from: q, arms: {a: {method: lora}}}", r"lr_from: 'q' is not a protocol"),
    ("g: {task: e2e, lr_grid: [0.1], arms: {a: {method: lora}}}\n"
     "p: {task: e2e, lr_from: g, arms: {b: {method: lora}}}", r"lr_arm: 'b' is not an arm of 'g'"),
    ("p: {task: nlg, arms: {a: {method: lora}}}", r"task: expected one of"),
    ("p: {task: e2e, steps: 0, arms: {a: {method: lora}}}", r"steps: expected a positive"),
    ("p: {task: e2e, lr_grid: [], arms: {a: {method: lora}}}", r"lr_grid: expected a non-empty list"),
    ("p: {task: e2e, arms: {t: {baseline: oracle}}}", r"baseline: expected one of"),
    ("p: {task: e2e, arms: {a: {method: lora, compile: sometimes}}}", r"p\.arms\.a\.compile: expected auto"),
])
def test_bad_suite_files_fail_before_anything_runs(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(write_suite(tmp_path, body))


def test_compile_true_for_a_method_without_compile_support_fails_before_anything_runs(tmp_path, monkeypatch):
    from peftlab.tuners.lora.model import LoraTuner

    monkeypatch.setattr(LoraTuner, "supports_compile", False)
    with pytest.raises(ConfigError, match="does not support run.compile"):
        load_suite(write_suite(tmp_path, "p: {task: e2e, compile: true, arms: {a: {method: lora}}}"))
    # auto leaves it eager; an arm's own choice wins over the protocol's
    suite = load_suite(write_suite(tmp_path, "p: {task: e2e, compile: auto, arms: {a: {method: lora}}}"))
    assert suite.runs[0].compile is False
    monkeypatch.undo()
    suite = load_suite(write_suite(tmp_path, "p: {task: e2e, compile: auto, arms: {a: {method: lora}, "
                                             "b: {method: prefix, compile: false}}}"))
    assert [(r.arm, r.compile, r.recipe["run"]["compile"]) for r in suite.runs] == [("a", True, True),
                                                                                   ("b", False, False)]


def test_missing_or_malformed_suite_file(tmp_path):
    with pytest.raises(ConfigError, match="suite file not found"):
        load_suite(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("protocols: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(bad)


# --- expansion ----------------------------------------------------------------------------------------------------
def test_grids_lengths_tasks_and_seed_major_order(tmp_path):
    suite = load_suite(write_suite(tmp_path, """
        grid:
          task: e2e
          lr_grid_factors: [0.5, 2.0]
          overrides: {optim.lr: 0.001}
          arms: {lora: {method: lora}, solo: {method: solo, method_args: {rank: 2}}}
        lengths:
          task: glue
          glue_tasks: [sst2, mrpc]
          seeds: [0, 1]
          prefix_lengths: [5, 20]
          arms: {rg: {method: gated-prefix, method_args: {residual: R-a, gate: G-a}}}
    """))
    grid = suite.protocol_runs("grid")
    assert [(r.arm, r.lr) for r in grid] == [("lora@lr=0.0005", 0.0005), ("lora@lr=0.002", 0.002),
                                             ("solo@lr=0.0005", 0.0005), ("solo@lr=0.002", 0.002)]
    assert all(r.recipe["optim"]["lr"] == r.lr for r in grid)
    assert grid[2].recipe["method_args"] == {"rank": 2}  # the arm's method_args replace the recipe's
    lengths = suite.protocol_runs("lengths")
    assert [r.seed for r in lengths] == [0] * 4 + [1] * 4  # every arm at seed 0 before any at seed 1
    assert {(r.task, r.arm, r.prefix_length) for r in lengths if r.seed == 0} == {
        ("sst2", "rg@5", 5), ("sst2", "rg@20", 20), ("mrpc", "rg@5", 5), ("mrpc", "rg@20", 20)}
    assert all(r.recipe["method_args"]["num_virtual_tokens"] == r.prefix_length for r in lengths)
    assert all(r.recipe["data"]["glue_task"] == r.task for r in lengths)


def test_the_shipped_suite_loads_and_matches_its_claims():
    suite = load_suite(Path(__file__).resolve().parents[1] / "benchmarks" / "quality" / "suite.yaml")
    assert {"lr-grid-e2e", "e2e-mini", "glue-mini", "prefix-length", "e2e-solo"} <= set(suite.protocols)
    mini = {r.arm: r for r in suite.protocol_runs("e2e-mini") if r.seed == 0}
    assert {"template", "lora", "solo", "solo-r4", "kernel-mix", "kernel-mix-authors", "prefix", "gated-prefix",
            "houlsby", "bitfit", "full"} <= set(mini)
    assert all(r.recipe["optim"]["max_steps"] == 1000 for r in mini.values() if not r.baseline)
    assert all(r.recipe["run"]["bf16"] is True for r in mini.values() if not r.baseline)
    assert mini["lora"].compile and not mini["prefix"].compile  # the prefix arms pinned eager (seed 0 ran so)
    assert {r.seed for r in suite.protocol_runs("e2e-mini") if r.arm == "lora"} == {0, 1, 2}
    lengths = {r.prefix_length for r in suite.protocol_runs("prefix-length")}
    assert lengths == {5, 10, 20, 50, 100}
    # the lr check runs e2e-mini's own recipe (so its step 0 is e2e-mini's seed-0 run), for every trained arm
    check = {r.arm: r for r in suite.protocol_runs("lr-check-e2e")}
    assert {a for a, r in mini.items() if not r.baseline} == {r.base_arm for r in check.values()}
    for arm, run in mini.items():
        if not run.baseline:
            assert check[f"{arm}@lr-step=0"].recipe == run.recipe and run.lr_from == "lr-check-e2e"


# --- results file -------------------------------------------------------------------------------------------------
def test_results_file_names_the_bad_line_and_survives_a_cut_write(tmp_path):
    path = tmp_path / "results.jsonl"
    good = {"protocol": "p", "task": "e2e", "arm": "a", "method": "lora", "seed": 0, "metrics": {"BLEU": 0.5}}
    append_result(path, good)
    with path.open("a") as handle:
        handle.write('{"protocol": "p", "task"')  # a runner killed mid-write
    with pytest.raises(ResultsFileError, match=r"results\.jsonl:2: not a JSON line"):
        read_results(path)
    with pytest.warns(UserWarning, match="incomplete last line"):
        append_result(path, {**good, "seed": 1})
    assert [r["seed"] for r in read_results(path)] == [0, 1]
    path.write_text(json.dumps({"protocol": "p", "task": "e2e"}) + "\n")
    with pytest.raises(ResultsFileError, match=r":1: missing key\(s\) arm, method, seed, metrics"):
        read_results(path)


# --- the runner ---------------------------------------------------------------------------------------------------
def test_runner_picks_the_grid_lr_resumes_and_never_double_counts(tmp_path, shared_data):
    path = write_suite(tmp_path, f"""
        grid:
          task: glue
          glue_tasks: [sst2]
          steps: 2
          compile: false
          lr_grid: [1.0e-5, 3.0e-3]
          {GLUE_COMMON}
          arms: {{lora: {{method: lora}}}}
        main:
          task: glue
          glue_tasks: [sst2]
          steps: 4
          compile: false
          lr_from: grid
          {GLUE_COMMON}
          arms: {{lora: {{method: lora}}}}
    """)
    suite = load_suite(path)
    results, runs = tmp_path / "results.jsonl", tmp_path / "runs"
    assert [p.status for p in plan(suite, results, runs)] == ["missing", "missing", "waiting"]
    lines: list[str] = []
    assert run_suite(suite, results, runs, data_dir=str(shared_data), echo=lines.append) == 3
    records = read_results(results)
    assert [r["arm"] for r in records] == ["lora@lr=1e-05", "lora@lr=0.003", "lora"]
    grid = {r["lr_grid_value"]: r["selection"] for r in records[:2]}
    chosen, _ = choose_lr(suite.protocol_runs("main")[0], suite, {result_key(r["protocol"], r["task"], r["arm"],
                                                                             r["seed"]): r for r in records})
    assert chosen == max(sorted(grid), key=lambda lr: grid[lr])
    main_line = records[2]
    assert main_line["lr"] == chosen and main_line["steps"] == 4 and main_line["n_inputs"] == 16
    assert main_line["recipe"]["optim"]["lr"] == chosen and main_line["curves"]["dev"]
    assert main_line["trainable_params"] > 0 and main_line["stored_params"] >= main_line["trainable_params"] - 10**6
    # nothing left: a second invocation records nothing
    assert run_suite(suite, results, runs, data_dir=str(shared_data), echo=lines.append) == 0
    assert len(read_results(results)) == 3
    assert all(p.status == "done" for p in plan(suite, results, runs))

    # a half-done run folder (trained, killed before its final metrics) is resumed, then counted once
    spec = suite.protocol_runs("main")[0]
    run_dir = spec.run_dir(runs)
    results.write_text("".join(line for line in results.read_text().splitlines(keepends=True)
                               if '"protocol":"main"' not in line))
    (run_dir / "metrics.json").unlink()
    assert plan(suite, results, runs)[2].status == "partial"
    lines.clear()
    assert run_suite(suite, results, runs, data_dir=str(shared_data), echo=lines.append) == 1
    assert any("resuming the half-done run" in line for line in lines)
    assert "--resume" in run_dir.with_name(run_dir.name + ".log").read_text()
    assert [r["arm"] for r in read_results(results)].count("lora") == 1

    # a finished folder whose line was lost is recorded from the folder, not retrained
    results.write_text("".join(line for line in results.read_text().splitlines(keepends=True)
                               if '"protocol":"main"' not in line))
    before = (run_dir / "metrics.json").stat().st_mtime_ns
    lines.clear()
    assert run_suite(suite, results, runs, data_dir=str(shared_data), echo=lines.append) == 1
    assert any("already trained" in line for line in lines)
    assert (run_dir / "metrics.json").stat().st_mtime_ns == before

    # another recipe for a recorded run makes it stale (kept unless --rerun-stale)
    path.write_text(path.read_text().replace("lr_from: grid", "lr_from: grid\n    description: a note"))
    assert all(p.status == "done" for p in plan(load_suite(path), results, runs))  # same recipes: still done
    text = path.read_text()
    cut = text.index("  main:")
    path.write_text(text[:cut] + text[cut:].replace("{method: lora}", "{method: lora, overrides: {optim.betas: "
                                                                   "[0.9, 0.98]}}"))
    statuses = {p.spec.protocol: p.status for p in plan(load_suite(path), results, runs)}
    assert statuses == {"grid": "done", "main": "stale"}


def test_a_field_added_later_at_its_default_does_not_make_a_line_stale():
    """Result lines written before a recipe field existed lack it; at its default they are current (method_args are
    stored as the suite gives them, not filled in, so a new method field never shows up there)."""
    from peftlab.bench.recipes import normalised_recipe, same_recipe

    current = normalised_recipe({"task": "e2e", "method": "lora", "optim": {"lr": 0.003}, "method_args": {"r": 4}})
    older = json.loads(json.dumps(current))
    del older["run"]["checkpoint_every"]  # a recipe field at its default (None)
    assert same_recipe(older, current)
    # the same missing field at another value than its default is another recipe
    changed = json.loads(json.dumps(current))
    changed["run"]["checkpoint_every"] = 50
    assert not same_recipe(older, changed)
    # any value that differs, or a field the current recipe no longer has, makes it stale
    other_lr = json.loads(json.dumps(older))
    other_lr["optim"]["lr"] = 0.009
    assert not same_recipe(other_lr, current)
    gone = json.loads(json.dumps(current))
    gone["optim"]["a_removed_field"] = 1
    assert not same_recipe(gone, current)
    # machine-specific paths never count
    moved = json.loads(json.dumps(current))
    moved["data"]["data_dir"] = "/elsewhere"
    assert same_recipe(moved, current)


@pytest.mark.parametrize("native, matmuls, allow, trained", [
    (False, "native", False, False), (False, "native", True, True), (True, "native", False, True),
    (False, "auto", False, True), (True, "auto", False, True)])
def test_a_bf16_run_in_emulated_kernels_waits_for_a_machine_that_multiplies_bf16_natively(
        tmp_path, monkeypatch, native, matmuls, allow, trained):
    """Where bf16 is emulated, a bf16 run trains with its products through fp32 kernels (the default); only with
    PEFTLAB_BF16_MATMULS=native (torch's emulated kernels, ~39x slower) does it wait for another machine."""
    import peftlab.hardware as hardware
    from peftlab.bench import runner

    monkeypatch.setenv("PEFTLAB_BF16_MATMULS", matmuls)

    path = write_suite(tmp_path, """
        p:
          task: glue
          glue_tasks: [sst2]
          steps: 2
          compile: false
          overrides: {run.bf16: true, run.report_to: none}
          arms: {lora: {method: lora}}
    """)
    monkeypatch.setattr(hardware, "bf16_matmul_native", lambda device=None: native)
    monkeypatch.setattr(hardware, "describe", lambda: {"cpu": "AMD EPYC", "cpu_capability": "AVX2",
                                                       "cpu_bf16_native": native, "cpus": 2, "cuda": None})
    calls: list[list[str]] = []
    monkeypatch.setattr(runner.subprocess, "call", lambda command, **kw: calls.append(command) or 1)
    lines: list[str] = []
    suite = load_suite(path)
    assert run_suite(suite, tmp_path / "r.jsonl", tmp_path / "runs", allow_emulated_bf16=allow,
                     echo=lines.append) == 0
    assert bool(calls) == trained  # the stand-in training fails (exit 1): nothing is recorded either way
    if trained:
        assert any("FAILED: training exited with code 1" in line for line in lines)
    else:
        skipped = next(line for line in lines if "skipped" in line)
        assert "trains in bf16" in skipped and "bf16 emulated" in skipped and "--allow-emulated-bf16" in skipped
        assert "PEFTLAB_BF16_MATMULS" in skipped
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))


def test_a_glue_line_from_before_the_pooler_trained_is_stale_and_an_e2e_line_is_not():
    """``model.train_pooler`` only changed GLUE runs (a classifier's head): a GLUE line without the field froze the
    pooler (another recipe now); an E2E line without it is still current (recipe.LEGACY_TASKS)."""
    from peftlab.bench.recipes import normalised_recipe, same_recipe
    from peftlab.train.recipe import legacy_value

    for task, stale in (("glue", True), ("e2e", False)):
        current = normalised_recipe({"task": task, "method": "lora"})
        older = json.loads(json.dumps(current))
        del older["model"]["train_pooler"]
        assert same_recipe(older, current) is not stale, task
    assert legacy_value("model", "train_pooler", "glue") is False
    assert legacy_value("model", "train_pooler", "e2e", default=True) is True
    frozen = normalised_recipe({"task": "glue", "method": "lora", "model": {"train_pooler": False}})
    older = json.loads(json.dumps(frozen))
    del older["model"]["train_pooler"]
    assert same_recipe(older, frozen)  # what it ran with, said explicitly: current


def test_lr_choices_read_only_lines_of_the_grids_current_recipe(tmp_path):
    """A grid line made from another recipe (a field changed since) is no evidence: the grid waits for its runs
    again, and nothing takes its lr from the old lines."""
    from peftlab.bench.lr_choice import choose_lr
    from peftlab.bench.recipes import normalised_recipe
    from peftlab.bench.runner import evidence

    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        protocols:
          grid: {task: glue, glue_tasks: [sst2], steps: 10, compile: false, lr_grid_factors: [0.5, 1.0],
                 arms: {lora: {method: lora}}}
          main: {task: glue, glue_tasks: [sst2], steps: 10, compile: false, lr_from: grid,
                 arms: {lora: {method: lora}}}
        """), encoding="utf-8")
    suite = load_suite(path)
    grid = suite.protocol_runs("grid")

    def line(spec, recipe, score):
        return {"protocol": "grid", "task": "sst2", "arm": spec.arm, "seed": 0, "selection": score,
                "metrics": {"accuracy": score}, "recipe": recipe}

    current = {s.key: line(s, normalised_recipe(s.recipe), score) for s, score in zip(grid, (0.9, 0.8))}
    main = suite.protocol_runs("main")[0]
    assert choose_lr(main, suite, evidence(suite, current))[0] == grid[0].lr
    old = {}
    for spec, score in zip(grid, (0.9, 0.8)):
        recipe = normalised_recipe(spec.recipe)
        del recipe["model"]["train_pooler"]  # written before the pooler trained: a frozen-pooler run
        old[spec.key] = line(spec, recipe, score)
    assert evidence(suite, old) == {}
    lr, why = choose_lr(main, suite, evidence(suite, old))
    assert lr is None and "waiting for 2 run(s) of grid" in why


def test_an_e2e_line_counts_the_outputs_that_repeat_one_of_their_own_trigrams(tmp_path):
    """record.harvest: an E2E run's line carries how many decoded outputs repeat a word 3-gram of their own (a
    diagnostic of greedy decoding); a GLUE line has none."""
    from peftlab.bench.record import REPEATS, harvest

    path = write_suite(tmp_path, """
        p: {task: e2e, steps: 2, arms: {lora: {method: lora}}}
        q: {task: glue, glue_tasks: [sst2], steps: 2, arms: {lora: {method: lora}}}
    """)
    suite = load_suite(path)
    outputs = {"e2e": ["X is near Raja Indian Cuisine. It is near Raja Indian Cuisine.", "X is a pub.",
                       "X is a pub near Y. X is a pub near Y."],
               "glue": ["positive", "positive", "negative"]}
    for spec in (suite.protocol_runs("p")[0], suite.protocol_runs("q")[0]):
        folder = tmp_path / spec.protocol
        folder.mkdir()
        (folder / "config.yaml").write_text(f"task: {spec.task if spec.task == 'e2e' else 'glue'}\n"
                                            "optim: {lr: 0.001}\n")
        (folder / "metrics.json").write_text(json.dumps({"BLEU": 0.5, "accuracy": 0.5, "best_dev": {}}))
        (folder / "metrics.jsonl").write_text("")
        (folder / "predictions.txt").write_text("\n".join(outputs[spec.task if spec.task == "e2e" else "glue"]))
        record = harvest(spec, folder, spec.recipe)
        assert record["n_inputs"] == 3
        assert record[REPEATS] == (2 if spec.task == "e2e" else None)
