"""GLUE metrics: accuracy, F1 (MRPC), Matthews correlation (CoLA), Pearson and Spearman (STS-B).

Definitions follow the GLUE benchmark (and scikit-learn / scipy, which the reference implementations call):

* accuracy: fraction of exact label matches;
* F1: binary F1 of the positive class (label 1), ``2 TP / (2 TP + FP + FN)`` (0 when there is no positive at all);
* Matthews correlation: ``(TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``, 0 when a margin is empty;
* Pearson: linear correlation of predicted and gold scores;
* Spearman: Pearson correlation of the ranks (ties get their average rank).
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from ..data.files import read_text
from ..data.glue import GlueSplit, GlueTask, get_task
from ..errors import DataError

__all__ = [
    "accuracy",
    "binary_f1",
    "glue_metrics",
    "matthews_corrcoef",
    "pearson",
    "read_glue_predictions",
    "spearman",
]


def _pair(predictions: Sequence[float], references: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)
    if pred.shape != ref.shape or pred.ndim != 1:
        raise ValueError(f"predictions {pred.shape} and references {ref.shape} must be 1-D and of equal length")
    if pred.size == 0:
        raise ValueError("no examples to score")
    return pred, ref


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Fraction of predictions equal to the reference label."""
    pred, ref = _pair(predictions, references)
    return float(np.mean(pred == ref))


def _confusion(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.sum((pred == 1) & (ref == 1)))
    tn = int(np.sum((pred != 1) & (ref != 1)))
    fp = int(np.sum((pred == 1) & (ref != 1)))
    fn = int(np.sum((pred != 1) & (ref == 1)))
    return tp, tn, fp, fn


def binary_f1(predictions: Sequence[int], references: Sequence[int]) -> float:
    """F1 of the positive class (label 1)."""
    tp, _, fp, fn = _confusion(*_pair(predictions, references))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def matthews_corrcoef(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Matthews correlation coefficient of binary labels (0 when undefined, as scikit-learn)."""
    tp, tn, fp, fn = _confusion(*_pair(predictions, references))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0


def pearson(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Pearson correlation (nan when either side is constant)."""
    pred, ref = _pair(predictions, references)
    pc, rc = pred - pred.mean(), ref - ref.mean()
    denom = math.sqrt(float(np.dot(pc, pc)) * float(np.dot(rc, rc)))
    return float(np.dot(pc, rc)) / denom if denom else float("nan")


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_vals[end + 1] == sorted_vals[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    pred, ref = _pair(predictions, references)
    return pearson(_average_ranks(pred), _average_ranks(ref))


_METRIC_FUNCS = {
    "accuracy": accuracy,
    "f1": binary_f1,
    "matthews_correlation": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def glue_metrics(task: str | GlueTask, predictions: Sequence[float], references: Sequence[float]) -> dict[str, float]:
    """The task's standard metrics (``GlueTask.metrics``) as a dict, e.g. ``{"f1": ..., "accuracy": ...}`` for MRPC."""
    spec = get_task(task) if isinstance(task, str) else task
    return {name: _METRIC_FUNCS[name](predictions, references) for name in spec.metrics}


def read_glue_predictions(path: str | os.PathLike[str], data: GlueSplit) -> list[float]:
    """Predictions for ``data``, one per line: a label id or name (classification) or a number (STS-B)."""
    text = read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    task = data.task
    if len(lines) != len(data.examples):
        where = min(len(lines), len(data.examples)) + 1
        raise DataError(
            f"{path}: line {where}: {len(lines)} predictions for {len(data.examples)} examples of {data.source}"
        )
    names = {str(i): i for i in range(task.num_labels)}
    names |= {n: i for i, n in enumerate(task.label_names)} | {r: i for i, r in enumerate(task.raw_labels)}
    out: list[float] = []
    for number, raw in enumerate(lines, start=1):
        value = raw.strip()
        if task.task_type == "regression":
            try:
                out.append(float(value))
            except ValueError:
                raise DataError(f"{path}: line {number}: prediction {value!r} is not a number") from None
        elif value in names:
            out.append(names[value])
        else:
            raise DataError(f"{path}: line {number}: prediction {value!r} is not a label of {task.name} {list(names)}")
    return out
