"""PNG plots for `peftlab report` (matplotlib, Agg backend): headline metric vs trainable parameters, loss
curves, Solo's homotopy t over training, and the gated prefix's gate values over training.

Every plot function takes the report's groups and the output folder and returns the written file, or ``None``
when no run has the data the plot needs. A group keeps one colour across all plots.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never opens a window (must precede pyplot)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from .runs import Group, RunRecord  # noqa: E402

__all__ = ["MAX_GATE_RUNS", "PLOT_FILES", "plot_gates", "plot_loss_curves", "plot_metric_vs_params", "plot_solo_t", "write_plots"]

MAX_GATE_RUNS = 6
"""At most this many gated-prefix runs get a row in the gate figure (the first ones, in report order)."""
PLOT_FILES = ("metric_vs_params.png", "loss_curves.png", "solo_t.png", "gates.png")
"""Every file name a report may write; one left from an earlier report in the same folder is removed."""
_SOLO_KEY = re.compile(r"^solo_t\[(\d+)->(\d+)\]$")
_LINESTYLES = ("-", "--", ":", "-.")
_DPI = 110


def _colors(groups: Sequence[Group]) -> dict[int, Any]:
    cmap = matplotlib.colormaps["tab10"]
    return {id(group): cmap(i % 10) for i, group in enumerate(groups)}


def _grid(n: int, width: float = 5.2, height: float = 3.8) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI, format="png")
    plt.close(fig)
    return path


def _compact(value: float, _pos: Any = None) -> str:
    """A parameter count as ``950``, ``30k``, ``1.5M``, ``2B``."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _integer_steps(ax: Any) -> None:
    """Optimizer steps are whole numbers: no 1.5 ticks on short runs."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _by_task(groups: Sequence[Group]) -> dict[str, list[Group]]:
    out: dict[str, list[Group]] = {}
    for group in sorted(groups, key=lambda g: g.kind != "e2e"):
        out.setdefault(group.task, []).append(group)
    return out


def plot_metric_vs_params(groups: Sequence[Group], out_dir: Path) -> Path | None:
    """Headline metric (BLEU; a GLUE task's first metric) vs trainable parameters, log x, one point per group
    with the seeds' std as error bar; one panel per task."""
    tasks = {task: [g for g in gs if g.stat("trainable_params").mean > 0 and g.stat(g.metric_names[0]).n]
             for task, gs in _by_task(groups).items()}
    tasks = {task: gs for task, gs in tasks.items() if gs}
    if not tasks:
        return None
    colors = _colors(groups)
    fig, axes = _grid(len(tasks))
    for ax, (task, task_groups) in zip(axes, tasks.items()):
        metric = task_groups[0].metric_names[0]
        xs = [g.stat("trainable_params").mean for g in task_groups]
        for group in task_groups:
            x, y = group.stat("trainable_params").mean, group.stat(metric)
            ax.errorbar([x], [y.mean], yerr=[y.std], fmt="o", color=colors[id(group)], capsize=4, markersize=6,
                        label=f"{group.label} ({group.model}, n={y.n})")
            ax.annotate(group.label, (x, y.mean), textcoords="offset points", xytext=(6, 4), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 2, max(xs) * 2.5)  # room for the labels right of the points
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(_compact))  # 20k, 50k, 100k, 1.2M: readable in one decade too
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel(metric)
        ax.set_title(f"{task}: {metric} vs trainable parameters", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, out_dir / "metric_vs_params.png")


def plot_loss_curves(groups: Sequence[Group], out_dir: Path) -> Path | None:
    """Training loss vs step, one line per run (colour: group, line style: seed); one panel per task."""
    tasks = {task: [g for g in gs if any(run.train_records() for run in g.runs)]
             for task, gs in _by_task(groups).items()}
    tasks = {task: gs for task, gs in tasks.items() if gs}
    if not tasks:
        return None
    colors = _colors(groups)
    fig, axes = _grid(len(tasks))
    for ax, (task, task_groups) in zip(axes, tasks.items()):
        for group in task_groups:
            for i, run in enumerate(group.runs):
                records = run.train_records()
                if not records:
                    continue
                ax.plot([r["step"] for r in records], [r["loss"] for r in records], color=colors[id(group)],
                        linestyle=_LINESTYLES[i % len(_LINESTYLES)], linewidth=1.4,
                        marker="." if len(records) < 30 else None, label=f"{group.label} seed {run.seed}")
        ax.set_xlabel("optimizer step")
        _integer_steps(ax)
        ax.set_ylabel("training loss")
        ax.set_title(f"{task}: loss curves", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, out_dir / "loss_curves.png")


def _solo_series(run: RunRecord) -> tuple[list[float], list[str], np.ndarray] | None:
    """Steps, pair names (``i->j``) and t values (steps x pairs) of a Solo run's log, or None."""
    records = [r for r in run.train_records() if any(_SOLO_KEY.match(k) for k in r)]
    if not records:
        return None
    keys = sorted({k for r in records for k in r if _SOLO_KEY.match(k)},
                  key=lambda k: tuple(int(x) for x in _SOLO_KEY.match(k).groups()))
    values = np.array([[float(r.get(k, np.nan)) for k in keys] for r in records])
    return [r["step"] for r in records], [k[len("solo_t["):-1] for k in keys], values


def plot_solo_t(groups: Sequence[Group], out_dir: Path) -> Path | None:
    """Solo's t over training: per run the mean over skip pairs (band: min to max), and the final t per pair."""
    colors = _colors(groups)
    series = [(group, run, s) for group in groups for run in group.runs if (s := _solo_series(run)) is not None]
    if not series:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.0))
    for i, (group, run, (steps, pairs, values)) in enumerate(series):
        color, style = colors[id(group)], _LINESTYLES[group.runs.index(run) % len(_LINESTYLES)]
        label = f"{group.task} {group.label} seed {run.seed}"
        left.plot(steps, np.nanmean(values, axis=1), color=color, linestyle=style, label=label)
        left.fill_between(steps, np.nanmin(values, axis=1), np.nanmax(values, axis=1), color=color, alpha=0.15)
        right.plot(range(len(pairs)), values[-1], color=color, linestyle=style, marker="o", markersize=3,
                   label=f"{label} (step {steps[-1]})")
        if i == 0:
            tick_every = max(1, len(pairs) // 12)
            right.set_xticks(range(0, len(pairs), tick_every))
            right.set_xticklabels(pairs[::tick_every], rotation=45, ha="right", fontsize=7)
    left.set_xlabel("optimizer step")
    _integer_steps(left)
    left.set_ylabel("t (mean over skip pairs; band: min-max)")
    left.set_title("Solo: t over training", fontsize=10)
    right.set_xlabel("skip pair (source->target layer)")
    right.set_ylabel("t at the last logged step")
    right.set_title("Solo: final t per skip pair", fontsize=10)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, out_dir / "solo_t.png")


def _gate_series(run: RunRecord) -> tuple[list[float], np.ndarray] | None:
    """Steps and gate values (steps x L x l) of a gated-prefix run's log, or None."""
    records = [r for r in run.train_records() if isinstance(r.get("gate"), list) and r["gate"]]
    if not records:
        return None
    try:
        gates = np.array([r["gate"] for r in records], dtype=float)
    except ValueError:  # ragged: the shape changed mid-run; keep the records of the final shape
        shape = np.shape(records[-1]["gate"])
        records = [r for r in records if np.shape(r["gate"]) == shape]
        gates = np.array([r["gate"] for r in records], dtype=float)
    if gates.ndim == 2:  # one gate per layer: (steps, L) -> (steps, L, 1)
        gates = gates[:, :, None]
    return [r["step"] for r in records], gates


def plot_gates(groups: Sequence[Group], out_dir: Path) -> Path | None:
    """Gated prefix: per run, the mean gate of each layer vs step, and a heatmap of the final (L, l) gates."""
    series = [(group, run, s) for group in groups for run in group.runs if (s := _gate_series(run)) is not None]
    if not series:
        return None
    series = series[:MAX_GATE_RUNS]
    lo = min(float(np.nanmin(s[1])) for _, _, s in series)
    hi = max(float(np.nanmax(s[1])) for _, _, s in series)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    fig, axes = plt.subplots(len(series), 2, figsize=(11.5, 3.6 * len(series)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.25, 1]})
    layer_cmap = matplotlib.colormaps["viridis"]
    for (left, right), (group, run, (steps, gates)) in zip(axes, series):
        n_layers = gates.shape[1]
        per_layer = np.nanmean(gates, axis=2)  # (steps, L)
        for layer in range(n_layers):
            left.plot(steps, per_layer[:, layer], color=layer_cmap(layer / max(n_layers - 1, 1)), linewidth=1.1)
        norm = matplotlib.colors.Normalize(0, n_layers - 1)
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=layer_cmap), ax=left, label="layer")
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
        title = f"{group.task} {group.label} seed {run.seed}"
        left.set_title(f"{title}: mean gate per layer", fontsize=10)
        left.set_xlabel("optimizer step")
        _integer_steps(left)
        left.set_ylabel("gate (mean over prefix positions)")
        left.grid(True, alpha=0.3)
        image = right.imshow(gates[-1], aspect="auto", cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
        fig.colorbar(image, ax=right, label="gate")
        right.set_title(f"final gates (step {steps[-1]})", fontsize=10)
        right.set_xlabel("prefix position")
        right.set_ylabel("layer")
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, out_dir / "gates.png")


def write_plots(groups: Sequence[Group], out_dir: Path) -> list[tuple[str, Path]]:
    """Every plot that has data, as ``(title, path)``, in report order; stale plots of ours are removed."""
    plots = [("Headline metric vs trainable parameters", plot_metric_vs_params),
             ("Training loss", plot_loss_curves),
             ("Solo: t over training", plot_solo_t),
             ("Gated prefix: gate values over training", plot_gates)]
    written = []
    for title, make in plots:
        # no "1e-5+1" offsets: gates near 1 and small t values are read directly off the axis
        with matplotlib.rc_context({"axes.formatter.useoffset": False}):
            path = make(groups, out_dir)
        if path is not None:
            written.append((title, path))
    for name in PLOT_FILES:  # e.g. gates.png of an earlier report that had gated-prefix runs
        if (out_dir / name) not in {path for _, path in written}:
            (out_dir / name).unlink(missing_ok=True)
    return written
