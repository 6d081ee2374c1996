"""Quality-suite files: protocols x arms x seeds, checked and expanded into ordinary `peftlab train` recipes.

A suite file (``benchmarks/quality/suite.yaml``) is a YAML mapping::

    version: 1
    protocols:
      e2e-mini:                      # one evaluation protocol: a task, a model, a budget
        task: e2e                    # e2e | glue
        model: smollm2-135m
        glue_tasks: [sst2, mrpc]     # glue only: every arm runs on every task
        seeds: [0, 1, 2]
        steps: 1000                  # optim.max_steps of every arm
        compile: auto                # run.compile where the method supports it (auto | true | false)
        overrides: {run.bf16: true}  # dotted recipe keys, applied to every arm
        lr_grid: [3.0e-4, 1.0e-3]    # optional: every arm becomes ARM@lr=X (one run per value)
        lr_grid_factors: [0.333, 1, 3]  # optional, instead: X = factor * the arm's recipe lr (same grid size)
        lr_grid_extend: 2            # optional (default 0): up to 2 more lrs beyond an edge the best lr lands on
        lr_select_tolerance: 0.005   # optional (default 0): the smallest lr within 0.5% of the best score is chosen
        lr_from: lr-grid-e2e         # optional: every arm's optim.lr is the value that protocol's grid chose
        lr_steps: [0, -1]            # optional, with lr_from: every arm becomes ARM@lr-step=K, at the lr_from choice
                                     # moved K places along that arm's grid values (-1: the next smaller one)
        lr_per_task: true            # optional, with lr_steps: the choice is made per task (GLUE: each task its lr)
        prefix_lengths: [5, 10]      # optional: every arm becomes ARM@L with method_args.num_virtual_tokens = L
        arms:
          lora:
            method: lora
            method_args: {r: 4, lora_alpha: 32, target_modules: [q, v]}   # replaces the recipe's method_args
            overrides: {optim.weight_decay: 0.0}
            seeds: [0]               # optional: this arm's own seeds
            lr_arm: lora             # the lr_from protocol's arm whose choice applies (default: the arm's name)
            compile: false           # optional: this arm's own compile choice (default: the protocol's)
          template:
            baseline: template_full  # not trained: the official scores of a fixed hypothesis file (E2E)

``lr_grid_extend: N`` makes the grid adaptive and the same procedure for every arm: once every grid run of an arm
(every task and seed) is done and the best mean dev score is at the grid's largest (smallest) lr, one more lr beyond
that edge runs, ``edge * r`` (``edge / r``) with ``r`` the ratio of the two outermost grid values on that side
(``[0.333, 1, 3, 9]``: x27 above, x0.111 below), rounded to 3 significant digits like the grid; again, up to N times
per side, each time only while the newest point is still the best. These conditional runs are expanded up front
(:attr:`RunSpec.grid_extension`, :attr:`RunSpec.extension_side`); the runner decides which are needed.

``lr_select_tolerance: T`` makes the choice conservative, by one rule for every arm: among the grid's lrs (and its
needed extensions), the smallest whose mean best dev score is within ``T * |best score|`` of the best is chosen. A
short grid favours the hottest lr that has not diverged yet; a near tie says the grid cannot tell the two apart, and
the smaller one is the safer choice for a longer run. The extensions still follow the strict best.

``lr_steps: [0, -1]`` (with ``lr_from``) re-checks a short grid's choice at another budget: each arm runs at the lr
the grid chose and at its next smaller grid value (moved K places along the sorted lrs the arm's grid ran; beyond the
smallest, by the ratio of the two smallest). Such a protocol is itself a source for ``lr_from`` (the best of its
lrs by mean dev score, with its own ``lr_select_tolerance``), so a main protocol can take its lr from a check run at
its own budget. With ``lr_per_task: true`` that choice is made for each task on its own runs (a GLUE task's lr
from its own dev score; the tasks' metrics differ, and one lr need not suit them all), and a protocol that takes its
lr from it must run only tasks it checked. A run whose recipe equals a result line of another protocol (same seed)
is not trained twice: the runner copies that line (``adopted_from``), or continues the other run's half-done
folder.

Each arm starts from the shipped recipe ``<task>/<model>/<method>`` (``peftlab recipes ls``; built-in defaults if
there is none). Everything is checked before anything runs: unknown keys, unknown methods, recipe keys and method fields
raise :class:`~peftlab.errors.ConfigError` naming the suite file and the key path.
"""
from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..train.methods import build_method_config
from ..train.recipe import OptimArgs, _yaml_load, apply_overrides, load_recipe_dict, recipe_from_dict
from ..train.tasks import TASK_TYPES

SUITE_KEYS = {"version", "description", "protocols"}
PROTOCOL_KEYS = {"task", "model", "glue_tasks", "seeds", "steps", "compile", "overrides", "lr_grid",
                 "lr_grid_factors", "lr_grid_extend", "lr_select_tolerance", "lr_from", "lr_steps",
                 "lr_per_task", "prefix_lengths", "arms", "description"}
ARM_KEYS = {"method", "method_args", "overrides", "seeds", "lr_arm", "compile", "baseline", "note"}
BASELINES = {"template_full"}
"""Rows that are not trained: keys of ``data/e2e/metric_check/official_scores.json``."""


@dataclass
class RunSpec:
    """One run of the suite: a (protocol, task, arm, seed) and the recipe that trains it."""

    protocol: str
    task: str  # "e2e" or the GLUE task name
    arm: str
    seed: int
    method: str
    recipe: dict[str, Any] = field(default_factory=dict)
    base_arm: str = ""  # the arm before lr-grid / prefix-length expansion
    lr: float | None = None  # the grid value of an lr-grid run
    grid_extension: int = 0  # k > 0: the k-th conditional lr beyond the grid's edge (lr_grid_extend)
    extension_side: str | None = None  # "up" (beyond the largest lr) or "down" (beyond the smallest)
    prefix_length: int | None = None
    lr_from: str | None = None  # protocol whose grid sets this run's lr (resolved by the runner)
    lr_arm: str | None = None
    lr_step: int | None = None  # lr_steps: places moved along the lr_from arm's grid values from its choice
    baseline: str | None = None
    compile: bool = False
    note: str = ""

    @property
    def key(self) -> str:
        return result_key(self.protocol, self.task, self.arm, self.seed)

    def run_dir(self, runs_dir: Path) -> Path:
        return Path(runs_dir) / self.protocol / self.task / self.arm / f"seed{self.seed}"


def result_key(protocol: str, task: str, arm: str, seed: int) -> str:
    return f"{protocol}/{task}/{arm}/seed{seed}"


@dataclass
class Suite:
    path: Path
    protocols: dict[str, dict[str, Any]]
    runs: list[RunSpec]

    def protocol_runs(self, name: str) -> list[RunSpec]:
        return [run for run in self.runs if run.protocol == name]


def _suggest(key: str, valid: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _check_keys(data: Any, valid: set[str], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    for key in data:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}{_suggest(str(key), valid)}")
    return data


def _mapping(data: Any, where: str) -> dict[str, Any]:
    """Any mapping (keys are names chosen by the user); an empty one is refused where it is checked."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    return data


def _int_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                                             for v in value):
        raise ConfigError(f"{where}: expected a non-empty list of integers, got {value!r}")
    return list(value)


def _dotted(overrides: Any, where: str) -> list[str]:
    """``{optim.lr: 1e-3}`` -> ``["optim.lr=0.001"]`` (values kept exactly through JSON)."""
    _mapping(overrides, where)
    return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]


def shipped_recipe(task: str, model: str, method: str) -> dict[str, Any]:
    """The shipped recipe for (task, model, method), or the built-in defaults."""
    from ..train.cli import find_recipe

    path = find_recipe(task, model, method)
    return load_recipe_dict(path) if path else {"task": task, "method": method}


def load_suite(path: str | Path) -> Suite:
    """Read, check and expand a suite file (raises ConfigError before anything runs)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: suite file not found")
    try:
        data = _yaml_load(path.read_text(encoding="utf-8"))
    except Exception as err:  # yaml.YAMLError and friends
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    data = _check_keys(data, SUITE_KEYS, str(path))
    if data.get("version", 1) != 1:
        raise ConfigError(f"{path}: version: expected 1, got {data.get('version')!r}")
    protocols = _mapping(data.get("protocols"), f"{path}: protocols")
    if not protocols:
        raise ConfigError(f"{path}: protocols: give at least one protocol")
    runs: list[RunSpec] = []
    for name, protocol in protocols.items():
        runs.extend(_expand_protocol(path, str(name), protocol, protocols))
    keys = [run.key for run in runs]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise ConfigError(f"{path}: two arms expand to the same run {duplicated[0]!r}; rename one")
    return Suite(path, protocols, runs)


def _expand_protocol(path: Path, name: str, protocol: Any, protocols: dict[str, Any]) -> list[RunSpec]:
    where = f"{path}: protocols.{name}"
    protocol = _check_keys(protocol, PROTOCOL_KEYS, where)
    task = protocol.get("task")
    if task not in TASK_TYPES:
        raise ConfigError(f"{where}.task: expected one of {sorted(TASK_TYPES)}, got {task!r}")
    model = protocol.get("model") or ("smollm2-135m" if task == "e2e" else "minilm-l6")
    tasks = [task]
    if task == "glue":
        tasks = protocol.get("glue_tasks") or ["sst2"]
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise ConfigError(f"{where}.glue_tasks: expected a list of GLUE task names, got {tasks!r}")
    elif "glue_tasks" in protocol:
        raise ConfigError(f"{where}.glue_tasks: only for task: glue")
    seeds = _int_list(protocol.get("seeds", [0]), f"{where}.seeds")
    compile_choice = protocol.get("compile", "auto")
    if compile_choice not in ("auto", True, False):
        raise ConfigError(f"{where}.compile: expected auto, true or false, got {compile_choice!r}")
    base_overrides = _dotted(protocol.get("overrides") or {}, f"{where}.overrides")
    if protocol.get("steps") is not None:
        steps = protocol["steps"]
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ConfigError(f"{where}.steps: expected a positive number of optimizer steps, got {steps!r}")
        base_overrides.append(f"optim.max_steps={steps}")
    lr_grid = protocol.get("lr_grid")
    factors = protocol.get("lr_grid_factors")
    for key, values in (("lr_grid", lr_grid), ("lr_grid_factors", factors)):
        if values is not None and (not isinstance(values, list) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)):
            raise ConfigError(f"{where}.{key}: expected a non-empty list of positive numbers, got {values!r}")
    if lr_grid is not None and factors is not None:
        raise ConfigError(f"{where}: lr_grid and lr_grid_factors exclude each other")
    has_grid = lr_grid is not None or factors is not None
    extend = protocol.get("lr_grid_extend", 0)
    if not isinstance(extend, int) or isinstance(extend, bool) or extend < 0:
        raise ConfigError(f"{where}.lr_grid_extend: expected a number of extra lrs per grid edge (an integer >= 0), "
                          f"got {extend!r}")
    if extend and not has_grid:
        raise ConfigError(f"{where}.lr_grid_extend: only with lr_grid or lr_grid_factors")
    if extend and len(set(float(v) for v in (lr_grid if lr_grid is not None else factors))) < 2:
        raise ConfigError(f"{where}.lr_grid_extend: needs a grid of at least 2 different values (the step beyond an "
                          "edge is the ratio of the two outermost values)")
    tolerance = protocol.get("lr_select_tolerance", 0.0)
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not 0 <= tolerance < 1:
        raise ConfigError(f"{where}.lr_select_tolerance: expected a relative tolerance in [0, 1) (0.005: 0.5%), got "
                          f"{tolerance!r}")
    lr_from = protocol.get("lr_from")
    lr_steps = protocol.get("lr_steps")
    if lr_steps is not None:
        lr_steps = _int_list(lr_steps, f"{where}.lr_steps")
        if len(set(lr_steps)) < len(lr_steps):
            raise ConfigError(f"{where}.lr_steps: a step is listed twice ({lr_steps})")
        if lr_from is None:
            raise ConfigError(f"{where}.lr_steps: only with lr_from (the steps move along that protocol's lr grid)")
    per_task = protocol.get("lr_per_task", False)
    if not isinstance(per_task, bool):
        raise ConfigError(f"{where}.lr_per_task: expected true or false, got {per_task!r}")
    if per_task and lr_steps is None:
        raise ConfigError(f"{where}.lr_per_task: only with lr_steps (each task's choice among its lr steps)")
    if tolerance and not has_grid and lr_steps is None:
        raise ConfigError(f"{where}.lr_select_tolerance: only with lr_grid, lr_grid_factors or lr_steps")
    if lr_from is not None:
        source = protocols.get(lr_from) if isinstance(lr_from, str) else None
        if not isinstance(source, dict) or not is_lr_source(source):
            raise ConfigError(f"{where}.lr_from: {lr_from!r} is not a protocol of this suite with an lr grid "
                              "or lr_steps")
        if has_grid:
            raise ConfigError(f"{where}: an lr grid and lr_from exclude each other")
        if lr_steps is not None and source.get("lr_steps") is not None:
            raise ConfigError(f"{where}.lr_steps: lr_from {lr_from!r} has lr_steps itself; take lr_from from a "
                              "protocol with an lr grid")
        if source.get("lr_per_task"):
            checked = (source.get("glue_tasks") or ["sst2"]) if source.get("task") == "glue" else [source.get("task")]
            unchecked = [t for t in tasks if t not in checked] if source.get("task") == task else tasks
            if unchecked:
                raise ConfigError(f"{where}.lr_from: {lr_from!r} chooses an lr per task (lr_per_task) and checked none "
                                  f"for {', '.join(map(str, unchecked))} (only {', '.join(map(str, checked))})")
    lengths = protocol.get("prefix_lengths")
    if lengths is not None:
        lengths = _int_list(lengths, f"{where}.prefix_lengths")
    arms = _mapping(protocol.get("arms"), f"{where}.arms")
    if not arms:
        raise ConfigError(f"{where}.arms: give at least one arm")

    runs: list[RunSpec] = []
    for arm_name, arm in arms.items():
        arm_where = f"{where}.arms.{arm_name}"
        arm = _check_keys(arm if arm is not None else {}, ARM_KEYS, arm_where)
        arm_seeds = _int_list(arm["seeds"], f"{arm_where}.seeds") if "seeds" in arm else seeds
        if "baseline" in arm:
            if arm["baseline"] not in BASELINES or task != "e2e":
                raise ConfigError(f"{arm_where}.baseline: expected one of {sorted(BASELINES)} (E2E only), got "
                                  f"{arm['baseline']!r}")
            runs.append(RunSpec(name, task, str(arm_name), 0, "template", base_arm=str(arm_name),
                                baseline=arm["baseline"], note=str(arm.get("note", ""))))
            continue
        method = arm.get("method")
        if not isinstance(method, str):
            raise ConfigError(f"{arm_where}.method: give the method name (peftlab methods), got {method!r}")
        for glue_task in tasks:
            recipe = copy.deepcopy(shipped_recipe(task, model, method))
            # (label, overrides, grid lr, prefix length, (extension side, k))
            variants: list[tuple[str, list[str], float | None, int | None, tuple[str | None, int]]] = [
                (str(arm_name), [], None, None, (None, 0))]
            points: list[tuple[float, tuple[str | None, int]]] = []
            if lr_grid is not None:
                points = [(float(lr), (None, 0)) for lr in lr_grid]
                points += [(lr, (side, k)) for side, k, lr in extension_values(lr_grid, extend)]
            elif factors is not None:
                base_lr = float(apply_overrides(recipe, base_overrides + arm_overrides_of(arm, arm_where)).get(
                    "optim", {}).get("lr", OptimArgs.lr))
                points = [(float(f"{base_lr * f:.3g}"), (None, 0)) for f in factors]
                points += [(lr, (side, k)) for side, k, lr in extension_values(factors, extend, base_lr)]
            if points:
                lrs = [lr for lr, _ in points]
                if len(set(lrs)) < len(lrs) and extend:
                    raise ConfigError(f"{where}.lr_grid_extend: an lr beyond the grid's edge rounds to a value the "
                                      f"grid already has ({', '.join(f'{lr:g}' for lr in lrs)}); spread the grid")
                variants = [(f"{n}@lr={lr:g}", o + [f"optim.lr={json.dumps(float(lr))}"], float(lr), pl, ext)
                            for n, o, _, pl, _ in variants for lr, ext in points]
            if lengths:
                variants = [(f"{n}@{length}", o + [f"method_args.num_virtual_tokens={length}"], lr, length, ext)
                            for n, o, lr, _, ext in variants for length in lengths]
            steps_of: dict[str, int] = {}  # label -> lr step (lr_steps: the lr is resolved by the runner)
            if lr_steps is not None:
                stepped = []
                for n, o, lr, length, ext in variants:
                    for k in lr_steps:
                        steps_of[f"{n}@lr-step={k}"] = k
                        stepped.append((f"{n}@lr-step={k}", o, lr, length, ext))
                variants = stepped
            if "method_args" in arm:
                if not isinstance(arm["method_args"], dict):
                    raise ConfigError(f"{arm_where}.method_args: expected a mapping of the method's fields")
                recipe["method_args"] = copy.deepcopy(arm["method_args"])
            shared = [f"task={task}", f"method={method}", f"model.name={model}"]
            if task == "glue":
                shared.append(f"data.glue_task={glue_task}")
            arm_overrides = arm_overrides_of(arm, arm_where)
            arm_compile = arm.get("compile", compile_choice)
            if arm_compile not in ("auto", True, False):
                raise ConfigError(f"{arm_where}.compile: expected auto, true or false, got {arm_compile!r}")
            use_compile = _compile_choice(arm_compile, method, recipe, arm_where)
            for arm_label, extra, lr, length, (side, k) in variants:
                for seed in arm_seeds:
                    overrides = shared + base_overrides + arm_overrides + extra + [f"run.seed={seed}",
                                                                                  f"run.compile={str(use_compile).lower()}"]
                    resolved = apply_overrides(recipe, overrides)
                    _check_recipe(resolved, f"{arm_where} ({arm_label}, seed {seed})")
                    runs.append(RunSpec(name, glue_task if task == "glue" else "e2e", arm_label, seed, method,
                                        resolved, base_arm=str(arm_name), lr=lr, prefix_length=length,
                                        grid_extension=k, extension_side=side,
                                        lr_from=lr_from, lr_arm=str(arm.get("lr_arm", arm_name)) if lr_from else None,
                                        lr_step=steps_of.get(arm_label),
                                        compile=use_compile, note=str(arm.get("note", ""))))
    if lr_from:
        grid_arms = set(_mapping(protocols[lr_from].get("arms"),
                                    f"{path}: protocols.{lr_from}.arms"))
        for run in runs:
            if run.baseline is None and run.lr_arm not in grid_arms:
                raise ConfigError(f"{where}.arms.{run.base_arm}.lr_arm: {run.lr_arm!r} is not an arm of {lr_from!r} "
                                  f"(arms: {', '.join(sorted(grid_arms))})")
    # seed-major order (stable): a suite cut short has every arm at its first seeds rather than a few arms at all
    return sorted(runs, key=lambda run: run.seed)


def is_lr_source(protocol: dict[str, Any]) -> bool:
    """Whether another protocol may take its lr from this one (``lr_from``): it has an lr grid, or lr_steps."""
    return bool(protocol.get("lr_grid") or protocol.get("lr_grid_factors") or protocol.get("lr_steps"))


def extension_values(grid: list[float], extend: int, scale: float = 1.0) -> list[tuple[str, int, float]]:
    """The conditional lrs beyond a grid's edges: ``(side, k, lr)`` for side "up" then "down", k = 1..extend.
    The k-th value above is ``top * r**k`` (below: ``bottom / r**k``), r the ratio of the two outermost grid values
    on that side, times ``scale`` (the recipe lr of a factor grid), rounded to 3 significant digits like the grid."""
    ordered = sorted({float(v) for v in grid})
    if extend <= 0 or len(ordered) < 2:
        return []
    out = []
    for side, edge, inner in (("up", ordered[-1], ordered[-2]), ("down", ordered[0], ordered[1])):
        ratio = edge / inner
        out += [(side, k, float(f"{scale * edge * ratio ** k:.3g}")) for k in range(1, extend + 1)]
    return out


def arm_overrides_of(arm: dict[str, Any], where: str) -> list[str]:
    return _dotted(arm.get("overrides") or {}, f"{where}.overrides")


def _compile_choice(choice: Any, method: str, recipe: dict[str, Any], where: str) -> bool:
    if choice is False:
        return False
    from ..registry import get_method

    try:
        config = build_method_config(method, recipe.get("method_args") or {}, TASK_TYPES[recipe.get("task", "e2e")])
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    supported = get_method(config).tuner_cls.supports_compile
    if choice is True and not supported:
        raise ConfigError(f"{where}: compile: true, but method {method!r} does not support run.compile")
    return bool(supported)


def _check_recipe(data: dict[str, Any], where: str) -> None:
    """The recipe parses (known keys, right types) and its method config builds (known method and fields)."""
    try:
        recipe = recipe_from_dict(data, source="recipe")
        build_method_config(recipe.method, recipe.method_args, TASK_TYPES[recipe.task])
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
