"""Markdown for `peftlab report`: one results table per task (E2E and each GLUE task apart), the plots, the
run folders behind every row, and notes on anything that makes a row less comparable than it looks."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from .runs import Group, Stat

__all__ = ["format_stat", "render_markdown", "task_tables"]


def format_stat(stat: Stat, digits: int, expected_n: int | None = None) -> str:
    """``mean ± std`` with ``digits`` decimals (just ``mean`` for one value, ``–`` for none).

    When fewer values than ``expected_n`` went in (e.g. METEOR null for some seeds), ``(n=k)`` is appended.
    """
    if stat.n == 0 or math.isnan(stat.mean):
        return "–"
    text = f"{stat.mean:.{digits}f}" if stat.n == 1 else f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"
    if expected_n is not None and stat.n < expected_n:
        text += f" (n={stat.n})"
    return text


def _params(group: Group) -> str:
    values = sorted({int(v) for v in group.values("trainable_params")})
    if not values:
        return "–"
    return f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,}–{values[-1]:,}"


def _seeds(group: Group) -> str:
    return ", ".join("?" if s is None else str(s) for s in group.seeds)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def task_tables(groups: Sequence[Group]) -> dict[tuple[str, str], list[Group]]:
    """Groups by (kind, task): E2E first, then GLUE tasks in order of first appearance."""
    tables: dict[tuple[str, str], list[Group]] = {}
    for group in sorted(groups, key=lambda g: g.kind != "e2e"):  # stable: keeps first-appearance order
        tables.setdefault((group.kind, group.task), []).append(group)
    return tables


def _table(groups: Sequence[Group]) -> list[str]:
    metrics = list(groups[0].metric_names)
    for group in groups[1:]:  # a metric only some runs report still gets a column
        metrics += [m for m in group.metric_names if m not in metrics]
    header = ["Method", "Model", "n", "Seeds", "Trainable params", *metrics, "Train time (s)", "Peak memory (MB)"]
    align = [":--", ":--", "--:", ":--", "--:", *["--:"] * len(metrics), "--:", "--:"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for group in groups:
        n = len(group.runs)
        row = [group.label, group.model, str(n), _seeds(group), _params(group),
               *[format_stat(group.stat(m), 4, n) for m in metrics],
               format_stat(group.stat("train_seconds"), 1, n), format_stat(group.stat("peak_memory_mb"), 0, n)]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return lines


def _notes(groups: Sequence[Group]) -> list[str]:
    notes: list[str] = []
    for group in groups:
        where = f"{group.task} / {group.label} / {group.model}"
        differing = group.recipe_differences()
        if differing:
            notes.append(f"{where}: the runs differ in {', '.join(differing)} besides the seed; the mean mixes "
                         "different recipes.")
        seeds = [s for s in group.seeds if s is not None]
        if len(seeds) != len(set(seeds)):
            notes.append(f"{where}: several runs share a seed ({_seeds(group)}); they are not independent.")
        for metric in group.metric_names:
            missing = [run.path for run in group.runs if metric not in run.metrics]
            nulls = len(group.runs) - len(group.values(metric)) - len(missing)
            if missing:
                notes.append(f"{where}: {metric} absent from {', '.join(str(p) for p in missing)}.")
            if nulls:
                reason = " (METEOR needs Java)" if metric == "METEOR" else ""
                notes.append(f"{where}: {metric} is null in {nulls} of {len(group.runs)} runs{reason}.")
    return notes


def render_markdown(groups: Sequence[Group], plots: Sequence[tuple[str, Path]]) -> str:
    """The whole report: tables, plots (``(title, file name)`` relative to the report), runs and notes."""
    n_runs = sum(len(g.runs) for g in groups)
    lines = ["# peftlab report", "",
             f"{n_runs} run(s) in {len(groups)} group(s). A group is one (task, method, model, method_args); its "
             "runs are seeds. Cells are mean ± sample standard deviation (ddof 1) over the n seeds (the mean alone "
             "when n = 1); `(n=k)` marks a cell with fewer values than seeds. E2E scores are on the test set, GLUE "
             "scores on the dev set, after best-step selection; train time excludes evaluation.", ""]
    for (kind, task), table_groups in task_tables(groups).items():
        title = "E2E (test)" if kind == "e2e" else f"GLUE {task} (dev)"
        lines += [f"## {title}", "", *_table(table_groups), ""]
    if plots:
        lines += ["## Plots", ""]
        for title, name in plots:
            lines += [f"### {title}", "", f"![{title}]({Path(name).as_posix()})", ""]
    lines += ["## Runs", ""]
    for group in groups:
        folders = ", ".join(f"`{run.path}`" for run in group.runs)
        lines.append(f"- {group.task} / **{_cell(group.label)}** / {group.model}: {folders}")
    lines.append("")
    notes = _notes(groups)
    if notes:
        lines += ["## Notes", "", *[f"- {_cell(note)}" for note in notes], ""]
    return "\n".join(lines)
