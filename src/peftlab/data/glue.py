"""GLUE tasks from the standard GLUE TSV layout (``download_glue_data.py`` output) or the Hugging Face hub.

Each task declares its file layout, label set and task type in :data:`GLUE_TASKS`. Label ids follow the
Hugging Face ``nyu-mll/glue`` convention, so local and hub data agree (e.g. RTE/QNLI: 0 = entailment).
TSVs are split on tabs only (no CSV quoting: sentences contain double quotes); a row with the wrong number of
columns, an unknown label or a non-numeric score raises :class:`~peftlab.errors.DataError` naming file and line.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from ..errors import DataError
from .files import read_text, resolve_data_dir
from .subset import SubsetInfo, SubsetSpec, apply_subset

__all__ = ["GLUE_TASKS", "GlueExample", "GlueSplit", "GlueTask", "get_task", "label_names", "load_glue", "parse_glue_tsv"]

TaskType = Literal["classification", "regression"]


@dataclass(frozen=True)
class GlueTask:
    """Layout and label set of one GLUE task.

    Attributes:
        name: canonical name (``"CoLA"``, ``"SST-2"``, ...); also the folder name.
        hf_config: configuration name in the hub's ``nyu-mll/glue`` dataset.
        task_type: ``"classification"`` or ``"regression"`` (STS-B).
        label_names: class names in label-id order (empty for regression).
        raw_labels: how each class is written in the TSV, in label-id order.
        n_columns: columns per row in the TSV.
        has_header: whether the first line is a header.
        text_columns: column indices of the first (and second) sentence.
        label_column: column index of the label / score.
        id_column: column index of an example id (None: the line number is used).
        metrics: the task's standard metrics (names of :mod:`peftlab.metrics.glue` functions' results).
        splits: splits available in the standard layout here.
        score_range: the valid score range of a regression task.
    """

    name: str
    hf_config: str
    task_type: TaskType
    label_names: tuple[str, ...]
    raw_labels: tuple[str, ...]
    n_columns: int
    has_header: bool
    text_columns: tuple[int, ...]
    label_column: int
    id_column: int | None
    metrics: tuple[str, ...]
    splits: tuple[str, ...] = ("train", "dev")
    score_range: tuple[float, float] = (0.0, 5.0)
    """Regression tasks: the smallest and largest valid score (STS-B: 0 to 5)."""

    @property
    def num_labels(self) -> int:
        """Number of classes (1 for regression)."""
        return len(self.label_names) if self.task_type == "classification" else 1


GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in [
        GlueTask("CoLA", "cola", "classification", ("unacceptable", "acceptable"), ("0", "1"), 4, False, (3,), 1, None,
                 ("matthews_correlation", "accuracy")),
        GlueTask("SST-2", "sst2", "classification", ("negative", "positive"), ("0", "1"), 2, True, (0,), 1, None,
                 ("accuracy",)),
        GlueTask("MRPC", "mrpc", "classification", ("not_equivalent", "equivalent"), ("0", "1"), 5, True, (3, 4), 0,
                 None, ("f1", "accuracy")),
        GlueTask("RTE", "rte", "classification", ("entailment", "not_entailment"), ("entailment", "not_entailment"), 4,
                 True, (1, 2), 3, 0, ("accuracy",)),
        GlueTask("STS-B", "stsb", "regression", (), (), 10, True, (7, 8), 9, 0, ("pearson", "spearman")),
        GlueTask("QNLI", "qnli", "classification", ("entailment", "not_entailment"), ("entailment", "not_entailment"),
                 4, True, (1, 2), 3, 0, ("accuracy",), ("dev",)),
        GlueTask("WNLI", "wnli", "classification", ("not_entailment", "entailment"), ("0", "1"), 4, True, (1, 2), 3, 0,
                 ("accuracy",)),
    ]
}

_ALIASES = {name.lower().replace("-", ""): name for name in GLUE_TASKS}


def get_task(name: str) -> GlueTask:
    """Look a task up by name, case- and hyphen-insensitively (``"sst2"``, ``"STS-B"``, ``"stsb"`` ...)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _ALIASES:
        raise DataError(f"unknown GLUE task {name!r}; choose one of {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[_ALIASES[key]]


@dataclass(frozen=True)
class GlueExample:
    """One example: ``label`` is a class id (int) or a score (float); ``line`` is its line in the source file."""

    guid: str
    text_a: str
    text_b: str | None
    label: int | float
    line: int = 0


@dataclass
class GlueSplit:
    """A loaded split of one task."""

    task: GlueTask
    split: str
    source: str
    examples: list[GlueExample]
    subset: SubsetInfo | None = None
    label_counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        if self.task.task_type == "classification":
            counts = Counter(int(e.label) for e in self.examples)
            self.label_counts = {self.task.label_names[k]: counts.get(k, 0) for k in range(self.task.num_labels)}
        else:
            self.label_counts = {}

    def take(self, spec: SubsetSpec) -> "GlueSplit":
        """A subset (stratified by label for classification tasks), recorded in ``subset``."""
        labels = [e.label for e in self.examples] if self.task.task_type == "classification" else None
        if spec.strategy == "stratified" and labels is None:
            labels = [min(int(float(e.label)), 4) for e in self.examples]  # STS-B: stratify by integer score band
        kept, info = apply_subset(self.examples, spec, labels)
        return GlueSplit(self.task, self.split, self.source, kept, info)

    def metadata(self) -> dict[str, object]:
        """What to record about this data in a run's metadata."""
        return {
            "dataset": "glue",
            "task": self.task.name,
            "split": self.split,
            "source": self.source,
            "n_examples": len(self.examples),
            "label_counts": self.label_counts,
            "subset": self.subset.to_dict() if self.subset else None,
        }


def parse_glue_tsv(text: str, name: str, task: GlueTask) -> list[GlueExample]:
    """Parse one GLUE TSV of ``task`` strictly (tab-separated, no quoting)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or not any(line.strip() for line in lines):
        raise DataError(f"{name}: line 1: empty file")
    examples = []
    label_ids = {raw: i for i, raw in enumerate(task.raw_labels)}
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if number == 1 and task.has_header:
            if len(line.split("\t")) != task.n_columns:
                raise DataError(f"{name}: line 1: header has {len(line.split(chr(9)))} columns, expected {task.n_columns} for {task.name}")
            continue
        if not line.strip():
            raise DataError(f"{name}: line {number}: empty line")
        fields = line.split("\t")
        if len(fields) != task.n_columns:
            raise DataError(
                f"{name}: line {number}: expected {task.n_columns} tab-separated columns for {task.name}, found {len(fields)}"
            )
        raw = fields[task.label_column].strip()
        label: int | float
        if task.task_type == "regression":
            try:
                label = float(raw)
            except ValueError:
                raise DataError(f"{name}: line {number}: score {raw!r} is not a number") from None
            low, high = task.score_range
            if not low <= label <= high:  # also refuses nan (no comparison holds)
                raise DataError(f"{name}: line {number}: score {raw!r} is outside {task.name}'s range "
                                f"[{low:g}, {high:g}]")
        elif raw in label_ids:
            label = label_ids[raw]
        else:
            raise DataError(f"{name}: line {number}: label {raw!r} is not one of {list(task.raw_labels)}")
        guid = fields[task.id_column] if task.id_column is not None else str(number)
        texts = [fields[i] for i in task.text_columns]
        examples.append(GlueExample(guid, texts[0], texts[1] if len(texts) > 1 else None, label, number))
    if not examples:
        raise DataError(f"{name}: line 2: no examples after the header")
    return examples


def _load_hub(task: GlueTask, split: str) -> GlueSplit:  # pragma: no cover - needs network and `datasets`
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise DataError("source='hub' needs the `datasets` package (pip install datasets) and network access") from None
    hub_split = {"dev": "validation"}.get(split, split)
    data = datasets.load_dataset("nyu-mll/glue", task.hf_config, split=hub_split)
    keys = [k for k in ("sentence", "sentence1", "question", "question1") if k in data.column_names][:1]
    keys += [k for k in ("sentence2", "sentence", "question2") if k in data.column_names and k not in keys][:1]
    examples = [
        GlueExample(str(row.get("idx", i)), row[keys[0]], row[keys[1]] if len(keys) > 1 else None, row["label"], i + 1)
        for i, row in enumerate(data)
    ]
    return GlueSplit(task, split, f"hub:nyu-mll/glue/{task.hf_config}/{hub_split}", examples)


def load_glue(
    task: str,
    split: str = "dev",
    data_dir: str | os.PathLike[str] | None = None,
    source: Literal["local", "hub"] = "local",
    subset: SubsetSpec | None = None,
) -> GlueSplit:
    """Load ``split`` (``"train"`` or ``"dev"``) of a GLUE task from ``data_dir/glue/<TASK>/<split>.tsv`` (default
    ``$PEFTLAB_DATA_DIR``), or from the Hugging Face hub with ``source="hub"`` (needs network and ``datasets``)."""
    spec = get_task(task)
    if split not in ("train", "dev"):
        raise DataError(f"GLUE split must be 'train' or 'dev' (test labels are not public), not {split!r}")
    if source == "hub":
        data = _load_hub(spec, split)
    elif source == "local":
        root = resolve_data_dir(data_dir, "glue", spec.name)
        path = Path(root) / spec.name / f"{split}.tsv"
        if not path.is_file():
            available = ", ".join(spec.splits)
            raise DataError(f"{path}: file not found ({spec.name} splits in the standard layout here: {available})")
        data = GlueSplit(spec, split, str(path), parse_glue_tsv(read_text(path), str(path), spec))
    else:
        raise DataError(f"source must be 'local' or 'hub', not {source!r}")
    return data.take(subset) if subset is not None else data


def label_names(task: str) -> Sequence[str]:
    """Class names of a task in label-id order (empty for STS-B)."""
    return get_task(task).label_names
