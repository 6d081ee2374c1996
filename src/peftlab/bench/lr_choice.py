"""The learning rate of each quality-suite run that takes it from another protocol: an lr grid's choice (with its
conditional extensions beyond the edges), or an ``lr_steps`` protocol's check of that choice at the full budget.

An lr grid with ``lr_grid_extend: N`` has conditional runs beyond its edges (see :mod:`.suite`): each is needed
(the grid so far is done and its best lr is the newest point on that side), not needed (skipped, not missing), or
waiting (the points before it are not all done); :func:`extension_states` decides and :func:`choose_lr` waits for
the needed ones.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from .recipes import normalised_recipe, same_recipe
from .suite import RunSpec, Suite

__all__ = ["NOT_NEEDED", "ExtensionState", "choose_lr", "extension_states", "grid_choice", "resolved_recipe",
           "selection_score", "step_line", "stepped_lr", "steps_choice"]

NOT_NEEDED = "not needed"
"""The plan status of a conditional lr-grid extension run that the grid's results do not call for."""


@dataclass
class ExtensionState:
    """Whether the conditional lr-grid runs of one (side, k) of an arm are needed."""

    state: str  # needed | not needed | waiting
    reason: str
    lr: float | None = None
    runs: list[RunSpec] = field(default_factory=list)


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
        if not same_recipe(record["recipe"], normalised_recipe(recipe)):
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
