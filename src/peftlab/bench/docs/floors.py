"""The majority-class floor of a GLUE classification task (its most frequent dev label predicted for every example),
shown under the task's tables with the arms that do no better."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..evidence import Results, headline, metric_value, stat


@dataclass(frozen=True)
class MajorityFloor:
    """What predicting a GLUE task's most frequent dev label for every dev example scores."""

    label: str
    n: int
    metrics: dict[str, float]


NEAR_FLOOR = 0.01
"""An arm whose mean headline metric is less than this above the majority-class floor is named as at the floor."""


def majority_floors(tasks: Sequence[str], data_dir: str | Path | None = None) -> dict[str, MajorityFloor]:
    """{task: its majority-class floor on the whole dev set} for the classification tasks among ``tasks`` whose dev
    data is found (regression tasks such as STS-B have none: a constant has no correlation)."""
    from ...data import load_glue
    from ...errors import DataError
    from ...metrics.glue import glue_metrics

    floors = {}
    for task in tasks:
        try:
            dev = load_glue(task, "dev", data_dir)
        except DataError:  # no data here (DataError is a ValueError): the page shows no floor for it
            continue
        if dev.task.task_type != "classification" or not dev.examples:
            continue
        label = max(dev.label_counts, key=dev.label_counts.__getitem__)  # the split's own per-label counts
        majority = list(dev.task.label_names).index(label)
        labels = [int(e.label) for e in dev.examples]
        floors[task] = MajorityFloor(label, len(labels), glue_metrics(dev.task, [majority] * len(labels), labels))
    return floors


def majority_note(res: Results, protocol: str, task: str, floor: MajorityFloor | None) -> list[str]:
    """The floor under a GLUE table, and the arms (or prefix variants) whose headline mean is within
    :data:`NEAR_FLOOR` of it, when the protocol scored the whole dev set (``n_inputs``)."""
    groups = [(arm, g) for (p, t, arm), g in res.groups.items() if (p, t) == (protocol, task) and g]
    if floor is None or not groups or any(r.get("n_inputs") != floor.n for _, g in groups for r in g):
        return []
    name = headline(task)
    value = floor.metrics.get(name)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in floor.metrics.items())
    md = [f"Majority class (every one of the {floor.n} dev examples labelled `{floor.label}`): {scores}."]
    near = [arm for arm, group in groups
            if value is not None and (m := stat(metric_value(r, name) for r in group).mean) is not None
            and m - value < NEAR_FLOOR]
    if near:
        md[0] += (f" Within {NEAR_FLOOR} of it on {name} (no better than labelling everything `{floor.label}`): "
                  f"{', '.join(near)}.")
    return md + [""]
