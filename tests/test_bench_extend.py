"""lr_grid_extend: the lr grid runs one more lr beyond an edge its best lands on, the same rule for every arm.

Fake result lines only (no training, no models): expansion and checks of the key, needed / not needed / waiting at
the top and bottom edges, chained extensions up to N, choose_lr waiting for a needed extension, run_suite running a
needed extension in the same invocation (training replaced by a fake), and the docs' lr-grid table and status counts.
"""
from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import pytest

from peftlab import ConfigError
from peftlab.bench import runner
from peftlab.bench.docs import write_benchmarks_doc
from peftlab.bench.lr_choice import NOT_NEEDED, choose_lr, extension_states
from peftlab.bench.recipes import normalised_recipe
from peftlab.bench.runner import plan, run_suite
from peftlab.bench.suite import Suite, extension_values, load_suite

FACTORS = (0.333, 1.0, 3.0, 9.0)

SUITE_YAML = """\
version: 1
protocols:
  grid:
    task: e2e
    model: smollm2-135m
    seeds: [0, 1]
    steps: 10
    compile: false
    lr_grid_factors: [0.333, 1.0, 3.0, 9.0]
    lr_grid_extend: 2
    arms:
      lora: {method: lora}
      solo: {method: solo}
  main:
    task: e2e
    model: smollm2-135m
    seeds: [0]
    steps: 20
    compile: false
    lr_from: grid
    arms:
      lora: {method: lora}
      solo: {method: solo}
"""


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Suite:
    path = tmp_path_factory.mktemp("extend") / "suite.yaml"
    path.write_text(SUITE_YAML, encoding="utf-8")
    return load_suite(path)


def write_suite(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text("version: 1\nprotocols:\n" + textwrap.indent(textwrap.dedent(body), "  "), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------- helpers
def specs(suite: Suite, arm: str, seed: int | None = None, protocol: str = "grid"):
    return [s for s in suite.runs if s.protocol == protocol and s.base_arm == arm and (seed is None or s.seed == seed)]


def grid_lrs(suite: Suite, arm: str) -> list[float]:
    """The arm's grid lrs in factor order (x0.333, x1, x3, x9)."""
    return [s.lr for s in specs(suite, arm, 0) if not s.grid_extension]


def ext_lr(suite: Suite, arm: str, side: str, k: int) -> float:
    return next(s.lr for s in specs(suite, arm, 0) if (s.extension_side, s.grid_extension) == (side, k))


_recipes: dict[str, dict[str, Any]] = {}


def result(suite: Suite, arm: str, lr: float, seed: int, loss: float, **extra: Any) -> dict[str, Any]:
    """A result line of grid run ARM@lr=LR at ``seed`` with best dev loss ``loss`` (its recipe is current)."""
    spec = next(s for s in specs(suite, arm, seed) if s.lr == lr)
    if spec.key not in _recipes:
        _recipes[spec.key] = normalised_recipe(spec.recipe)
    record = {"protocol": spec.protocol, "task": spec.task, "arm": spec.arm, "base_arm": arm, "method": spec.method,
              "seed": seed, "metrics": {"BLEU": 0.5}, "dev": {"dev_loss": loss}, "selection": -loss, "lr": lr,
              "train_seconds": 100.0, "recipe": _recipes[spec.key]}
    if spec.grid_extension:
        record.update(grid_extension=spec.grid_extension, grid_extension_side=spec.extension_side)
    record.update(extra)
    return record


def lines_for(suite: Suite, arm: str, losses: dict[float, float], seeds=(0, 1)) -> list[dict[str, Any]]:
    return [result(suite, arm, lr, seed, loss) for lr, loss in losses.items() for seed in seeds]


def as_results(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{r['protocol']}/{r['task']}/{r['arm']}/seed{r['seed']}": r for r in records}


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def statuses(suite: Suite, tmp_path: Path, records: list[dict[str, Any]], arm: str) -> dict[tuple[str, int], set]:
    """{(side, k): the plan statuses of that extension's runs (every seed)} for one grid arm."""
    planned = plan(suite, write_lines(tmp_path / "quality.jsonl", records), tmp_path / "runs")
    out: dict[tuple[str, int], set] = {}
    for p in planned:
        if p.spec.protocol == "grid" and p.spec.base_arm == arm and p.spec.grid_extension:
            out.setdefault((p.spec.extension_side, p.spec.grid_extension), set()).add(p.status)
    return out


def main_spec(suite: Suite, arm: str):
    return specs(suite, arm, protocol="main")[0]


def cells(md: str, heading: str, first: str) -> tuple[list[str], list[str]]:
    """(header, row) of the table under ``heading`` whose row starts with ``first``."""
    text = md[md.index(heading):]
    rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in text.splitlines() if r.startswith("|")]
    return rows[0], next(r for r in rows if r[0] == first)


# ------------------------------------------------------------------------------------------------------- expansion
def test_extension_runs_are_expanded_like_grid_runs(suite, tmp_path):
    lora = specs(suite, "lora", 0)
    base = 0.001  # lora's recipe lr on E2E / SmolLM2
    assert grid_lrs(suite, "lora") == [float(f"{base * f:.3g}") for f in FACTORS]
    extensions = [(s.arm, s.extension_side, s.grid_extension) for s in lora if s.grid_extension]
    assert extensions == [("lora@lr=0.027", "up", 1), ("lora@lr=0.081", "up", 2),
                          ("lora@lr=0.000111", "down", 1), ("lora@lr=3.69e-05", "down", 2)]
    ext = next(s for s in lora if s.arm == "lora@lr=0.027")
    assert ext.recipe["optim"]["lr"] == 0.027 and ext.lr == 0.027 and ext.recipe["optim"]["max_steps"] == 10
    assert ext.run_dir(tmp_path) == tmp_path / "grid" / "e2e" / "lora@lr=0.027" / "seed0"
    assert {s.seed for s in specs(suite, "lora") if s.grid_extension} == {0, 1}
    assert not any(s.grid_extension for s in suite.protocol_runs("main"))
    # x27 above (9 * 9/3) and x0.111 below (0.333 / (1/0.333)); an absolute grid works the same way
    assert extension_values([0.333, 1, 3, 9], 1) == [("up", 1, 27.0), ("down", 1, 0.111)]
    assert extension_values([1e-3, 4e-3], 2) == [("up", 1, 0.016), ("up", 2, 0.064), ("down", 1, 0.00025),
                                                 ("down", 2, 6.25e-05)]
    assert extension_values([1e-3, 4e-3], 0) == []


def test_without_the_key_nothing_changes(tmp_path):
    suite = load_suite(write_suite(tmp_path, "g: {task: e2e, lr_grid: [0.001, 0.003], arms: {a: {method: lora}}}"))
    assert [s.arm for s in suite.runs] == ["a@lr=0.001", "a@lr=0.003"]
    assert extension_states(suite, "g", "a", {}) == {}


@pytest.mark.parametrize("body, message", [
    ("p: {task: e2e, lr_grid_extnd: 1, lr_grid: [0.1, 0.2], arms: {a: {method: lora}}}",
     r"unknown key 'lr_grid_extnd'; did you mean 'lr_grid_extend'"),
    ("p: {task: e2e, lr_grid_extend: 1, arms: {a: {method: lora}}}", r"lr_grid_extend: only with lr_grid"),
    ("p: {task: e2e, lr_grid_extend: -1, lr_grid: [0.1, 0.2], arms: {a: {method: lora}}}",
     r"p\.lr_grid_extend: expected .*integer >= 0.*-1"),
    ("p: {task: e2e, lr_grid_extend: true, lr_grid: [0.1, 0.2], arms: {a: {method: lora}}}",
     r"lr_grid_extend: expected"),
    ("p: {task: e2e, lr_grid_extend: 1.5, lr_grid: [0.1, 0.2], arms: {a: {method: lora}}}",
     r"lr_grid_extend: expected"),
    ("p: {task: e2e, lr_grid_extend: 1, lr_grid_factors: [1.0], arms: {a: {method: lora}}}",
     r"lr_grid_extend: needs a grid of at least 2"),
    ("p: {task: e2e, lr_grid_extend: 1, lr_grid: [0.1, 0.1001], arms: {a: {method: lora}}}",
     r"lr_grid_extend: an lr beyond the grid's edge rounds to a value"),
])
def test_bad_lr_grid_extend_fails_before_anything_runs(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(write_suite(tmp_path, body))


# ------------------------------------------------------------------------------------------ needed / not needed
def test_top_edge_needs_one_more_lr_and_choose_lr_waits(suite, tmp_path):
    lrs = grid_lrs(suite, "lora")
    records = lines_for(suite, "lora", dict(zip(lrs, (3.13, 2.96, 2.87, 2.86))))
    assert statuses(suite, tmp_path, records, "lora") == {("up", 1): {"missing"}, ("up", 2): {"waiting"},
                                                          ("down", 1): {NOT_NEEDED}, ("down", 2): {NOT_NEEDED}}
    planned = {p.spec.key: p for p in plan(suite, tmp_path / "quality.jsonl", tmp_path / "runs")}
    needed = planned["grid/e2e/lora@lr=0.027/seed1"]
    assert "needed" in needed.reason and "0.009" in needed.reason
    assert "waiting for extension 1 (0.027)" in planned["grid/e2e/lora@lr=0.081/seed0"].reason
    assert planned["grid/e2e/lora@lr=0.081/seed0"].conditional and not needed.conditional
    # the arm's lr is not chosen while the needed extension is missing, and the protocol using it waits
    lr, why = choose_lr(main_spec(suite, "lora"), suite, as_results(records))
    assert lr is None and "waiting for 2 lr-grid extension run(s)" in why and "lora@lr=0.027" in why
    assert planned["main/e2e/lora/seed0"].status == "waiting"
    # one seed of the extension done is not enough
    partial = records + [result(suite, "lora", 0.027, 0, 2.90)]
    assert choose_lr(main_spec(suite, "lora"), suite, as_results(partial))[0] is None
    # both done: the extension is one of the values; worse than x9 here, so x9 is chosen and x81 is not needed
    done = partial + [result(suite, "lora", 0.027, 1, 2.90)]
    lr, why = choose_lr(main_spec(suite, "lora"), suite, as_results(done))
    assert lr == lrs[3] and "5 values, 1 beyond the grid" in why


def test_interior_best_needs_no_extension(suite, tmp_path):
    lrs = grid_lrs(suite, "lora")
    records = lines_for(suite, "lora", dict(zip(lrs, (3.13, 2.96, 2.80, 2.86))))
    assert statuses(suite, tmp_path, records, "lora") == {c: {NOT_NEEDED} for c in
                                                          (("up", 1), ("up", 2), ("down", 1), ("down", 2))}
    assert choose_lr(main_spec(suite, "lora"), suite, as_results(records))[0] == lrs[2]
    planned = plan(suite, tmp_path / "quality.jsonl", tmp_path / "runs")
    lora_grid = [p for p in planned if p.spec.protocol == "grid" and p.spec.base_arm == "lora"]
    assert [p.status for p in lora_grid].count("done") == 8 and not any(p.status == "missing" for p in lora_grid)


def test_bottom_edge_extends_downwards(suite, tmp_path):
    lrs = grid_lrs(suite, "solo")
    records = lines_for(suite, "solo", dict(zip(lrs, (2.70, 2.80, 2.90, 3.00))))
    assert statuses(suite, tmp_path, records, "solo") == {("up", 1): {NOT_NEEDED}, ("up", 2): {NOT_NEEDED},
                                                          ("down", 1): {"missing"}, ("down", 2): {"waiting"}}
    down = ext_lr(suite, "solo", "down", 1)
    assert down == float(f"{lrs[0] / (lrs[1] / lrs[0]):.3g}")
    assert choose_lr(main_spec(suite, "solo"), suite, as_results(records))[0] is None


def test_mean_over_seeds_decides_and_ties_take_the_smaller_lr(suite, tmp_path):
    lrs = grid_lrs(suite, "lora")
    # seed 0 is best at the top, but the mean is best at x3: not needed
    records = [result(suite, "lora", lr, 0, loss) for lr, loss in zip(lrs, (3.0, 2.9, 2.8, 2.7))]
    records += [result(suite, "lora", lr, 1, loss) for lr, loss in zip(lrs, (3.0, 2.9, 2.6, 2.9))]
    assert statuses(suite, tmp_path, records, "lora")[("up", 1)] == {NOT_NEEDED}
    # a grid not done at every seed decides nothing yet
    assert statuses(suite, tmp_path, records[:4], "lora")[("up", 1)] == {"waiting"}
    # a tie between x3 and x9: the smaller lr is the best, so the top edge is not
    tie = lines_for(suite, "lora", dict(zip(lrs, (3.0, 2.9, 2.8, 2.8))))
    assert statuses(suite, tmp_path, tie, "lora")[("up", 1)] == {NOT_NEEDED}
    assert choose_lr(main_spec(suite, "lora"), suite, as_results(tie))[0] == lrs[2]


def test_select_tolerance_takes_the_smallest_lr_within_it_and_extensions_follow_the_strict_best(tmp_path):
    body = SUITE_YAML.replace("    lr_grid_extend: 2\n", "    lr_grid_extend: 2\n    lr_select_tolerance: 0.005\n", 1)
    path = tmp_path / "suite.yaml"
    path.write_text(body, encoding="utf-8")
    tolerant = load_suite(path)
    lrs = grid_lrs(tolerant, "lora")
    # x9 is 0.1% better than x3 (LoRA's lr-grid-e2e numbers): within 0.5%, so x3 is chosen; x1 is 3.5% behind
    records = lines_for(tolerant, "lora", dict(zip(lrs, (3.1306, 2.9632, 2.8650, 2.8617))))
    # the strict best is still the top edge, so the extension above runs all the same
    assert extension_states(tolerant, "grid", "lora", as_results(records))[("up", 1)].state == "needed"
    records += lines_for(tolerant, "lora", {ext_lr(tolerant, "lora", "up", 1): 4.6})
    lr, why = choose_lr(main_spec(tolerant, "lora"), tolerant, as_results(records))
    assert lr == lrs[2]
    assert f"the best, {lrs[3]:g}, is less than 0.50% ahead" in why
    # a lead larger than the tolerance keeps the best, with no remark
    records = lines_for(tolerant, "lora", dict(zip(lrs, (3.1306, 2.9632, 2.8650, 2.80))))
    records += lines_for(tolerant, "lora", {ext_lr(tolerant, "lora", "up", 1): 4.6})
    lr, why = choose_lr(main_spec(tolerant, "lora"), tolerant, as_results(records))
    assert lr == lrs[3] and "ahead" not in why
    # the same lines without the key choose the strict best
    plain = lines_for(suite_of(tmp_path), "lora", dict(zip(lrs, (3.1306, 2.9632, 2.8650, 2.8617))))
    plain += lines_for(suite_of(tmp_path), "lora", {ext_lr(tolerant, "lora", "up", 1): 4.6})
    assert choose_lr(main_spec(suite_of(tmp_path), "lora"), suite_of(tmp_path), as_results(plain))[0] == lrs[3]


def suite_of(tmp_path: Path) -> Suite:
    path = tmp_path / "plain" / "suite.yaml"
    if not path.exists():
        path.parent.mkdir()
        path.write_text(SUITE_YAML, encoding="utf-8")
    return load_suite(path)


@pytest.mark.parametrize("value, message", [(-0.1, "expected a relative tolerance"), (1.5, "expected a relative"),
                                            (True, "expected a relative")])
def test_bad_select_tolerance_fails_before_anything_runs(tmp_path, value, message):
    path = write_suite(tmp_path, f"p: {{task: e2e, lr_grid: [0.1, 0.2], lr_select_tolerance: {json.dumps(value)}, "
                                 "arms: {a: {method: lora}}}")
    with pytest.raises(ConfigError, match=rf"p\.lr_select_tolerance: {message}"):
        load_suite(path)
    path = write_suite(tmp_path, "p: {task: e2e, lr_select_tolerance: 0.01, arms: {a: {method: lora}}}")
    with pytest.raises(ConfigError, match="lr_select_tolerance: only with lr_grid"):
        load_suite(path)


def test_chained_extension_up_to_n_and_stop(suite, tmp_path):
    lrs = grid_lrs(suite, "lora")
    up1, up2 = ext_lr(suite, "lora", "up", 1), ext_lr(suite, "lora", "up", 2)
    grid = lines_for(suite, "lora", dict(zip(lrs, (3.1, 3.0, 2.9, 2.8))))
    # the first extension is the best again: the second is needed
    better = grid + lines_for(suite, "lora", {up1: 2.7})
    assert statuses(suite, tmp_path, better, "lora")[("up", 2)] == {"missing"}
    assert choose_lr(main_spec(suite, "lora"), suite, as_results(better))[0] is None
    # the second is the best too: the budget (2) is used up, nothing more runs, it is chosen
    best_last = better + lines_for(suite, "lora", {up2: 2.6})
    assert set().union(*statuses(suite, tmp_path, best_last, "lora").values()) == {"done", NOT_NEEDED}
    assert choose_lr(main_spec(suite, "lora"), suite, as_results(best_last))[0] == up2
    # the second is worse: the first extension is chosen
    worse = better + lines_for(suite, "lora", {up2: 2.75})
    assert choose_lr(main_spec(suite, "lora"), suite, as_results(worse))[0] == up1
    # the first extension is worse than the edge: the second is not needed and the edge lr stays
    back = grid + lines_for(suite, "lora", {up1: 2.95})
    states = extension_states(suite, "grid", "lora", as_results(back))
    assert states[("up", 1)].state == "needed" and states[("up", 2)].state == NOT_NEEDED
    assert "not the largest run (0.027)" in states[("up", 2)].reason
    assert choose_lr(main_spec(suite, "lora"), suite, as_results(back))[0] == lrs[3]


def test_a_line_of_an_extension_that_is_not_needed_is_left_out(suite, tmp_path):
    """Only the procedure's points count: a stray line of a not-needed extension does not change the choice."""
    lrs = grid_lrs(suite, "lora")
    records = lines_for(suite, "lora", dict(zip(lrs, (3.1, 2.8, 2.9, 3.0)))) + lines_for(
        suite, "lora", {ext_lr(suite, "lora", "up", 1): 2.0})
    assert statuses(suite, tmp_path, records, "lora")[("up", 1)] == {NOT_NEEDED}
    assert choose_lr(main_spec(suite, "lora"), suite, as_results(records))[0] == lrs[1]


# ------------------------------------------------------------------------------------------------------ run_suite
def test_run_suite_runs_a_needed_extension_in_the_same_invocation(suite, tmp_path, monkeypatch):
    """Training is replaced by a fake whose dev loss falls with the lr for lora (so both extensions are needed) and
    is best at x1 for solo (none is): one invocation runs the grid, the extensions, then main with the chosen lrs."""
    trained: list[str] = []

    def fake_execute(item, suite_, results_path, runs_dir, *, data_dir=None, allow_emulated_bf16=False, echo=print):
        spec = item.spec
        trained.append(spec.key)
        results = runner.latest_by_key(runner.read_results(results_path))
        recipe = runner.resolved_recipe(spec, suite_, results)
        lr = recipe["optim"]["lr"]
        loss = 2.0 + abs(math.log(lr / 0.001)) if spec.base_arm == "solo" else 3.0 - math.log(lr)
        return {"protocol": spec.protocol, "task": spec.task, "arm": spec.arm, "method": spec.method,
                "seed": spec.seed, "metrics": {"BLEU": 0.5}, "selection": -loss, "lr": lr, "lr_grid_value": spec.lr,
                "recipe": normalised_recipe(recipe), "grid_extension": spec.grid_extension}

    monkeypatch.setattr(runner, "execute", fake_execute)
    results, runs = tmp_path / "quality.jsonl", tmp_path / "runs"
    echo: list[str] = []
    recorded = run_suite(suite, results, runs, echo=echo.append)
    lora_ext = [k for k in trained if "/lora@" in k and ("0.027" in k or "0.081" in k)]
    assert sorted(lora_ext) == sorted(f"grid/e2e/lora@lr={lr}/seed{s}" for lr in ("0.027", "0.081") for s in (0, 1))
    assert not any("solo@" in k and s.grid_extension for k in trained for s in suite.runs if s.key == k)
    assert recorded == len(trained) == 8 + 4 + 8 + 2
    assert trained.index("main/e2e/lora/seed0") > max(trained.index(k) for k in lora_ext)
    lines = {r["arm"]: r for r in runner.read_results(results) if r["protocol"] == "main"}
    assert lines["lora"]["lr"] == 0.081 and lines["solo"]["lr"] == grid_lrs(suite, "solo")[1]
    final = plan(suite, results, runs)
    assert {p.status for p in final} == {"done", NOT_NEEDED} and not any("still waiting" in e for e in echo)


# ----------------------------------------------------------------------------------------------------------- docs
def render(tmp_path: Path, suite: Suite, records: list[dict[str, Any]]) -> str:
    path = write_lines(tmp_path / "quality.jsonl", records)
    out = write_benchmarks_doc(suite, path, tmp_path / "docs" / "benchmarks.md", runs_dir=tmp_path / "runs")
    return out.read_text(encoding="utf-8")


def test_docs_table_shows_extensions_and_flags_the_edge_only_when_the_budget_is_used(suite, tmp_path):
    lrs, solo_lrs = grid_lrs(suite, "lora"), grid_lrs(suite, "solo")
    # lora: x27 beat x9, x81 did not -> 0.027, inside what ran; solo: x27 and x81 both best -> x81, budget used up
    records = lines_for(suite, "lora", dict(zip(lrs, (3.1, 3.0, 2.9, 2.8))))
    records += lines_for(suite, "lora", {ext_lr(suite, "lora", "up", 1): 2.7, ext_lr(suite, "lora", "up", 2): 2.75})
    records += lines_for(suite, "solo", dict(zip(solo_lrs, (3.1, 3.0, 2.9, 2.8))))
    records += lines_for(suite, "solo", {ext_lr(suite, "solo", "up", 1): 2.7, ext_lr(suite, "solo", "up", 2): 2.6})
    md = render(tmp_path, suite, records)
    header, lora = cells(md, "## Protocol `grid`", "lora")
    # the bottom extensions were not needed anywhere: no columns for them
    assert header == ["arm", "lr × 0.333", "lr × 1", "lr × 3", "lr × 9", "lr × 27 (ext)", "lr × 81 (ext)",
                      "chosen lr"]
    assert lora[5] == "**0.027: 2.7000 ± 0.0000**" and lora[6] == "0.081: 2.7500 ± 0.0000" and lora[-1] == "0.027"
    _, solo = cells(md, "## Protocol `grid`", "solo")
    assert solo[6] == f"**{ext_lr(suite, 'solo', 'up', 2):g}: 2.6000 ± 0.0000**" and solo[-1] == "0.081 (grid edge)"
    section = md[md.index("## Protocol `grid`"):md.index("## Protocol `main`")]
    assert "3 points" not in md and "×0.333, ×1, ×3, ×9 the recipe lr" in section
    assert "lr_grid_extend: 2" in section and "no extension is left on that side" in section
    assert "lr-grid: ×0.333" not in md and "grid: ×0.333, ×1, ×3, ×9 the recipe lr, + up to 2" in md  # differences


def test_docs_table_while_extensions_are_pending(suite, tmp_path):
    lrs = grid_lrs(suite, "lora")
    records = lines_for(suite, "lora", dict(zip(lrs, (2.7, 2.8, 2.9, 3.0))))  # bottom edge: x0.111 needed
    md = render(tmp_path, suite, records)
    header, lora = cells(md, "## Protocol `grid`", "lora")
    assert header[1:3] == ["lr × 0.0369 (ext)", "lr × 0.111 (ext)"] and header[-3:-1] == ["lr × 27 (ext)",
                                                                                             "lr × 81 (ext)"]
    assert lora[1] == "?" and lora[2] == "0.000111: to run" and lora[-3:-1] == ["—", "—"]
    assert "waiting for 2 lr-grid extension run(s)" in lora[-1] and "**" not in "".join(lora)
    _, solo = cells(md, "## Protocol `grid`", "solo")
    assert solo[1:3] == ["?", "?"] and solo[-3:-1] == ["?", "?"] and "waiting for 8 run(s)" in solo[-1]


def test_docs_status_counts_needed_extensions_only(suite, tmp_path):
    lrs = grid_lrs(suite, "lora")
    records = lines_for(suite, "lora", dict(zip(lrs, (3.1, 3.0, 2.9, 2.8))))  # top edge: x27 needed (2 seeds)
    md = render(tmp_path, suite, records)
    status = md[md.index("## Status"):md.index("## Verdicts")]
    # runs: 16 grid + 2 needed extension runs; lora's 4 bottom ones are not needed and not counted; the undecided:
    # lora's x81 (2 seeds) and solo's one side (4: 2 lrs x 2 seeds)
    _, grid = cells(status, "## Status", "grid")
    assert grid[1:7] == ["18", "8", "10", "0", "0", "0"]
    assert "≈ 1,000 s" in grid[8] and "up to 6 lr-grid extension run(s)" in grid[8]
    assert "grid (8 of 18 done)" in status
    # everything decided and done: complete, and the not-needed runs are not counted
    records += lines_for(suite, "lora", {ext_lr(suite, "lora", "up", 1): 2.9})
    records += lines_for(suite, "solo", dict(zip(grid_lrs(suite, "solo"), (3.1, 2.8, 2.9, 3.0))))
    status = render(tmp_path, suite, records)
    status = status[status.index("## Status"):status.index("## Verdicts")]
    _, grid = cells(status, "## Status", "grid")
    assert grid[1:7] == ["18", "18", "0", "0", "0", "0"] and "up to" not in grid[8]
    assert "Complete: grid." in status


def test_docs_grid_edge_without_extension_budget(tmp_path):
    suite = load_suite(write_suite(tmp_path, """
        g: {task: e2e, steps: 10, compile: false, lr_grid: [0.001, 0.003], arms: {a: {method: lora}}}
    """))
    records = []
    for spec, loss in zip(suite.runs, (2.9, 2.8)):
        records.append({"protocol": "g", "task": "e2e", "arm": spec.arm, "method": "lora", "seed": 0,
                        "metrics": {"BLEU": 0.5}, "selection": -loss, "recipe": normalised_recipe(spec.recipe)})
    md = render(tmp_path, suite, records)
    header, row = cells(md, "## Protocol `g`", "a")
    assert header == ["arm", "lr 0.001", "lr 0.003", "chosen lr"] and row[-1] == "0.003 (grid edge)"
    assert "lr 0.001, 0.003" in md and "lr_grid_extend" not in md[md.index("## Protocol `g`"):]
