"""Run what is missing from a quality suite, one `peftlab train` run folder at a time, and append its result line.

Each run is an ordinary run folder (``RUNS/<protocol>/<task>/<arm>/seed<k>``) trained by a child process
(``python -m peftlab.cli train --recipe ...``), so a killed runner loses at most the steps since the run's last
checkpoint: the next invocation resumes the folder (``--resume``), or only harvests it when it already finished.
A run is counted once: its key (protocol, task, arm, seed) is looked up in the results file first.

A run that takes its lr from another protocol waits until that protocol has chosen (:mod:`.lr_choice`); the
conditional runs of an lr grid beyond its edges are planned as needed, not needed or waiting, and :func:`run_suite`
re-plans after every run, so a needed extension trains in the same invocation. Whether a result line is still
current (the same recipe) is :func:`.recipes.same_recipe`.
"""
from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from ..errors import ConfigError, PeftlabError
from .lr_choice import NOT_NEEDED, ExtensionState, choose_lr, extension_states, resolved_recipe
from .recipes import normalised_recipe, same_recipe
from .results import append_result, latest_by_key, line_key, read_results
from .suite import RunSpec, Suite


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


def evidence(suite: Suite, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``results`` (the newest line of each key) without the lines that are no evidence for the suite's lr choices
    any more: a run whose recipe is fixed by the suite file (no ``lr_from``: an lr-grid run) with a line made from
    another recipe. A grid is judged only on lines of its current recipe (a field added to every GLUE recipe makes
    the whole grid run again before anything takes its lr from it)."""
    kept = dict(results)
    for spec in suite.runs:
        record = kept.get(spec.key)
        if (record is not None and spec.lr_from is None and spec.baseline is None and "recipe" in record
                and not same_recipe(record["recipe"], normalised_recipe(spec.recipe))):
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
            same = "recipe" not in record or same_recipe(record["recipe"], normalised_recipe(recipe))
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
    target = normalised_recipe(recipe)
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
        return same_recipe(previous, normalised_recipe(recipe))
    return same_recipe(_comparable(previous), _comparable(normalised_recipe(recipe)))
