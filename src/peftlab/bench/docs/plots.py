"""The page's figures (matplotlib, Agg): quality vs trainable parameters, loss and dev curves, prefix-length curves,
Solo's t and the gate trends."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..evidence import PREFIX_VARIANTS, Results, curve, headline, stat

DPI = 100
PLOT_FILES = ("e2e_bleu_vs_params.png", "glue_vs_params.png", "e2e_loss_curves.png", "dev_curves.png",
              "prefix_length.png", "solo_t.png", "gates.png")
"""Every plot the page may embed; one with no data this time is deleted from the plot folder."""


def _pyplot():
    from ..._optional import require

    require("matplotlib", "report", "the benchmark plots").use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _first_seed_curve(group: list[dict[str, Any]], name: str) -> list[list[Any]]:
    """The curve of the lowest seed that has one: [[step, value, ...], ...] with numeric values."""
    for record in group:
        points = [p for p in curve(record, name)
                  if isinstance(p, (list, tuple)) and len(p) >= 2 and all(isinstance(x, (int, float)) for x in p[:2])]
        if points:
            return points
    return []


def write_plots(res: Results, folder: Path) -> dict[str, str | None]:
    """Write every plot that has data into ``folder``; returns {file: caption, or None when there was no data}
    (such a file left from an earlier run is deleted)."""
    folder = Path(folder)
    plt = _pyplot()
    made: dict[str, str | None] = {}
    for file, function in zip(PLOT_FILES, (_plot_e2e_params, _plot_glue_params, _plot_loss, _plot_dev,
                                           _plot_prefix, _plot_solo_t, _plot_gates)):
        figure_caption = function(res, plt)
        path = folder / file
        if figure_caption is None:
            made[file] = None
            path.unlink(missing_ok=True)
            continue
        fig, caption = figure_caption
        folder.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=DPI, metadata={"Software": None})
        plt.close(fig)
        made[file] = caption
    return made


def _params_axis(ax: Any, res: Results, protocol: str, task: str) -> bool:
    """Headline metric vs trainable parameters (log x, seed std as error bars); False when nothing to draw."""
    name, drawn = headline(task), False
    for arm in res.arms(protocol, task):
        values, trainable = stat(res.values(protocol, task, arm, name)), \
            res.field(protocol, task, arm, "trainable_params").mean
        if not values.n:
            continue
        baseline = any(r.get("baseline") or r.get("method") == "template" for r in res.get(protocol, task, arm))
        if baseline:
            ax.axhline(values.mean, color="grey", linestyle="--", linewidth=1)
            ax.annotate(arm, (0.01, values.mean), xycoords=("axes fraction", "data"), fontsize=7, color="grey")
            continue
        if not trainable:  # no parameter count: no place on a log axis
            continue
        ax.errorbar([trainable], [values.mean], yerr=[values.std or 0.0], fmt="o", capsize=3)
        ax.annotate(arm, (trainable, values.mean), textcoords="offset points", xytext=(4, 3), fontsize=7)
        drawn = True
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(name)
    ax.set_title(f"{protocol} {task}", fontsize=9)
    return drawn


def _plot_e2e_params(res: Results, plt: Any) -> tuple[Any, str] | None:
    if not res.tasks("e2e-mini"):
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if not _params_axis(ax, res, "e2e-mini", "e2e"):
        plt.close(fig)
        return None
    return fig, "e2e-mini: BLEU (mean ± std over seeds) vs trainable parameters; dashed: the template floor."


def _grid(plt: Any, n: int) -> tuple[Any, list[Any]]:
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.4 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _plot_glue_params(res: Results, plt: Any) -> tuple[Any, str] | None:
    tasks = [t for t in res.tasks("glue-mini") if any(res.get("glue-mini", t, a) for a in res.arms("glue-mini", t))]
    if not tasks:
        return None
    fig, axes = _grid(plt, len(tasks))
    for ax, task in zip(axes, tasks):
        _params_axis(ax, res, "glue-mini", task)
    return fig, "glue-mini: each task's headline dev metric (mean ± std over seeds) vs trainable parameters."


def _curves_axis(ax: Any, res: Results, protocol: str, task: str, name: str, ylabel: str) -> bool:
    drawn = False
    for arm in res.arms(protocol, task):
        points = _first_seed_curve(res.get(protocol, task, arm), name)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=arm, linewidth=1)
            drawn = True
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{protocol} {task}", fontsize=9)
    if drawn:
        ax.legend(fontsize=6, ncol=2)
    return drawn


def _plot_loss(res: Results, plt: Any) -> tuple[Any, str] | None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if not _curves_axis(ax, res, "e2e-mini", "e2e", "loss", "training loss"):
        plt.close(fig)
        return None
    ax.set_yscale("log")
    return fig, "e2e-mini: training loss of each arm (its lowest seed)."


def _plot_dev(res: Results, plt: Any) -> tuple[Any, str] | None:
    cells = [(p, t) for p in ("e2e-mini", "glue-mini") for t in res.tasks(p)
             if any(_first_seed_curve(res.get(p, t, a), "dev") for a in res.arms(p, t))]
    if not cells:
        return None
    fig, axes = _grid(plt, len(cells))
    for ax, (p, t) in zip(axes, cells):
        _curves_axis(ax, res, p, t, "dev", "dev loss" if t == "e2e" else f"dev {headline(t)}")
    return fig, "Dev curves (E2E: dev loss, lower is better; GLUE: the headline metric), lowest seed of each arm."


def _plot_prefix(res: Results, plt: Any) -> tuple[Any, str] | None:
    tasks = [t for t in res.tasks("prefix-length")
             if any(g for (p, tt, _), g in res.groups.items() if (p, tt) == ("prefix-length", t))]
    if not tasks:
        return None
    fig, axes = _grid(plt, len(tasks))
    lengths = res.lengths("prefix-length")
    for ax, task in zip(axes, tasks):
        for variant in PREFIX_VARIANTS:
            points = [(L, stat(res.values("prefix-length", task, a, headline(task))))
                      for L in lengths if (a := res.prefix_arm("prefix-length", task, variant, L))]
            points = [(L, s) for L, s in points if s.n]
            if points:
                ax.errorbar([L for L, _ in points], [s.mean for _, s in points],
                            yerr=[s.std or 0.0 for _, s in points], marker="o", capsize=3, label=variant)
        ax.set_xscale("log")
        ax.set_xlabel("prefix length")
        ax.set_ylabel(f"dev {headline(task)}")
        ax.set_title(f"prefix-length {task}", fontsize=9)
        ax.legend(fontsize=7)
    return fig, "Prefix length: mean ± std over seeds of the headline dev metric per variant."


def _plot_solo_t(res: Results, plt: Any) -> tuple[Any, str] | None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    for protocol in res.suite.protocols:
        for task in res.tasks(protocol):
            for arm in res.arms(protocol, task):
                points = _first_seed_curve(res.get(protocol, task, arm), "solo_t")
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], label=f"{protocol}/{arm}", linewidth=1)
                    drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("mean t")
    ax.legend(fontsize=6, ncol=2)
    return fig, "Solo Connection: the mean homotopy coefficient t over training (lowest seed of each arm)."


def _plot_gates(res: Results, plt: Any) -> tuple[Any, str] | None:
    protocol = "prefix-length"
    panels = []
    for task in res.tasks(protocol):
        for variant in ("gate", "residual+gate"):
            lines = [(L, _first_seed_curve(res.get(protocol, task, a), "gate")) for L in res.lengths(protocol)
                     if (a := res.prefix_arm(protocol, task, variant, L))]
            lines = [(L, pts) for L, pts in lines if pts]
            if lines:
                panels.append((f"{task} {variant}", lines))
    if not panels:
        return None
    fig, axes = _grid(plt, len(panels))
    for ax, (title, lines) in zip(axes, panels):
        for length, points in lines:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=f"l={length}", linewidth=1)
        ax.set_xlabel("step")
        ax.set_ylabel("mean gate")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    return fig, "Gate trends: the mean gate value over layers and prefix tokens vs step, per prefix length."
