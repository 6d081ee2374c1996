"""lr_steps: a short grid's lr choice checked at the full budget, and a main protocol taking its lr from that check.

Fake result lines only (no training, no models): expansion and checks of the key, the lr of each step (inside the
grid and beyond its smallest value), the check's choice (waiting, the better step, the tie rule, a line at an lr the
grid no longer gives), a run with the recipe and seed of another protocol's line copied instead of trained (and
never trained when it is), another run's half-done folder of the same recipe continued in place, and the docs' table.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from peftlab import ConfigError
from peftlab.bench import runner
from peftlab.bench.docs import write_benchmarks_doc
from peftlab.bench.lr_choice import choose_lr, resolved_recipe, steps_choice
from peftlab.bench.recipes import normalised_recipe
from peftlab.bench.runner import PlannedRun, execute, plan
from peftlab.bench.suite import RunSpec, Suite, load_suite

SUITE_YAML = """\
version: 1
protocols:
  grid:
    task: e2e
    model: smollm2-135m
    seeds: [0]
    steps: 10
    compile: false
    lr_grid_factors: [0.333, 1.0, 3.0]
    arms:
      lora: {method: lora}
      solo: {method: solo}
  check:
    task: e2e
    model: smollm2-135m
    seeds: [0]
    steps: 20
    compile: false
    lr_from: grid
    lr_steps: [0, -1]
    lr_select_tolerance: 0.005
    arms:
      lora: {method: lora}
      solo: {method: solo}
      solo-r4: {method: solo, method_args: {rank: 4}, lr_arm: solo}
  main:
    task: e2e
    model: smollm2-135m
    seeds: [0, 1]
    steps: 20
    compile: false
    lr_from: check
    arms:
      lora: {method: lora}
      solo-r4: {method: solo, method_args: {rank: 4}}
"""


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Suite:
    path = tmp_path_factory.mktemp("lr_steps") / "suite.yaml"
    path.write_text(SUITE_YAML, encoding="utf-8")
    return load_suite(path)


def spec_of(suite: Suite, protocol: str, arm: str, seed: int = 0) -> RunSpec:
    return next(s for s in suite.runs if (s.protocol, s.arm, s.seed) == (protocol, arm, seed))


def grid_lrs(suite: Suite, arm: str) -> list[float]:
    return sorted(s.lr for s in suite.protocol_runs("grid") if s.base_arm == arm)


def line(spec: RunSpec, recipe: dict[str, Any], loss: float, **extra: Any) -> dict[str, Any]:
    """A result line of ``spec`` trained with ``recipe`` (best dev loss ``loss``)."""
    normal = normalised_recipe(recipe)
    record = {"protocol": spec.protocol, "task": spec.task, "arm": spec.arm, "base_arm": spec.base_arm,
              "method": spec.method, "seed": spec.seed, "metrics": {"BLEU": 0.6 - loss / 10},
              "dev": {"dev_loss": loss}, "selection": -loss, "lr": normal["optim"]["lr"], "train_seconds": 100.0,
              "recipe": normal}
    record.update(extra)
    return record


def grid_lines(suite: Suite, arm: str, losses: list[float]) -> list[dict[str, Any]]:
    """Grid lines of ``arm``, ``losses`` in ascending lr order."""
    specs = sorted((s for s in suite.protocol_runs("grid") if s.base_arm == arm), key=lambda s: s.lr)
    return [line(s, s.recipe, loss) for s, loss in zip(specs, losses)]


def keyed(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {runner.line_key(r): r for r in records}


def check_line(suite: Suite, records: list[dict[str, Any]], arm: str, loss: float) -> dict[str, Any]:
    spec = spec_of(suite, "check", arm)
    recipe = resolved_recipe(spec, suite, keyed(records))
    assert recipe is not None
    return line(spec, recipe, loss)


def write_suite(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text("version: 1\nprotocols:\n" + textwrap.indent(textwrap.dedent(body), "  "), encoding="utf-8")
    return path


GRID = """\
grid:
  task: e2e
  seeds: [0]
  steps: 10
  compile: false
  lr_grid_factors: [0.333, 1.0, 3.0]
  arms: {lora: {method: lora}}
"""


# ------------------------------------------------------------------------------------------------------- expansion
def test_every_arm_becomes_one_run_per_step_whose_lr_the_runner_resolves(suite):
    check = suite.protocol_runs("check")
    assert [s.arm for s in check] == ["lora@lr-step=0", "lora@lr-step=-1", "solo@lr-step=0", "solo@lr-step=-1",
                                      "solo-r4@lr-step=0", "solo-r4@lr-step=-1"]
    assert [s.lr_step for s in check] == [0, -1] * 3 and all(s.lr is None for s in check)
    assert {s.lr_arm for s in check if s.base_arm == "solo-r4"} == {"solo"}
    assert spec_of(suite, "main", "solo-r4").lr_arm == "solo-r4"  # main's arms name the check's arms
    assert all(s.lr_step is None for s in suite.protocol_runs("main"))


@pytest.mark.parametrize("body, message", [
    (GRID + "check: {task: e2e, lr_steps: [0, -1], arms: {lora: {method: lora}}}\n", "only with lr_from"),
    (GRID + "check: {task: e2e, lr_from: grid, lr_steps: [0, 0], arms: {lora: {method: lora}}}\n", "listed twice"),
    (GRID + "check: {task: e2e, lr_from: grid, lr_steps: [], arms: {lora: {method: lora}}}\n", "non-empty list"),
    (GRID + "check: {task: e2e, lr_from: grid, lr_steps: [0, -1], arms: {lora: {method: lora}}}\n"
            "again: {task: e2e, lr_from: check, lr_steps: [0, -1], arms: {lora: {method: lora}}}\n",
     "has lr_steps itself"),
    (GRID + "main: {task: e2e, lr_from: nowhere, arms: {lora: {method: lora}}}\n", "with an lr grid or lr_steps"),
    (GRID + "main: {task: e2e, lr_from: grid, lr_select_tolerance: 0.01, arms: {lora: {method: lora}}}\n",
     "only with lr_grid, lr_grid_factors or lr_steps"),
])
def test_bad_lr_steps_fail_before_anything_runs(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(write_suite(tmp_path, body))


# ------------------------------------------------------------------------------------------------------ step lrs
def test_step_lrs_move_along_the_grid_and_beyond_its_smallest_value(suite):
    lrs = grid_lrs(suite, "lora")
    best_middle = keyed(grid_lines(suite, "lora", [3.0, 2.0, 2.5]))
    assert choose_lr(spec_of(suite, "check", "lora@lr-step=0"), suite, best_middle)[0] == lrs[1]
    lr, why = choose_lr(spec_of(suite, "check", "lora@lr-step=-1"), suite, best_middle)
    assert lr == lrs[0] and "1 grid place below" in why
    best_bottom = keyed(grid_lines(suite, "lora", [2.0, 2.5, 3.0]))
    below = choose_lr(spec_of(suite, "check", "lora@lr-step=-1"), suite, best_bottom)[0]
    assert below == pytest.approx(float(f"{lrs[0] * lrs[0] / lrs[1]:.3g}"))  # the grid's ratio, 3 digits
    waiting = keyed(grid_lines(suite, "lora", [3.0, 2.0]))  # one grid run missing
    lr, why = choose_lr(spec_of(suite, "check", "lora@lr-step=-1"), suite, waiting)
    assert lr is None and "waiting for 1 run(s) of grid" in why


def test_main_takes_the_better_step_with_the_tie_rule_once_both_are_done(suite):
    grid = grid_lines(suite, "lora", [3.0, 2.0, 2.5])
    main = spec_of(suite, "main", "lora")
    lr, why = choose_lr(main, suite, keyed(grid))
    assert lr is None and "waiting for 2 run(s) of check (arm lora)" in why
    at_choice = check_line(suite, grid, "lora@lr-step=0", 2.50)
    lower_better = check_line(suite, grid, "lora@lr-step=-1", 2.40)
    assert choose_lr(main, suite, keyed(grid + [at_choice]))[0] is None
    assert choose_lr(main, suite, keyed(grid + [at_choice, lower_better]))[0] == lower_better["lr"]
    lower_worse = check_line(suite, grid, "lora@lr-step=-1", 2.60)
    assert choose_lr(main, suite, keyed(grid + [at_choice, lower_worse]))[0] == at_choice["lr"]
    # within 0.5 % of the best: the smaller lr (the check's lr_select_tolerance)
    lower_tied = check_line(suite, grid, "lora@lr-step=-1", 2.51)
    lr, why = choose_lr(main, suite, keyed(grid + [at_choice, lower_tied]))
    assert lr == lower_tied["lr"] and "lr_select_tolerance" in why


def test_a_check_line_at_an_lr_the_grid_no_longer_gives_does_not_count(suite):
    grid = grid_lines(suite, "lora", [3.0, 2.0, 2.5])
    old = [check_line(suite, grid, "lora@lr-step=0", 2.5), check_line(suite, grid, "lora@lr-step=-1", 2.4)]
    moved = grid_lines(suite, "lora", [3.0, 2.6, 2.5])  # the grid now chooses its largest lr
    main = spec_of(suite, "main", "lora")
    lr, why = choose_lr(main, suite, keyed(moved + old))
    assert lr is None and "waiting for 2 run(s) of check" in why


def test_the_lr_arm_of_a_check_arm_is_followed(suite):
    grid = grid_lines(suite, "solo", [2.0, 2.5, 3.0])
    lrs = grid_lrs(suite, "solo")
    assert choose_lr(spec_of(suite, "check", "solo-r4@lr-step=0"), suite, keyed(grid))[0] == lrs[0]
    steps = [check_line(suite, grid, "solo-r4@lr-step=0", 2.4), check_line(suite, grid, "solo-r4@lr-step=-1", 2.2)]
    lr = choose_lr(spec_of(suite, "main", "solo-r4", seed=1), suite, keyed(grid + steps))[0]
    assert lr == steps[1]["lr"] and lr < lrs[0]


# ------------------------------------------------------------------------------------------------------- adoption
def refuse_training(monkeypatch) -> None:
    def trained(*args, **kwargs):
        raise AssertionError(f"a copied run was trained: {args}")
    monkeypatch.setattr(runner.subprocess, "call", trained)


def test_a_run_equal_to_another_protocols_line_is_copied_not_trained(suite, tmp_path, monkeypatch):
    grid = grid_lines(suite, "lora", [3.0, 2.0, 2.5])
    main0 = spec_of(suite, "main", "lora")
    # main's seed 0 ran at the grid's choice before the check existed: the check's step 0 is that very run
    earlier = line(main0, {**main0.recipe, "optim": {**main0.recipe["optim"], "lr": grid_lrs(suite, "lora")[1]}},
                   2.5, run_dir="/runs/main/lora/seed0")
    results = tmp_path / "quality.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in grid + [earlier]), encoding="utf-8")
    step0 = spec_of(suite, "check", "lora@lr-step=0")
    planned = {p.spec.key: p for p in plan(suite, results, tmp_path / "runs")}
    assert "main/e2e/lora/seed0: its line is copied" in planned[step0.key].reason
    refuse_training(monkeypatch)
    copied = execute(PlannedRun(step0, "missing"), suite, results, tmp_path / "runs", echo=lambda _: None)
    assert copied["protocol"] == "check" and copied["arm"] == "lora@lr-step=0" and copied["lr_step"] == 0
    assert copied["adopted_from"] == "main/e2e/lora/seed0"
    assert copied["selection"] == earlier["selection"] and copied["run_dir"] == earlier["run_dir"]
    # a step whose recipe no line has is trained (here: the refused subprocess)
    step1 = spec_of(suite, "check", "lora@lr-step=-1")
    with pytest.raises(AssertionError, match="a copied run was trained"):
        execute(PlannedRun(step1, "missing"), suite, results, tmp_path / "runs", echo=lambda _: None)


def test_a_main_line_made_stale_by_the_check_is_replaced_by_the_checks_run(suite, tmp_path, monkeypatch):
    grid = grid_lines(suite, "lora", [3.0, 2.0, 2.5])
    steps = [check_line(suite, grid, "lora@lr-step=0", 2.5), check_line(suite, grid, "lora@lr-step=-1", 2.3)]
    main0 = spec_of(suite, "main", "lora")
    old_main = line(main0, {**main0.recipe, "optim": {**main0.recipe["optim"], "lr": steps[0]["lr"]}}, 2.5)
    results = tmp_path / "quality.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in grid + steps + [old_main]), encoding="utf-8")
    planned = {p.spec.key: p for p in plan(suite, results, tmp_path / "runs")}
    assert planned[main0.key].status == "stale"  # the check chose the lower lr
    assert planned[spec_of(suite, "main", "lora", seed=1).key].status == "missing"
    refuse_training(monkeypatch)
    copied = execute(planned[main0.key], suite, results, tmp_path / "runs", echo=lambda _: None)
    assert copied["adopted_from"] == "check/e2e/lora@lr-step=-1/seed0" and copied["lr"] == steps[1]["lr"]
    assert copied["arm"] == "lora" and "lr_step" not in copied
    # seed 1 has no twin: it trains
    with pytest.raises(AssertionError, match="a copied run was trained"):
        execute(planned[spec_of(suite, "main", "lora", seed=1).key], suite, results, tmp_path / "runs",
                echo=lambda _: None)


# ----------------------------------------------------------------------------------------------------------- docs
def test_docs_table_shows_both_steps_and_the_choice(suite, tmp_path):
    grid = grid_lines(suite, "lora", [3.0, 2.0, 2.5]) + grid_lines(suite, "solo", [2.0, 2.5, 3.0])
    steps = [check_line(suite, grid, "lora@lr-step=0", 2.5), check_line(suite, grid, "lora@lr-step=-1", 2.3),
             check_line(suite, grid, "solo@lr-step=0", 2.4)]
    results = tmp_path / "quality.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in grid + steps), encoding="utf-8")
    out = tmp_path / "benchmarks.md"
    write_benchmarks_doc(suite, results, out, runs_dir=tmp_path / "runs")
    md = out.read_text(encoding="utf-8")
    section = md[md.index("## Protocol `check`"):md.index("## Protocol `main`")]
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip().strip("|").split("|")]
            for r in section.splitlines() if r.startswith("| ") and not r.startswith("| arm")}
    low, mid = f"{steps[1]['lr']:g}", f"{steps[0]['lr']:g}"
    assert rows["lora"][1].startswith(f"{mid}: 2.5") and rows["lora"][2] == f"**{low}: 2.3000; BLEU 0.3700**"
    assert rows["lora"][3] == low
    assert rows["solo"][2].endswith("to run") and "waiting" in rows["solo"][3]
    assert "the lr main uses" in section


def test_a_half_done_folder_of_the_same_run_is_continued_in_place(suite, tmp_path, monkeypatch):
    """main's seed-0 run was started at the grid's choice before the check existed: the check's step 0 continues
    that folder (resume) instead of starting the same training again in a folder of its own."""
    import yaml

    from peftlab.bench import record

    grid = grid_lines(suite, "lora", [3.0, 2.0, 2.5])
    results = tmp_path / "quality.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in grid), encoding="utf-8")
    runs = tmp_path / "runs"
    step0 = spec_of(suite, "check", "lora@lr-step=0")
    recipe = resolved_recipe(step0, suite, keyed(grid))
    half_done = spec_of(suite, "main", "lora").run_dir(runs)
    half_done.mkdir(parents=True)
    (half_done / "config.yaml").write_text(yaml.safe_dump(normalised_recipe(recipe)), encoding="utf-8")
    planned = {p.spec.key: p for p in plan(suite, results, runs)}
    assert f"half-done in {half_done}" in planned[step0.key].reason
    commands: list[list[str]] = []
    monkeypatch.setattr(runner.subprocess, "call", lambda command, **kwargs: commands.append(command) or 0)
    monkeypatch.setattr(record, "harvest", lambda spec, run_dir, recipe_: {"run_dir": str(run_dir)})
    out = execute(planned[step0.key], suite, results, runs, echo=lambda _: None)
    assert out["run_dir"] == str(half_done) and "--resume" in commands[0]
    written = yaml.safe_load(Path(commands[0][commands[0].index("--recipe") + 1]).read_text(encoding="utf-8"))
    assert written["run"]["output_dir"] == str(half_done) and not step0.run_dir(runs).exists()
    # a folder of another recipe (here: the lower step's lr) is not this run
    step1 = spec_of(suite, "check", "lora@lr-step=-1")
    assert runner.twin_folder(step1, resolved_recipe(step1, suite, keyed(grid)), suite, runs) is None


def test_a_folder_of_another_budget_is_not_the_same_run(suite, tmp_path):
    """``--resume`` may extend a run, so a folder's own check ignores max_steps; a twin must match it exactly."""
    import yaml

    grid = grid_lines(suite, "lora", [3.0, 2.0, 2.5])
    runs = tmp_path / "runs"
    step0 = spec_of(suite, "check", "lora@lr-step=0")
    recipe = resolved_recipe(step0, suite, keyed(grid))
    shorter = json.loads(json.dumps(recipe))
    shorter["optim"]["max_steps"] = 10
    folder = spec_of(suite, "main", "lora").run_dir(runs)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(normalised_recipe(shorter)), encoding="utf-8")
    assert runner.twin_folder(step0, recipe, suite, runs) is None


def test_docs_table_shows_a_step_that_will_be_copied_with_its_twins_numbers(suite, tmp_path):
    grid = grid_lines(suite, "lora", [3.0, 2.0, 2.5])
    main0 = spec_of(suite, "main", "lora")
    earlier = line(main0, {**main0.recipe, "optim": {**main0.recipe["optim"], "lr": grid_lrs(suite, "lora")[1]}}, 2.5)
    results = tmp_path / "quality.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in grid + [earlier]), encoding="utf-8")
    out = tmp_path / "benchmarks.md"
    write_benchmarks_doc(suite, results, out, runs_dir=tmp_path / "runs")
    md = out.read_text(encoding="utf-8")
    section = md[md.index("## Protocol `check`"):md.index("## Protocol `main`")]
    row = next(r for r in section.splitlines() if r.startswith("| lora "))
    assert f"{earlier['lr']:g}: 2.5000; BLEU 0.3500 (copy of its twin, to record)" in row
    assert "waiting" in row.split("|")[-2]  # not chosen: the copy is not recorded yet


# ------------------------------------------------------------------------------------------------- lr_per_task
PER_TASK_YAML = """\
version: 1
protocols:
  grid:
    task: glue
    model: minilm-l6
    glue_tasks: [sst2]
    seeds: [0]
    steps: 10
    compile: false
    lr_grid_factors: [0.333, 1.0, 3.0]
    arms: {lora: {method: lora}}
  check:
    task: glue
    model: minilm-l6
    glue_tasks: [sst2, mrpc]
    seeds: [0]
    steps: 20
    compile: false
    lr_from: grid
    lr_steps: [0, -1]
    lr_per_task: true
    arms: {lora: {method: lora}}
  main:
    task: glue
    model: minilm-l6
    glue_tasks: [sst2, mrpc]
    seeds: [0, 1]
    steps: 20
    compile: false
    lr_from: check
    arms: {lora: {method: lora}}
"""


def glue_line(spec: RunSpec, recipe: dict[str, Any], score: float) -> dict[str, Any]:
    normal = normalised_recipe(recipe)
    return {"protocol": spec.protocol, "task": spec.task, "arm": spec.arm, "base_arm": spec.base_arm,
            "method": spec.method, "seed": spec.seed, "metrics": {"accuracy": score}, "dev": {"accuracy": score},
            "selection": score, "lr": normal["optim"]["lr"], "train_seconds": 10.0, "recipe": normal}


@pytest.fixture(scope="module")
def per_task(tmp_path_factory) -> Suite:
    path = tmp_path_factory.mktemp("per_task") / "suite.yaml"
    path.write_text(PER_TASK_YAML, encoding="utf-8")
    return load_suite(path)


def per_task_lines(suite: Suite, scores: dict[tuple[str, int], float]) -> list[dict[str, Any]]:
    """The grid (its middle lr best) and the check's lines, ``scores[(task, step)]``."""
    grid_specs = sorted(suite.protocol_runs("grid"), key=lambda s: s.lr)
    grid = [glue_line(s, s.recipe, score) for s, score in zip(grid_specs, [0.7, 0.8, 0.75])]
    lines = list(grid)
    for (task, step), score in scores.items():
        spec = next(s for s in suite.protocol_runs("check") if s.task == task and s.lr_step == step)
        recipe = resolved_recipe(spec, suite, keyed(grid))
        assert recipe is not None
        lines.append(glue_line(spec, recipe, score))
    return lines


def test_a_per_task_check_gives_each_task_its_own_lr(per_task):
    lrs = sorted(s.lr for s in per_task.protocol_runs("grid"))
    # SST-2 keeps the grid's choice; on MRPC the lower lr wins
    lines = per_task_lines(per_task, {("sst2", 0): 0.85, ("sst2", -1): 0.80, ("mrpc", 0): 0.68, ("mrpc", -1): 0.81})
    main = {s.task: s for s in per_task.protocol_runs("main") if s.seed == 1}
    sst2_lr, why = choose_lr(main["sst2"], per_task, keyed(lines))
    assert sst2_lr == lrs[1] and "for sst2" in why
    assert choose_lr(main["mrpc"], per_task, keyed(lines))[0] == lrs[0]
    # pooled over tasks (without lr_per_task) both tasks would get one lr: the mean favours lrs[0] here
    assert steps_choice(per_task, "check", "lora", keyed(lines))[0] == lrs[0]
    # one task still waiting holds back that task only
    partial = per_task_lines(per_task, {("sst2", 0): 0.85, ("sst2", -1): 0.80, ("mrpc", 0): 0.68})
    assert choose_lr(main["sst2"], per_task, keyed(partial))[0] == lrs[1]
    lr, why = choose_lr(main["mrpc"], per_task, keyed(partial))
    assert lr is None and "waiting for 1 run(s) of check (arm lora, mrpc)" in why


def test_a_per_task_checks_docs_table_has_a_row_per_arm_and_task(per_task, tmp_path):
    lines = per_task_lines(per_task, {("sst2", 0): 0.85, ("sst2", -1): 0.80, ("mrpc", 0): 0.68, ("mrpc", -1): 0.81})
    results = tmp_path / "quality.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    out = tmp_path / "benchmarks.md"
    write_benchmarks_doc(per_task, results, out, runs_dir=tmp_path / "runs")
    md = out.read_text(encoding="utf-8")
    section = md[md.index("## Protocol `check`"):md.index("## Protocol `main`")]
    rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in section.splitlines()
            if r.startswith("| lora ")]
    lrs = sorted(s.lr for s in per_task.protocol_runs("grid"))
    assert [(r[1], r[-1]) for r in rows] == [("sst2", f"{lrs[1]:g}"), ("mrpc", f"{lrs[0]:g}")]
    assert rows[1][3].startswith("**") and "lr_per_task" in section


@pytest.mark.parametrize("body, message", [
    (GRID.replace("task: e2e", "task: glue") + "check: {task: glue, lr_from: grid, lr_per_task: true, "
     "arms: {lora: {method: lora}}}\n", "lr_per_task: only with lr_steps"),
    (GRID.replace("task: e2e", "task: glue") + "check: {task: glue, lr_from: grid, lr_steps: [0], lr_per_task: 1, "
     "arms: {lora: {method: lora}}}\n", "expected true or false"),
    (GRID.replace("task: e2e", "task: glue") + "check: {task: glue, glue_tasks: [sst2], lr_from: grid, "
     "lr_steps: [0, -1], lr_per_task: true, arms: {lora: {method: lora}}}\n"
     "main: {task: glue, glue_tasks: [sst2, cola], lr_from: check, arms: {lora: {method: lora}}}\n",
     "checked none for cola"),
])
def test_bad_lr_per_task_fails_before_anything_runs(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(write_suite(tmp_path, body))
