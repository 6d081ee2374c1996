"""Reading run folders written by `peftlab train`, grouping them by recipe, and aggregating seeds.

A run folder holds ``metrics.json`` (final scores and bookkeeping), ``metrics.jsonl`` (one JSON record a line:
training records with ``loss`` and eval records with ``eval``) and ``config.yaml`` (the resolved recipe);
``meta.json`` is optional here. Runs are grouped by (task, method, model, method_args); the seed is ignored,
so the runs of a group are the seeds of one recipe, and their numbers aggregate to mean ± sample std.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from ..config import flatten_dotted
from ..errors import DataError

__all__ = ["E2E_METRICS", "Group", "RunFolderError", "RunRecord", "Stat", "aggregate", "expand_run_dirs",
           "group_runs", "load_run"]

E2E_METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
REQUIRED_FILES = ("metrics.json", "metrics.jsonl", "config.yaml")
# Recipe fields that may differ between the seeds of one group without making them different recipes.
_PER_RUN_FIELDS = ("run.seed", "run.output_dir")


class RunFolderError(DataError):
    """A run folder is missing, incomplete (a file `peftlab train` writes is absent) or holds a malformed file."""


@dataclass
class RunRecord:
    """One run folder: its final metrics, its training/eval log and its resolved recipe."""

    path: Path
    metrics: dict[str, Any]
    log: list[dict[str, Any]]
    config: dict[str, Any]

    @property
    def kind(self) -> str:
        """``"e2e"`` or ``"glue"``."""
        return "e2e" if str(self.config.get("task", self.metrics.get("task", ""))).lower() == "e2e" else "glue"

    @property
    def task(self) -> str:
        """Display name of the task: ``E2E`` or the GLUE task's canonical name (``SST-2``, ``MRPC`` ...)."""
        if self.kind == "e2e":
            return "E2E"
        name = self.metrics.get("task") or self.config.get("data", {}).get("glue_task", "glue")
        return _glue_spec(str(name))[0]

    @property
    def method(self) -> str:
        return str(self.metrics.get("method") or self.config.get("method", "?"))

    @property
    def model(self) -> str:
        return str(self.config.get("model", {}).get("name", "?"))

    @property
    def method_args(self) -> dict[str, Any]:
        return dict(self.config.get("method_args") or {})

    @property
    def seed(self) -> int | None:
        seed = self.config.get("run", {}).get("seed")
        return int(seed) if seed is not None else None

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The task's metrics, headline first (BLEU for E2E; the GLUE task's standard order)."""
        if self.kind == "e2e":
            return E2E_METRICS
        return _glue_spec(self.task)[1] or tuple(k for k in _GLUE_METRIC_NAMES if k in self.metrics)

    def train_records(self) -> list[dict[str, Any]]:
        """Log records with a training loss, in step order."""
        return sorted((r for r in self.log if "loss" in r and "step" in r), key=lambda r: r["step"])


_GLUE_METRIC_NAMES = ("matthews_correlation", "f1", "accuracy", "pearson", "spearman")


def _glue_spec(name: str) -> tuple[str, tuple[str, ...]]:
    """Canonical name and metrics of a GLUE task; an unknown name is kept as given (metrics found later)."""
    from ..data.glue import get_task

    try:
        spec = get_task(name)
    except DataError:
        return name, ()
    return spec.name, spec.metrics


def expand_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders named by ``paths``: a folder holding no run itself but run sub-folders stands for those.

    Duplicates (the same folder named twice) are dropped; order is kept.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        is_run = any((path / name).exists() for name in REQUIRED_FILES)
        children = sorted(p for p in path.iterdir() if p.is_dir() and (p / "config.yaml").exists()) \
            if path.is_dir() and not is_run else []
        for run_dir in children or [path]:
            if run_dir.resolve() not in {p.resolve() for p in found}:
                found.append(run_dir)
    return found


def load_run(path: str | Path) -> RunRecord:
    """Read one run folder; a missing folder or file, or a malformed one, raises :class:`RunFolderError`."""
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"run folder {path} does not exist (or is not a folder)")
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise RunFolderError(f"run folder {path} has no {name}; is it a finished `peftlab train` run? "
                                 f"(expected {', '.join(REQUIRED_FILES)})")
    metrics_path = path / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{metrics_path}: not valid JSON ({err})") from None
    if not isinstance(metrics, dict):
        raise RunFolderError(f"{metrics_path}: expected a JSON object, got {type(metrics).__name__}")
    log = _read_jsonl(path / "metrics.jsonl")
    config_path = path / "config.yaml"
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RunFolderError(f"{config_path}: not valid YAML ({err})") from None
    if not isinstance(config, dict):
        raise RunFolderError(f"{config_path}: expected a mapping (the resolved recipe)")
    return RunRecord(path=path, metrics=metrics, log=log, config=config)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from ..io import read_jsonl_objects

    return [record for _, record in read_jsonl_objects(path, RunFolderError)]


@dataclass
class Group:
    """The runs of one recipe (same task, method, model and method_args), i.e. its seeds."""

    kind: str
    task: str
    method: str
    model: str
    method_args: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)
    split_by: dict[str, Any] = field(default_factory=dict)
    """Values of the extra recipe fields the groups were split by (``--group-by``), e.g. {"run.bf16": True}."""
    label: str = ""
    """Short display name: the method, plus the method_args that tell it apart from other groups (set later)."""

    @property
    def seeds(self) -> list[int | None]:
        return [run.seed for run in self.runs]

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.runs[0].metric_names

    def values(self, key: str) -> list[float]:
        """``metrics.json[key]`` of each run that has a finite number there (nulls, e.g. METEOR, are skipped)."""
        out = []
        for run in self.runs:
            value = run.metrics.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out.append(float(value))
        return out

    def stat(self, key: str) -> Stat:
        return aggregate(self.values(key))

    def recipe_differences(self) -> list[str]:
        """Recipe fields (dotted) that differ between this group's runs, other than the seed and output folder."""
        flat = [flatten_dotted(run.config) for run in self.runs]
        shared = set.intersection(*(set(f) for f in flat)) if flat else set()
        return sorted(k for k in shared if k not in _PER_RUN_FIELDS and len({_canon(f[k]) for f in flat}) > 1)


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of ``n`` values; ``n == 0``: no value."""

    mean: float
    std: float
    n: int


def aggregate(values: Sequence[float]) -> Stat:
    """Mean ± sample std (ddof 1, the spread over seeds) of ``values``."""
    if not values:
        return Stat(math.nan, math.nan, 0)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Stat(statistics.fmean(values), std, len(values))


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def group_runs(runs: Sequence[RunRecord], group_by: Sequence[str] = ()) -> list[Group]:
    """Group ``runs`` by (task, method, model, method_args) and the dotted recipe fields ``group_by`` (say
    ``run.bf16`` or ``optim.lr``), in order of first appearance, and label groups."""
    groups: dict[tuple[str, ...], Group] = {}
    for run in runs:
        flat = flatten_dotted(run.config)
        for name in group_by:
            if name not in flat:
                raise RunFolderError(f"{run.path}: --group-by {name!r} is not a recipe field of this run "
                                     f"(fields look like run.bf16, optim.lr, model.dtype)")
        split = {name: flat[name] for name in group_by}
        key = (run.kind, run.task, run.method, run.model, _canon(run.method_args), _canon(split))
        if key not in groups:
            groups[key] = Group(run.kind, run.task, run.method, run.model, run.method_args, split_by=split)
        groups[key].runs.append(run)
    result = list(groups.values())
    for group in result:
        group.runs.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, str(r.path)))
        group.label = _label(group, result)
    return result


def _label(group: Group, groups: Sequence[Group]) -> str:
    """``method`` alone, or ``method (k=v, ...)`` with the args that differ from same-method groups of the task,
    then ``[field=value ...]`` for the ``--group-by`` fields."""
    rivals = [g for g in groups if g is not group and (g.kind, g.task, g.method) == (group.kind, group.task,
                                                                                     group.method)]
    keys = sorted({k for g in rivals for k in set(g.method_args) | set(group.method_args)
                   if _canon(g.method_args.get(k)) != _canon(group.method_args.get(k))})
    shown = ", ".join(f"{k}={_short(group.method_args.get(k, '-'))}" for k in keys)
    label = f"{group.method} ({shown})" if shown else group.method  # groups differing by model only: Model column
    if group.split_by:
        label += " [" + ", ".join(f"{k}={_short(v)}" for k, v in group.split_by.items()) + "]"
    return label


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:21] + "..."
