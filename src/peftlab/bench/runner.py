"""Run what is missing from a quality suite, one `peftlab train` run folder at a time, and append its result line.

Each run is an ordinary run folder (``RUNS/<protocol>/<task>/<arm>/seed<k>``) trained by a child process
(``python -m peftlab.cli train --recipe ...``), so a killed runner loses at most the steps since the run's last
checkpoint: the next invocation resumes the folder (``--resume``), or only harvests it when it already finished.
A run is counted once: its key (protocol, task, arm, seed) is looked up in the results file first.

An lr grid with ``lr_grid_extend: N`` has conditional runs beyond its edges (see :mod:`.suite`): each is needed
(the grid so far is done and its best lr is the newest point on that side), not needed (skipped, not missing), or
waiting (the points before it are not all done); :func:`extension_states` decides, :func:`choose_lr` waits for the
needed ones, and :func:`run_suite` re-plans after every run, so a needed extension trains in the same invocation.
"""
from __future__ import annotations

import fnmatch
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from ..errors import ConfigError, PeftlabError
from .results import append_result, latest_by_key, line_key, read_results
from .suite import RunSpec, Suite

IGNORED_RECIPE_FIELDS = (("run", "output_dir"), ("data", "data_dir"))
"""Recipe fields that may differ between machines without making a result stale."""


NOT_NEEDED = "not needed"
"""The plan status of a conditional lr-grid extension run that the grid's results do not call for."""


@dataclass
class PlannedRun:
    spec: RunSpec
    status: str  # done | stale | partial | missing | waiting | not needed
    reason: str = ""
    record: dict[str, Any] | None = None

    @property
    def conditional(self) -> bool:
        """A grid extension run whose need is not decided yet (waiting for the grid points before it)."""
        return bool(self.spec.grid_extension) and self.status == "waiting"


@dataclass
class ExtensionState:
    """Whether the conditional lr-grid runs of one (side, k) of an arm are needed."""

    state: str  # needed | not needed | waiting
    reason: str
    lr: float | None = None
    runs: list[RunSpec] = field(default_factory=list)


def comparable_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(recipe))
    for section, key in IGNORED_RECIPE_FIELDS:
        data.get(section, {}).pop(key, None)
    return data


_ABSENT = object()


def same_recipe(stored: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a result line's (or run folder's) ``stored`` recipe is the ``current`` one (both normalised, every
    field spelled out). A field the stored recipe lacks counts as equal when the current value is that field's
    default: the line was written before the field existed, and a new field's default keeps the old behaviour, so
    adding a recipe field does not make every result stale (method_args are kept as the suite gives them, not filled
    in, so a new method field never shows up). A field whose default is not what older recipes ran with
    (``recipe.LEGACY_VALUES``, e.g. ``optim.fused``) is read from a stored recipe without it as that older value.
    Any other difference does."""
    from ..train.recipe import with_legacy_values

    stored, current = comparable_recipe(with_legacy_values(stored)), comparable_recipe(current)
    defaults: dict[str, Any] | None = None
    for section in set(stored) | set(current):
        old, new = stored.get(section, _ABSENT), current.get(section, _ABSENT)
        if not (isinstance(old, dict) and isinstance(new, dict)):
            if old != new:
                return False
            continue
        for key in set(old) | set(new):
            if key in old and key in new:
                if old[key] != new[key]:
                    return False
            elif key in old:  # a field the current recipe no longer has: cannot tell what it meant
                return False
            else:
                if defaults is None:
                    defaults = _normalised({"task": current.get("task", "e2e"), "method": current.get("method")})
                if new[key] != (defaults.get(section) or {}).get(key, _ABSENT):
                    return False
    return True


def selection_score(record: dict[str, Any]) -> float | None:
    """The best dev score of a result line, higher is better (E2E: minus the dev loss)."""
    value = record.get("selection")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _mean_scores(runs: Sequence[RunSpec], results: dict[str, dict[str, Any]]) -> dict[float, float]:
    """{lr: mean best dev score over the runs of that lr} (a run without a score counts as -inf)."""
    by_lr: dict[float, list[float]] = {}
    for run in runs:
        score = selection_score(results[run.key])
        by_lr.setdefault(float(run.lr), []).append(score if score is not None else -math.inf)
    return {lr: statistics.fmean(values) for lr, values in by_lr.items()}


def _best_lr(means: dict[float, float]) -> float:
    """The lr of the best mean score; ties: the smaller lr."""
    return max(sorted(means), key=lambda lr: means[lr])


def _chosen_lr(means: dict[float, float], tolerance: float) -> float:
    """The smallest lr whose mean score is within ``tolerance * |best|`` of the best (0: :func:`_best_lr`)."""
    best = means[_best_lr(means)]
    if not math.isfinite(best):
        return _best_lr(means)
    return min(lr for lr, score in means.items() if score >= best - tolerance * abs(best))


def extension_states(suite: Suite, protocol: str, base_arm: str, results: dict[str, dict[str, Any]]
                     ) -> dict[tuple[str, int], ExtensionState]:
    """{(side, k): state} of arm ``base_arm``'s conditional runs beyond its lr grid's edges (empty without
    ``lr_grid_extend``). The points of (side, k) are the grid and the needed extensions 1..k-1 of that side, over
    every task and seed of the arm: waiting until they are all done; then needed if their best mean dev score
    (ties: the smaller lr) is the outermost of them on that side, else not needed (and so is every later k)."""
    runs = [run for run in suite.protocol_runs(protocol) if run.base_arm == base_arm and run.lr is not None]
    extensions: dict[tuple[str, int], list[RunSpec]] = {}
    for run in runs:
        if run.grid_extension:
            extensions.setdefault((str(run.extension_side), run.grid_extension), []).append(run)
    states: dict[tuple[str, int], ExtensionState] = {}
    if not extensions:
        return states
    grid = [run for run in runs if not run.grid_extension]
    missing = [run for run in grid if run.key not in results]
    for side in ("up", "down"):
        points = list(grid)
        blocked = f"waiting for {len(missing)} grid run(s) of arm {base_arm}" if missing else ""
        skipped = ""
        ks = sorted(k for s, k in extensions if s == side)
        for k in ks:
            own = extensions[(side, k)]
            lr = float(own[0].lr)
            if blocked or skipped:
                states[(side, k)] = ExtensionState("waiting" if blocked else NOT_NEEDED, blocked or skipped, lr, own)
                continue
            means = _mean_scores(points, results)
            best = _best_lr(means)
            edge = max(means) if side == "up" else min(means)
            most = "largest" if side == "up" else "smallest"
            if best != edge:
                skipped = f"the best lr {best:g} is not the {most} run ({edge:g})"
                states[(side, k)] = ExtensionState(NOT_NEEDED, skipped, lr, own)
                continue
            where = "above" if side == "up" else "below"
            states[(side, k)] = ExtensionState("needed", f"needed, extension {k} of {len(ks)} {where} the grid: the "
                                                         f"best lr {best:g} is the {most} run", lr, own)
            points += own
            not_done = [run for run in own if run.key not in results]
            if not_done:
                blocked = f"waiting for extension {k} ({lr:g}) of arm {base_arm}"
    return states


def grid_choice(suite: Suite, protocol: str, arm: str, results: dict[str, dict[str, Any]]
                ) -> tuple[float | None, str, list[float]]:
    """The lr grid protocol ``protocol`` chose for its arm ``arm``: the value with the best mean dev score over its
    runs (ties and near ties: :func:`_chosen_lr`), among the grid and its needed extensions (:func:`extension_states`);
    with it, why, and the sorted lrs it chose from. None (and why) until every grid run of that arm, and every needed
    extension run, is done."""
    runs = [run for run in suite.protocol_runs(protocol) if run.base_arm == arm]
    grid = [run for run in runs if not run.grid_extension]
    missing = [run.key for run in grid if run.key not in results]
    if missing:
        return None, f"waiting for {len(missing)} run(s) of {protocol} (arm {arm})", []
    states = extension_states(suite, protocol, arm, results)
    needed = [run for state in states.values() if state.state == "needed" for run in state.runs]
    missing = [run.key for run in needed if run.key not in results]
    if missing:
        arms = ", ".join(dict.fromkeys(run.arm for run in needed if run.key not in results))
        return None, (f"waiting for {len(missing)} lr-grid extension run(s) of {protocol} ({arms}: the best lr "
                      f"is at a grid edge)"), []
    means = _mean_scores(grid + needed, results)
    tolerance = float(suite.protocols.get(protocol, {}).get("lr_select_tolerance", 0.0))
    best, chosen = _best_lr(means), _chosen_lr(means, tolerance)
    extra = f", {len({run.lr for run in needed})} beyond the grid" if needed else ""
    why = f"lr {chosen:g} from {protocol} ({len(means)} values{extra}, mean best dev score"
    if chosen != best:
        why += f"; the best, {best:g}, is less than {tolerance:.2%} ahead: lr_select_tolerance"
    return chosen, why + ")", sorted(means)


def stepped_lr(spec: RunSpec, suite: Suite, results: dict[str, dict[str, Any]]) -> tuple[float | None, str]:
    """The lr of an ``lr_steps`` run: the choice of its ``lr_from`` grid for ``lr_arm``, moved ``lr_step`` places
    along the lrs that grid ran for that arm (beyond its ends by the ratio of the two outermost values on that side,
    rounded to 3 significant digits like the grid)."""
    chosen, why, values = grid_choice(suite, spec.lr_from or "", spec.lr_arm or "", results)
    if chosen is None or not spec.lr_step:
        return chosen, why
    index = values.index(chosen) + spec.lr_step
    if 0 <= index < len(values):
        lr = values[index]
    elif len(values) < 2:
        return None, f"{spec.lr_from} ran one lr for arm {spec.lr_arm}: no step along its grid"
    elif index < 0:
        lr = float(f"{values[0] * (values[0] / values[1]) ** -index:.3g}")
    else:
        lr = float(f"{values[-1] * (values[-1] / values[-2]) ** (index - len(values) + 1):.3g}")
    places = f"{abs(spec.lr_step)} grid place{'s' if abs(spec.lr_step) > 1 else ''}"
    return lr, f"lr {lr:g}, {places} {'below' if spec.lr_step < 0 else 'above'} the choice: {why}"


def _recorded_lr(record: dict[str, Any]) -> float | None:
    value = record.get("lr", (record.get("recipe") or {}).get("optim", {}).get("lr"))
    return float(value) if isinstance(value, (int, float)) else None


def step_line(spec: RunSpec, suite: Suite, results: dict[str, dict[str, Any]]
              ) -> tuple[float | None, str, dict[str, Any] | None]:
    """An ``lr_steps`` run's lr now (:func:`stepped_lr`), why, and its result line if that line was made at that lr
    with this run's recipe (a line from before the grid moved its choice, or before a recipe field changed, does not
    count)."""
    lr, why = stepped_lr(spec, suite, results)
    record = results.get(spec.key)
    recorded = _recorded_lr(record) if record else None
    if lr is None or recorded is None or not math.isclose(recorded, lr, rel_tol=1e-9):
        record = None
    elif "recipe" in record:  # the same lr, but another recipe (a field changed since): not this run's line
        recipe = json.loads(json.dumps(spec.recipe))
        recipe.setdefault("optim", {})["lr"] = lr
        if not same_recipe(record["recipe"], _normalised(recipe)):
            record = None
    return lr, why, record


def steps_choice(suite: Suite, protocol: str, arm: str, results: dict[str, dict[str, Any]],
                 task: str | None = None) -> tuple[float | None, str]:
    """The lr an ``lr_steps`` protocol chose for its arm ``arm``: the best mean dev score over its lr steps (with
    its ``lr_select_tolerance``), once every step has a result line at the lr it resolves to now. ``task``: only
    that task's runs (a protocol with ``lr_per_task``)."""
    runs = [run for run in suite.protocol_runs(protocol)
            if run.base_arm == arm and (task is None or run.task == task)]
    if not runs:
        return None, f"{protocol} has no run of arm {arm}{f' on {task}' if task else ''}"
    by_lr: dict[float, list[float]] = {}
    waiting = 0
    for run in runs:
        lr, why, record = step_line(run, suite, results)
        if lr is None:
            return None, why
        if record is None:
            waiting += 1
            continue
        score = selection_score(record)
        by_lr.setdefault(lr, []).append(score if score is not None else -math.inf)
    if waiting:
        return None, f"waiting for {waiting} run(s) of {protocol} (arm {arm}{f', {task}' if task else ''})"
    means = {lr: statistics.fmean(scores) for lr, scores in by_lr.items()}
    tolerance = float(suite.protocols.get(protocol, {}).get("lr_select_tolerance", 0.0))
    best, chosen = _best_lr(means), _chosen_lr(means, tolerance)
    why = (f"lr {chosen:g} from {protocol}{f' for {task}' if task else ''} "
           f"({', '.join(f'{lr:g}' for lr in sorted(means))}, mean best dev score")
    if chosen != best:
        why += f"; the best, {best:g}, is less than {tolerance:.2%} ahead: lr_select_tolerance"
    return chosen, why + ")"


def choose_lr(spec: RunSpec, suite: Suite, results: dict[str, dict[str, Any]]) -> tuple[float | None, str]:
    """The lr of a run that takes it from another protocol (``spec.lr_from``), and why; None while that protocol's
    runs for arm ``spec.lr_arm`` are not all done. An ``lr_steps`` run is moved along its grid (:func:`stepped_lr`);
    a run whose ``lr_from`` has lr_steps takes that protocol's choice (:func:`steps_choice`; for the run's own task
    where that protocol has ``lr_per_task``), else the grid's."""
    if spec.lr_step is not None:
        return stepped_lr(spec, suite, results)
    source = suite.protocols.get(spec.lr_from or "") or {}
    if source.get("lr_steps") is not None:
        return steps_choice(suite, spec.lr_from or "", spec.lr_arm or "", results,
                            task=spec.task if source.get("lr_per_task") else None)
    chosen, why, _ = grid_choice(suite, spec.lr_from or "", spec.lr_arm or "", results)
    return chosen, why


def resolved_recipe(spec: RunSpec, suite: Suite, results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    if spec.lr_from is None:
        return spec.recipe
    lr, _ = choose_lr(spec, suite, results)
    if lr is None:
        return None
    recipe = json.loads(json.dumps(spec.recipe))
    recipe.setdefault("optim", {})["lr"] = lr
    return recipe


def evidence(suite: Suite, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``results`` (the newest line of each key) without the lines that are no evidence for the suite's lr choices
    any more: a run whose recipe is fixed by the suite file (no ``lr_from``: an lr-grid run) with a line made from
    another recipe. A grid is judged only on lines of its current recipe (a field added to every GLUE recipe makes
    the whole grid run again before anything takes its lr from it)."""
    kept = dict(results)
    for spec in suite.runs:
        record = kept.get(spec.key)
        if (record is not None and spec.lr_from is None and spec.baseline is None and "recipe" in record
                and not same_recipe(record["recipe"], _normalised(spec.recipe))):
            del kept[spec.key]
    return kept


def plan(suite: Suite, results_path: Path, runs_dir: Path, select: Callable[[RunSpec], bool] = lambda s: True
         ) -> list[PlannedRun]:
    """The status of every selected run: done (a current result line), stale (a result line from another recipe),
    partial (a run folder without final metrics), missing, or waiting (its lr needs grid runs not done yet); an
    lr-grid extension run is "not needed", waiting (undecided), or else one of the above (its reason says why
    it is needed)."""
    lines = latest_by_key(read_results(results_path))
    results = evidence(suite, lines)  # what the lr decisions may read: no line of a recipe the suite no longer has
    planned: list[PlannedRun] = []
    extension_cache: dict[tuple[str, str], dict[tuple[str, int], ExtensionState]] = {}
    for spec in suite.runs:
        if not select(spec):
            continue
        record = lines.get(spec.key)
        if spec.baseline:
            planned.append(PlannedRun(spec, "done" if record else "missing", record=record))
            continue
        why = ""
        if spec.grid_extension:
            cell = (spec.protocol, spec.base_arm)
            if cell not in extension_cache:
                extension_cache[cell] = extension_states(suite, spec.protocol, spec.base_arm, results)
            state = extension_cache[cell][(str(spec.extension_side), spec.grid_extension)]
            if state.state != "needed":
                planned.append(PlannedRun(spec, "waiting" if state.state == "waiting" else NOT_NEEDED, state.reason,
                                          record))
                continue
            why = state.reason
        recipe = resolved_recipe(spec, suite, results)
        if recipe is None:
            planned.append(PlannedRun(spec, "waiting", choose_lr(spec, suite, results)[1], record))
            continue
        if record is not None:
            # a line without a recipe (written by hand or by an older runner) cannot be judged: taken as current
            same = "recipe" not in record or same_recipe(record["recipe"], _normalised(recipe))
            planned.append(PlannedRun(spec, "done" if same else "stale",
                                      "" if same else "its result line was made with another recipe", record))
            continue
        run_dir = spec.run_dir(runs_dir)
        status = "partial" if (run_dir / "config.yaml").exists() else "missing"
        if status == "missing" and spec.lr_step is not None:
            twin = adoptable(spec, recipe, results)
            shared = None if twin is not None else twin_folder(spec, recipe, suite, runs_dir)
            why = (f"the same run as {line_key(twin)}: its line is copied, nothing trains" if twin is not None
                   else f"continues the same run, half-done in {shared}" if shared is not None
                   else choose_lr(spec, suite, results)[1])
        planned.append(PlannedRun(spec, status, why))
    return planned


def make_selector(protocols: Sequence[str] = (), arms: Sequence[str] = (), seeds: Sequence[int] = (),
                  tasks: Sequence[str] = ()) -> Callable[[RunSpec], bool]:
    """Filter runs by protocol names, arm globs (``solo*``), seeds and tasks (empty: everything)."""
    def select(spec: RunSpec) -> bool:
        return ((not protocols or spec.protocol in protocols)
                and (not arms or any(fnmatch.fnmatchcase(spec.arm, a) or fnmatch.fnmatchcase(spec.base_arm, a)
                                     for a in arms))
                and (not seeds or spec.seed in seeds) and (not tasks or spec.task in tasks))
    return select


def check_selection(suite: Suite, protocols: Sequence[str]) -> None:
    unknown = [p for p in protocols if p not in suite.protocols]
    if unknown:
        raise ConfigError(f"{suite.path}: unknown protocol {unknown[0]!r}; protocols: {', '.join(suite.protocols)}")


class EmulatedBf16Error(PeftlabError):
    """A run would train in bf16 on a machine that only emulates it (see :func:`execute`)."""


def run_suite(suite: Suite, results_path: Path, runs_dir: Path, *, data_dir: str | None = None,
              select: Callable[[RunSpec], bool] = lambda s: True, max_runs: int | None = None,
              rerun_stale: bool = False, allow_emulated_bf16: bool = False,
              echo: Callable[[str], None] = print) -> int:
    """Train and record every selected run that is missing (in suite order, re-planning after each run so an
    lr grid unblocks the protocols that wait for it). A run that would train in torch's emulated bf16 kernels is
    skipped unless ``allow_emulated_bf16`` (:func:`execute`). Returns the number of runs recorded."""
    done = 0
    attempted: set[str] = set()
    while max_runs is None or done < max_runs:
        todo = [p for p in plan(suite, results_path, runs_dir, select)
                if p.spec.key not in attempted and (p.status in ("missing", "partial")
                                                    or (rerun_stale and p.status == "stale"))]
        if not todo:
            break
        item = todo[0]
        attempted.add(item.spec.key)
        total_left = len(todo)
        echo(f"[bench] {item.spec.key}: {item.status} ({total_left} to run)")
        try:
            record = execute(item, suite, results_path, runs_dir, data_dir=data_dir,
                             allow_emulated_bf16=allow_emulated_bf16, echo=echo)
        except EmulatedBf16Error as err:
            echo(f"[bench] {item.spec.key}: skipped: {err}")
            continue
        except PeftlabError as err:
            echo(f"[bench] {item.spec.key}: FAILED: {err}")
            continue
        append_result(results_path, record)
        done += 1
        echo(f"[bench] {item.spec.key}: recorded ({_summary(record)})")
    waiting = [p for p in plan(suite, results_path, runs_dir, select) if p.status == "waiting"]
    for p in waiting:
        echo(f"[bench] {p.spec.key}: still waiting ({p.reason})")
    return done


def _summary(record: dict[str, Any]) -> str:
    shown = [f"{k}={v:.4g}" for k, v in record["metrics"].items() if isinstance(v, (int, float))][:5]
    seconds = record.get("train_seconds")
    if isinstance(seconds, (int, float)):
        shown.append(f"train {seconds:.0f} s")
    return ", ".join(shown)


def execute(item: PlannedRun, suite: Suite, results_path: Path, runs_dir: Path, *, data_dir: str | None = None,
            allow_emulated_bf16: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume, or just harvest) one run; returns its result line. On a machine that only emulates bf16
    (no AVX512-BF16/AMX) a run whose recipe has ``run.bf16: true`` trains with its bf16 products computed by fp32
    kernels (:mod:`peftlab.train.bf16_gemm`: 2.6 s for a LoRA step on SmolLM2 there, against 2.2 s in fp32 and 83 s with
    torch's emulated bf16 kernels). With ``PEFTLAB_BF16_MATMULS=native`` it raises :class:`EmulatedBf16Error`
    before training such a run, unless ``allow_emulated_bf16``."""
    from .record import baseline_record, harvest

    spec = item.spec
    if spec.baseline:
        return baseline_record(spec, data_dir)
    results = evidence(suite, latest_by_key(read_results(results_path)))
    recipe = resolved_recipe(spec, suite, results)
    assert recipe is not None
    run_dir = spec.run_dir(runs_dir)
    finished = (run_dir / "metrics.json").exists()
    same_recipe = _folder_recipe_matches(run_dir, recipe)
    twin = None if finished and same_recipe else adoptable(spec, recipe, results)
    if twin is not None:
        echo(f"[bench] {spec.key}: the same recipe and seed ran as {line_key(twin)}; copying its result line")
        return adopted_record(spec, twin)
    if not run_dir.exists():
        shared = twin_folder(spec, recipe, suite, runs_dir)
        if shared is not None:  # another run's half-done folder of the same recipe and seed: this very run
            echo(f"[bench] {spec.key}: {shared} holds this run half-done (same recipe and seed); continuing it there")
            run_dir, same_recipe, finished = shared, True, (shared / "metrics.json").exists()
    if finished and same_recipe:
        echo(f"[bench] {spec.key}: already trained in {run_dir}; recording it")
        return harvest(spec, run_dir, recipe)
    if (recipe.get("run") or {}).get("bf16") is True and not allow_emulated_bf16:
        from ..hardware import bf16_matmul_native, describe, summary
        from ..train.bf16_gemm import ENV_VAR, wanted

        if not bf16_matmul_native() and not wanted(True, "cpu"):
            raise EmulatedBf16Error(f"its recipe trains in bf16, which this machine ({summary(describe())}) only "
                                    f"emulates, and {ENV_VAR}=native keeps torch's emulated kernels, many times "
                                    f"slower than fp32; unset {ENV_VAR} (bf16 products through fp32 kernels), run "
                                    "it on a CPU with AVX512-BF16/AMX or a GPU, or pass --allow-emulated-bf16")
    recipe_file = runs_dir / ".recipes" / spec.protocol / spec.task / spec.arm / f"seed{spec.seed}.yaml"
    recipe_file.parent.mkdir(parents=True, exist_ok=True)
    to_write = json.loads(json.dumps(recipe))
    to_write.setdefault("run", {})["output_dir"] = str(run_dir)
    if data_dir:
        to_write.setdefault("data", {})["data_dir"] = str(data_dir)
    recipe_file.write_text(yaml.safe_dump(to_write, sort_keys=False), encoding="utf-8")
    command = [sys.executable, "-m", "peftlab.cli", "train", recipe.get("task", "e2e"), "--recipe", str(recipe_file),
               "--no-progress"]
    if (run_dir / "config.yaml").exists() and same_recipe and not finished:
        command.append("--resume")
        echo(f"[bench] {spec.key}: resuming the half-done run in {run_dir}")
    elif run_dir.exists():
        command.append("--overwrite")
        echo(f"[bench] {spec.key}: {run_dir} holds a run of another recipe; replacing it")
    log_path = run_dir.with_name(run_dir.name + ".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise PeftlabError(f"training exited with code {code} after {time.time() - started:.0f} s; see {log_path}")
    return harvest(spec, run_dir, recipe)


def adoptable(spec: RunSpec, recipe: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """A result line of another run with the same seed and the same resolved recipe as ``spec`` (its training
    would be the same run again), or None. The newest such line wins."""
    target = _normalised(recipe)
    for record in reversed(list(results.values())):
        if record.get("baseline") or "recipe" not in record or record.get("seed") != spec.seed:
            continue
        if line_key(record) != spec.key and same_recipe(record["recipe"], target):
            return record
    return None


def twin_folder(spec: RunSpec, recipe: dict[str, Any], suite: Suite, runs_dir: Path) -> Path | None:
    """The run folder of another run of the suite with ``spec``'s seed that was started with ``recipe`` (the same
    training), or None. A half-done one is continued rather than started again in ``spec``'s own folder."""
    for other in suite.runs:
        if other.key == spec.key or other.seed != spec.seed or other.baseline:
            continue
        folder = other.run_dir(runs_dir)
        if (folder / "config.yaml").exists() and _folder_recipe_matches(folder, recipe, strict=True):
            return folder
    return None


def adopted_record(spec: RunSpec, twin: dict[str, Any]) -> dict[str, Any]:
    """``twin``'s result line, filed under ``spec``'s key (``adopted_from`` names the line it copies)."""
    record = json.loads(json.dumps(twin))
    for stale in ("grid_extension", "grid_extension_side", "lr_step", "adopted_from"):
        record.pop(stale, None)
    record.update({"protocol": spec.protocol, "task": spec.task, "arm": spec.arm, "base_arm": spec.base_arm,
                   "lr_grid_value": spec.lr, "prefix_length": spec.prefix_length, "compile": spec.compile,
                   "adopted_from": line_key(twin)})
    if spec.grid_extension:
        record.update({"grid_extension": spec.grid_extension, "grid_extension_side": spec.extension_side})
    if spec.lr_step is not None:
        record["lr_step"] = spec.lr_step
    return record


def _folder_recipe_matches(run_dir: Path, recipe: dict[str, Any], *, strict: bool = False) -> bool:
    """Whether the run in ``run_dir`` was started with ``recipe``; a longer or shorter budget (optim.max_steps,
    epochs) still matches, as ``--resume`` may extend a run, unless ``strict``."""
    config = run_dir / "config.yaml"
    if not config.exists():
        return False
    try:
        previous = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return False
    from ..train.rundir import _comparable

    if strict:
        return same_recipe(previous, _normalised(recipe))
    return same_recipe(_comparable(previous), _comparable(_normalised(recipe)))


def _normalised(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe as the run folder's config.yaml spells it (every field, defaults filled in)."""
    from ..train.recipe import recipe_from_dict

    return recipe_from_dict(recipe).to_dict()
