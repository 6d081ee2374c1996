"""`peftlab bench quality docs`: regenerate ``docs/benchmarks.md`` and its plots from the suite's result lines.

Everything comes from the newest result line of each run that is still in the suite (lines of protocols or arms
no longer in it are counted and ignored), so the page works on a partial suite: status, verdicts (rules in
:mod:`.verdicts`), the differences from the papers' protocols, one section per protocol, plots, hardware and
versions. The markdown is deterministic: the same results give the same bytes (the PNGs aside).
"""
from __future__ import annotations

import json
import math
import os
import platform
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .results import latest_by_key, read_results
from .runner import (NOT_NEEDED, PlannedRun, adoptable, choose_lr, extension_states, plan, resolved_recipe,
                     selection_score, step_line)
from .suite import RunSpec, Suite, extension_values
from .verdicts import (PREFIX_VARIANTS, RULES, Results, Stat, all_verdicts, convergence_steps, curve, fmt, headline,
                       metric_names, metric_value, seed_method_losses, spread, stat, sub)

__all__ = ["PLOT_FILES", "render_benchmarks_doc", "write_benchmarks_doc", "write_plots"]

STATUSES = ("done", "missing", "waiting", "stale", "partial")
DPI = 100
PLOT_FILES = ("e2e_bleu_vs_params.png", "glue_vs_params.png", "e2e_loss_curves.png", "dev_curves.png",
              "prefix_length.png", "solo_t.png", "gates.png")
"""Every plot the page may embed; one with no data this time is deleted from the plot folder."""

DIFFERENCES = [
    "Backbones: SmolLM2-135M for E2E (the papers: GPT-2 M) and MiniLM-L6 for GLUE (the papers: RoBERTa-base / "
    "BERT-base), so absolute numbers are not comparable with the papers' tables, only the comparisons between arms.",
    "Budget: a fixed number of optimizer steps (1000 × batch 8 on e2e-mini, 19% of an epoch) instead of 5 epochs.",
    "Decoding: greedy instead of beam search with beam 10 (and no length penalty or n-gram blocking tuning).",
    "Learning rates: one lr per method, chosen on dev loss / dev score from a short grid at a short budget "
    "({lr_grids}), then checked at the full budget against the next lower grid lr: on E2E (lr-check-e2e), and on "
    "each GLUE task for itself (lr-check-glue: the GLUE lr is per method and task), instead of each paper's tuned "
    "values.",
    "GLUE head: every arm trains MiniLM's pooler with the classifier (peft trains BERT's classifier alone; RoBERTa's "
    "classification head, which the papers used, has its own trained dense layer). all-MiniLM-L6-v2's pooler was "
    "never trained for [CLS]; frozen, LoRA stayed at chance on three of four tasks. The head (the pooler's 147,840 "
    "parameters + the classifier's 385-770) is in every arm's trainable count.",
    "Hardware: CPU training on 2 cores, not GPUs in fp32/fp16: the E2E protocols in bf16 (native bf16 kernels, or "
    "on a CPU that only emulates bf16, bf16 products through fp32 kernels), the GLUE ones in fp32; the machines "
    "that finished the runs are counted under Hardware and versions.",
    "Prefix-length study on SST-2 only (one GLUE task; on MRPC, the first choice, the prefix arms stayed at the "
    "majority class at this budget), not on every task and not on E2E.",
    "Methods reconstructed where the papers' text or code is unavailable (Solo Connection, the gated residual "
    "prefix): every unknown is a config knob, see docs/methods/.",
]


def write_benchmarks_doc(suite: Suite, results_path: Path, out: Path, *, runs_dir: Path,
                         data_dir: str | Path | None = None) -> Path:
    """Write ``out`` (markdown) and its plots in ``out.with_suffix("")``; returns ``out``.

    Every number comes from the results file, except the majority-class floor of each GLUE classification task,
    read from its dev labels under ``data_dir`` (default ``$PEFTLAB_DATA_DIR``; without the data, no floor is shown).
    A line of the results file that does not parse raises :class:`~peftlab.bench.results.ResultsFileError`
    (file:line)."""
    out = Path(out)
    lines = read_results(results_path)
    plot_dir = out.with_suffix("")
    source = Path(results_path)
    glue_tasks = {spec.task for spec in suite.runs if spec.task != "e2e"}
    text = render_benchmarks_doc(suite, lines, plan(suite, source, Path(runs_dir)),
                                 lambda res: write_plots(res, plot_dir), plot_dir.name,
                                 source.as_posix() if not source.is_absolute() else source.name,
                                 floors=majority_floors(sorted(glue_tasks), data_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def render_benchmarks_doc(suite: Suite, lines: list[dict[str, Any]], planned: list[PlannedRun],
                          plots: Callable[[Results], dict[str, str | None]] | None = None,
                          plot_folder: str = "benchmarks", source: str = "benchmarks/results/quality.jsonl",
                          floors: dict[str, MajorityFloor] | None = None) -> str:
    """The markdown page. ``lines``: every result line in file order; ``planned``: runner.plan of the suite;
    ``plots``: writes the figures and returns {plot file: caption or None when there is no data}; ``source``: the
    results file as the page names it; ``floors``: :func:`majority_floors` of the GLUE tasks (shown under their
    tables)."""
    latest = latest_by_key(lines)
    keys = {spec.key for spec in suite.runs}
    stale = {p.spec.key for p in planned if _not_comparable(p)}
    current = {k: r for k, r in latest.items() if k in keys and k not in stale}
    res = Results(suite, current)
    made = plots(res) if plots else {}
    md = ["# Benchmarks: the quality suite", "",
          f"Generated by `peftlab bench quality docs` from `{source}` and "
          f"`{suite.path.name}`; do not edit by hand. Regenerate everything with:", "", "```",
          "peftlab bench quality plan    # what is done, missing, waiting for the lr grid",
          "peftlab bench quality run     # train and record what is missing (resumable)",
          "peftlab bench quality docs    # rewrite this page and its plots", "```", ""]
    md += _status(suite, res, planned, lines, latest, current)
    md += _verdicts(res)
    grids = "; ".join(f"{n}: {_grid_words(p)}" for n, p in suite.protocols.items()
                      if (p or {}).get("lr_grid") or (p or {}).get("lr_grid_factors")) or "no lr grid in this suite"
    md += ["## Differences from the papers' protocols", ""] + [f"- {d.replace('{lr_grids}', grids)}"
                                                              for d in DIFFERENCES] + [""]
    for name in suite.protocols:
        md += _protocol_section(suite, res, name, latest, floors or {})
    md += ["## Plots", ""]
    for file in PLOT_FILES:
        caption = made.get(file)
        title = file[:-4].replace("_", " ")
        md += [f"![{title}]({plot_folder}/{file})", "", caption, ""] if caption else [f"- {title}: no data yet", ""]
    md += _hardware(current)
    return "\n".join(md).rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------------ formatting helpers
def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """A markdown table; the first ``left`` columns left-aligned, the others right-aligned."""
    align = ["---" if i < left else "---:" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"] + \
        ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _int(value: float | None) -> str:
    return "—" if value is None else f"{round(value):,}"


def _seconds(value: float) -> str:
    return f"{value:,.0f} s" + (f" ({value / 3600:.1f} h)" if value >= 3600 else "")


def _not_comparable(item: PlannedRun) -> bool:
    """A result line made with another recipe (stale), or before the lr it should use was decided (waiting)."""
    return item.record is not None and item.status in ("stale", "waiting")


def _last(points: list[Any]) -> Any:
    """The value of a curve's last point (None for an empty or malformed curve)."""
    return points[-1][1] if points and isinstance(points[-1], (list, tuple)) and len(points[-1]) >= 2 else None


def _lr(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _grid_words(raw: dict[str, Any]) -> str:
    """``×0.333, ×1, ×3 the recipe lr, + up to 2 lrs beyond an edge the best lands on`` for a grid protocol."""
    factors = raw.get("lr_grid_factors")
    values = sorted(factors or raw.get("lr_grid") or [])
    text = ", ".join(f"×{v:g}" for v in values) + " the recipe lr" if factors else \
        "lr " + ", ".join(f"{v:g}" for v in values)
    extend = int(raw.get("lr_grid_extend") or 0)
    if extend:
        text += f", + up to {extend} lr(s) beyond an edge the best lands on"
    return text


# ------------------------------------------------------------------------------------------------------------ status
def _status(suite: Suite, res: Results, planned: list[PlannedRun], lines: list[dict[str, Any]],
            latest: dict[str, Any], current: dict[str, Any]) -> list[str]:
    done_seconds: dict[tuple[str, str], list[float]] = {}  # (protocol, base_arm or "") -> train seconds of done runs
    for item in planned:
        seconds = (item.record or {}).get("train_seconds")
        if item.status == "done" and isinstance(seconds, (int, float)) and math.isfinite(seconds):
            for key in ((item.spec.protocol, item.spec.base_arm), (item.spec.protocol, "")):
                done_seconds.setdefault(key, []).append(float(seconds))
    rows, complete, incomplete = [], [], []
    for name in suite.protocols:
        # lr-grid extension runs count once needed; "not needed" ones never, undecided ones as "up to" a number
        items = [p for p in planned if p.spec.protocol == name and p.status != NOT_NEEDED and not p.conditional]
        possible = _possible_extensions([p for p in planned if p.spec.protocol == name and p.conditional])
        counts = Counter(p.status for p in items)
        recorded = sum(float(r.get("train_seconds") or 0) for r in current.values() if r["protocol"] == name
                       and isinstance(r.get("train_seconds"), (int, float)))
        estimate, unknown = 0.0, 0
        for p in items:
            if p.status == "done" or p.spec.baseline:
                continue
            known = done_seconds.get((name, p.spec.base_arm)) or done_seconds.get((name, ""))
            if known:
                estimate += sum(known) / len(known)
            else:
                unknown += 1
        left = f"≈ {_seconds(estimate)}" if estimate or not unknown else ""
        if unknown:
            left += (" + " if left else "unknown: ") + f"{unknown} run(s) with no done run of their arm or " \
                                                      "protocol to estimate from"
        if possible:
            left += f"; + up to {possible} lr-grid extension run(s), if best lrs land on a grid edge"
        rows.append([name, str(len(items))] + [str(counts.get(s, 0)) for s in STATUSES] + [_seconds(recorded), left])
        if items and counts.get("done", 0) == len(items) and not possible:
            complete.append(name)
        else:
            incomplete.append(f"{name} ({counts.get('done', 0)} of {len(items)} done)")
    md = ["## Status", ""] + _table(["protocol", "runs", *STATUSES, "train time recorded", "remaining (estimate)"],
                                    rows)
    md.append(f"Complete: {', '.join(complete) or 'none'}. Not complete: {', '.join(incomplete) or 'none'}.")
    md.append("")
    bf16 = [name for name in suite.protocols
            if any((s.recipe.get("run") or {}).get("bf16") is True
                   for s in suite.protocol_runs(name) if not s.baseline)]
    if bf16:
        fp32 = [name for name in suite.protocols if name not in bf16]
        md.append(f"Trained in bf16: {', '.join(bf16)}; in fp32: {', '.join(fp32) or 'none'}. On a CPU that "
                  "multiplies bf16 natively (AVX512-BF16 or AMX) or a GPU, a bf16 run uses the native kernels; on one "
                  "that only emulates bf16 (AVX2, or AVX512 without AVX512-BF16) every bf16 matrix product runs "
                  "through an fp32 kernel and is rounded to bf16 once, which is what a native bf16 kernel computes, "
                  "up to the order of the fp32 sums (peftlab.train.bf16_gemm: a LoRA step on SmolLM2 took 2.6 s there against 2.2 s in fp32 and "
                  "83 s in torch's emulated kernels; reading the frozen weights from fp32 copies, the same bits, "
                  "since 2026-12-07: 2.5 s against 2.8 s upcasting them at every product, on an AVX512 CPU without "
                  "bf16; 1.95 s against 2.05 s since the products' CPU kernels are replaced instead of every op passing "
                  "through a dispatch mode, the same bits). Compile is skipped there, so such a run of "
                  "an arm with compile trains eagerly (its result line says `compiled: false`). The machine that "
                  "finished each run is in its result line (Hardware and versions, below).")
        md.append("")
    stale = sum(1 for p in planned if _not_comparable(p))
    md.append(f"The remaining compute is an estimate: the mean train time of the done runs of the same arm in the "
              f"same protocol (else of the protocol). The runs of an lr grid with lr_grid_extend count its extension "
              f"runs once they are needed; the ones not needed are not counted, and the ones not decided yet only "
              f"as \"up to\" (the most that can still run). {len(lines)} result line(s) read: {len(current)} current, "
              f"{len(lines) - len(latest)} superseded by a newer line of the same run, {len(latest) - len(current) - stale} "
              f"ignored (their protocol or arm is no longer in the suite), {stale} stale (made with another recipe "
              f"than the suite's now, or before its lr grid decided: left out of the tables and verdicts until re-run "
              f"with `--rerun-stale`).")
    old = [p for p in planned if _not_comparable(p)]
    if old:
        md += ["", "Result lines not compared (kept in the results file): stale ones were made with another recipe "
                   "than the suite now gives (history); waiting ones before their lr was decided (they count once "
                   "it is, if it is theirs):", ""]
        rows = []
        for item in old:
            record = item.record or {}
            name = headline(item.spec.task)
            value = (record.get("metrics") or {}).get(name)
            rows.append([item.spec.key, f"{record.get('lr', float('nan')):g}",
                         f"{name} {value:.4f}" if isinstance(value, (int, float)) else "—",
                         item.reason or item.status])
        md += _table(["run", "its lr", "headline", "why not compared"], rows)
    return md + [""]


def _possible_extensions(undecided: list[PlannedRun]) -> int:
    """The most undecided lr-grid extension runs that can still run: per arm, one side's (only one edge can hold
    the best lr)."""
    by_side = Counter((p.spec.base_arm, p.spec.extension_side) for p in undecided)
    arms = {arm for arm, _ in by_side}
    return sum(max(by_side.get((arm, side), 0) for side in ("up", "down")) for arm in arms)


# ---------------------------------------------------------------------------------------------------------- verdicts
def _verdicts(res: Results) -> list[str]:
    verdicts = all_verdicts(res)
    md = ["## Verdicts", ""] + _table(["claim", "what we measured", "verdict", "reason"],
                                      [[v.claim, v.measured, f"**{v.label}**", v.reason] for v in verdicts], left=4)
    md += ["Rules:", ""] + [f"- {rule}" for rule in RULES] + [""]
    losses = seed_method_losses(res)
    md += ["Where a seed method loses (headline metric, by the rule above):", ""]
    md += [f"- {line}" for line in losses] if losses else ["- no measured loss yet"]
    return md + [""]


# --------------------------------------------------------------------------------------------------------- protocols
def _protocol_section(suite: Suite, res: Results, name: str, latest: dict[str, dict[str, Any]] | None = None,
                      floors: dict[str, MajorityFloor] | None = None) -> list[str]:
    """One protocol's section; ``latest``: the newest line of every key, compared or not (the copies an lr check
    will make are shown from it)."""
    raw = suite.protocols[name] or {}
    md = [f"## Protocol `{name}`", ""]
    if raw.get("description"):
        md += [str(raw["description"]), ""]
    md += [f"Budget: {res.budget(name)} per run; seeds {raw.get('seeds', [0])}.", ""]
    if raw.get("lr_grid") or raw.get("lr_grid_factors"):
        return md + _lr_grid_table(suite, res, name)
    if raw.get("lr_steps") is not None:
        return md + _lr_steps_table(suite, res, name, latest or res.records)
    for task in res.tasks(name):
        if len(res.tasks(name)) > 1 or raw.get("task") == "glue":
            md += [f"### {name} / {task}", ""]
        md += _prefix_table(res, name, task) if raw.get("prefix_lengths") else _arm_table(res, name, task)
        md += _majority_note(res, name, task, (floors or {}).get(task))
    return md


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
    from ..data import load_glue
    from ..errors import DataError
    from ..metrics.glue import glue_metrics

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


def _majority_note(res: Results, protocol: str, task: str, floor: MajorityFloor | None) -> list[str]:
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


def _arm_table(res: Results, protocol: str, task: str) -> list[str]:
    names = metric_names(task, [r for (p, t, _), g in res.groups.items() if (p, t) == (protocol, task) for r in g])
    dev_key = "dev_loss" if task == "e2e" else names[0]
    arms = res.arms(protocol, task)
    lora = res.field(protocol, task, "lora", "trainable_params").mean if "lora" in arms else None
    solo_t = any(curve(r, "solo_t") for a in arms for r in res.get(protocol, task, a))
    header = ["arm", "n", "trainable"] + (["× LoRA"] if "lora" in arms else []) + ["stored"] + list(names) + \
        [f"best dev {'loss' if task == 'e2e' else dev_key}", "lr", "train s", "peak MB"] + \
        (["final t"] if solo_t else [])
    rows = []
    mixed = False
    for arm in arms:
        group = res.get(protocol, task, arm)
        trainable = res.field(protocol, task, arm, "trainable_params").mean
        row = [arm, f"{len(group)}/{res.expected.get((protocol, task, arm), 0)}", _int(trainable)]
        if "lora" in arms:
            row.append(f"{trainable / lora:.2f}×" if trainable and lora else "—")
        row.append(_int(res.field(protocol, task, arm, "stored_params").mean))
        row += [stat(res.values(protocol, task, arm, m)).text(with_n=False) for m in names]
        row.append(stat(sub(r, "dev").get(dev_key) for r in group).text(with_n=False))
        row.append(", ".join(dict.fromkeys(_lr(r.get("lr")) for r in group if r.get("lr") is not None)) or "—")
        row += [_int(res.field(protocol, task, arm, k).mean) for k in ("train_seconds", "peak_memory_mb")]
        if len({_machine(r) for r in group}) > 1:
            row[-2] += "*"
            mixed = True
        if solo_t:
            row.append(stat(_last(curve(r, "solo_t")) for r in group).text(with_n=False))
        rows.append(row)
    notes = ["n: seeds with a result line / seeds in the suite. Metrics: mean ± sample std over seeds, "
             "headline first" + ("; BLEU, METEOR and ROUGE_L are fractions in [0, 1]." if task == "e2e" else ".")]
    if solo_t:
        notes.append("final t: Solo's homotopy coefficient at the last logged step (1 = the full connection).")
    if mixed:
        notes.append("train s*: that arm's seeds ran on different machines (or kernels: native bf16, or bf16 "
                     "products through fp32 kernels), so its mean time mixes them; compare times within one machine "
                     "(Hardware and versions).")
    return _table(header, rows) + notes + _floor_check(res, protocol, task, arms, names) + \
        _spikes(res, protocol, task, arms) + _untrained(res, protocol, task, arms) + [""]


def _untrained(res: Results, protocol: str, task: str, arms: Sequence[str]) -> list[str]:
    """A note naming the runs whose best dev score is the one before training (best step 0): what they report is
    the untrained model (its head or adapter at init), so training never beat it within the budget."""
    found = [f"{arm} seed {r.get('seed')}" for arm in arms for r in res.get(protocol, task, arm)
             if r.get("best_step") == 0 and (r.get("steps") or 0) > 0]
    if not found:
        return []
    return ["", f"Never better than before training (best dev score at step 0, so the metrics above are the untrained "
                f"model's): {'; '.join(found)}. The lr chosen on the grid task may not suit this task, or the budget "
                f"is too short for it."]


SPIKE = 0.05
"""A dev loss that rises by more than this fraction between two evaluations marks the run as unstable."""


def dev_spikes(record: dict[str, Any]) -> list[tuple[int, float, float]]:
    """(step, dev loss before, dev loss at that step) wherever the dev loss rose by more than :data:`SPIKE`."""
    points = [(p[0], p[1]) for p in curve(record, "dev") if isinstance(p, (list, tuple)) and len(p) >= 2
              and isinstance(p[1], (int, float)) and math.isfinite(p[1])]
    return [(step, before, after) for (_, before), (step, after) in zip(points, points[1:])
            if before > 0 and after > before * (1 + SPIKE)]


def _spikes(res: Results, protocol: str, task: str, arms: Sequence[str]) -> list[str]:
    """A note naming the runs whose dev loss jumped (an lr too hot for the budget), E2E only (GLUE logs scores)."""
    if task != "e2e" or not any(res.get(protocol, task, arm) for arm in arms):
        return []
    found = []
    for arm in arms:
        for record in res.get(protocol, task, arm):
            jumps = dev_spikes(record)
            if jumps:
                step, before, after = max(jumps, key=lambda j: j[2] / j[1])
                found.append(f"{arm} seed {record.get('seed')} (step {step}: {before:.3f} -> {after:.3f})")
    if not found:
        return ["", f"Stability: no run's dev loss rose by more than {SPIKE:.0%} between two evaluations."]
    return ["", f"Unstable runs (the dev loss rose by more than {SPIKE:.0%} between two evaluations; the best step "
                f"is still what is scored): {'; '.join(found)}."]


def _floor_check(res: Results, protocol: str, task: str, arms: Sequence[str], names: Sequence[str]) -> list[str]:
    """Whether the budget is enough: the reference arm (LoRA) against the template floor, metric by metric."""
    floor = next((a for a in arms if any(r.get("trainable_params") == 0 for r in res.get(protocol, task, a))), None)
    if task != "e2e" or floor is None or "lora" not in arms or not res.get(protocol, task, "lora"):
        return []
    parts, above = [], 0
    for name in names:
        ours, base = stat(res.values(protocol, task, "lora", name)), stat(res.values(protocol, task, floor, name))
        if ours.mean is None or base.mean is None:
            continue
        diff = ours.mean - base.mean
        above += diff > 0
        parts.append(f"{name} {diff:+.4g}")
    n = len(res.get(protocol, task, "lora"))
    verdict = ("LoRA is above the floor on every metric" if above == len(parts)
               else f"LoRA is above the floor on {above} of {len(parts)} metrics only: the budget does not yet make "
                    f"LoRA clearly better than the template system")
    return ["", f"Budget check: LoRA ({n} seed{'s' if n != 1 else ''}) minus the {floor} row: {', '.join(parts)}. "
                f"{verdict}."]


def _lr_grid_table(suite: Suite, res: Results, protocol: str) -> list[str]:
    raw = suite.protocols[protocol]
    factors = raw.get("lr_grid_factors")
    values = list(factors or raw.get("lr_grid") or [])
    positions = sorted(values)
    extend = int(raw.get("lr_grid_extend") or 0)
    beyond = {(side, k): v for side, k, v in extension_values(values, extend)}  # the factor (or lr) of each column
    e2e = raw.get("task") == "e2e"
    specs = [s for s in suite.runs if s.protocol == protocol and s.lr is not None]
    current = res.records
    columns: list[tuple[str | None, int]] = [("down", k) for k in range(extend, 0, -1)] + \
        [(None, i) for i in range(len(positions))] + [("up", k) for k in range(1, extend + 1)]
    shown: set[tuple[str | None, int]] = {c for c in columns if c[0] is None}
    cells_of: list[tuple[str, dict[tuple[str | None, int], str], str]] = []
    for base in dict.fromkeys(s.base_arm for s in specs):
        own = [s for s in specs if s.base_arm == base]
        probe = RunSpec("", "", "", 0, "", lr_from=protocol, lr_arm=base)
        chosen, why = choose_lr(probe, suite, current)

        def scored(lr: float) -> str:
            scores = [selection_score(current[s.key]) for s in own if s.lr == lr and s.key in current]
            value = stat(-x if e2e and x is not None else x for x in scores)
            cell = f"{lr:g}: {value.text(with_n=False)}"
            return f"**{cell}**" if chosen is not None and lr == chosen else cell

        lrs = sorted({float(s.lr) for s in own if not s.grid_extension})
        cells: dict[tuple[str | None, int], str] = {(None, i): scored(lr) for i, lr in enumerate(lrs)}
        ran, used = list(lrs), Counter()
        for column, state in extension_states(suite, protocol, base, current).items():
            if state.state == "needed":
                ran.append(float(state.lr))
                used[column[0]] += 1
                cells[column] = scored(float(state.lr)) if any(s.key in current for s in state.runs) \
                    else f"{state.lr:g}: to run"
            cells.setdefault(column, "?" if state.state == "waiting" else "—")
            if state.state != NOT_NEEDED:
                shown.add(column)
        # an edge of everything that ran, with no extension left on that side: a value beyond might be better still
        edge = chosen is not None and len(ran) > 1 and any(
            chosen == at and used[side] >= extend for side, at in (("up", max(ran)), ("down", min(ran))))
        last = (_lr(chosen) + (" (grid edge)" if edge else "")) if chosen is not None else why
        cells_of.append((base, cells, last))
    columns = [c for c in columns if c in shown]

    def title(column: tuple[str | None, int]) -> str:
        side, index = column
        value = positions[index] if side is None else beyond[column]
        return (f"lr × {value:g}" if factors else f"lr {value:g}") + ("" if side is None else " (ext)")

    header = ["arm"] + [title(c) for c in columns] + ["chosen lr"]
    rows = [[base] + [cells.get(c, "") for c in columns] + [last] for base, cells, last in cells_of]
    users = [n for n, p in suite.protocols.items() if (p or {}).get("lr_from") == protocol]
    what = "best dev loss (lower is better)" if e2e else "best dev score (higher is better)"
    note = (f"Each cell: lr: {what}, mean over seeds. The grid is the same procedure for every method: "
            f"{_grid_words(raw)}")
    if extend:
        ordered = sorted(set(float(v) for v in values))
        note += (f". The extension rule (lr_grid_extend: {extend}): once every grid run of an arm is done and its "
                 f"best lr is the largest (smallest) one run, one more lr runs beyond it, "
                 f"× {ordered[-1] / ordered[-2]:.3g} (÷ {ordered[1] / ordered[0]:.3g}: the ratio of the two "
                 f"outermost grid values on that side), up to {extend} per side, each only while the newest point is still the "
                 f"best. (ext) columns: those lrs; \"—\": not needed, \"?\": decided once the runs before it are "
                 f"done, \"to run\": needed, not run yet")
    tolerance = float(raw.get("lr_select_tolerance", 0.0) or 0.0)
    rule = (f"the smallest lr whose mean dev score is within {tolerance:.2%} of the best (lr_select_tolerance: a "
            f"near tie goes to the safer, smaller lr; the extensions still follow the strict best)" if tolerance
            else "the best mean dev score (ties: the smaller lr)")
    note += (f". **Bold**: the chosen lr, {rule}, among the grid"
             f"{' and its needed extensions' if extend else ''}, chosen only when all of "
             f"them are done; it is the lr that {', '.join(users) or 'no protocol'} used for that arm. \"grid edge\": "
             f"the chosen lr is the smallest or largest that ran"
             f"{f' and no extension is left on that side ({extend} per side)' if extend else ''}, so a value beyond "
             f"it might be better still.")
    return _table(header, rows) + [note, ""]


def _lr_steps_table(suite: Suite, res: Results, protocol: str, latest: dict[str, dict[str, Any]]) -> list[str]:
    """One row per arm (per arm and task with ``lr_per_task``): each lr step's lr, best dev score and first metric,
    and the lr the protocol chose."""
    raw = suite.protocols[protocol]
    steps = list(raw["lr_steps"])
    specs = [s for s in suite.runs if s.protocol == protocol and s.lr_step is not None]
    current = res.records
    e2e = raw.get("task") == "e2e"
    metric = "BLEU" if e2e else None
    per_task = bool(raw.get("lr_per_task"))
    rows = []
    for base, task in dict.fromkeys((s.base_arm, s.task if per_task else None) for s in specs):
        own = [s for s in specs if s.base_arm == base and (task is None or s.task == task)]
        chosen, why = choose_lr(RunSpec("", task or "", "", 0, "", lr_from=protocol, lr_arm=base), suite, current)
        row = [base] + ([task] if per_task else [])
        for step in steps:
            at = [s for s in own if s.lr_step == step]
            lines = [step_line(s, suite, current) for s in at]
            lr = lines[0][0] if lines else None
            records = [record for _, _, record in lines if record is not None]
            if lr is None:
                row.append("?")
                continue
            copied = ""
            if not records:  # the same run as another protocol's line: the runner copies it when it gets there
                twins = [adoptable(s, recipe, latest) for s in at
                         if (recipe := resolved_recipe(s, suite, current)) is not None]
                records = [t for t in twins if t is not None]
                copied = " (copy of its twin, to record)" if records else ""
            if not records:
                row.append(f"{lr:g}: to run")
                continue
            dev = stat(-selection_score(r) if e2e and selection_score(r) is not None else selection_score(r)
                       for r in records)
            name = metric or next(iter(records[0]["metrics"]), "")
            cell = (f"{lr:g}: {dev.text(with_n=False)}; {name} "
                    f"{stat(r['metrics'].get(name) for r in records).text(with_n=False)}{copied}")
            row.append(f"**{cell}**" if chosen is not None and math.isclose(lr, chosen, rel_tol=1e-9) else cell)
        row.append(_lr(chosen) if chosen is not None else why)
        rows.append(row)

    def title(step: int) -> str:
        return "grid's choice" if step == 0 else f"{abs(step)} grid lr{'s' if abs(step) > 1 else ''} " \
            f"{'lower' if step < 0 else 'higher'}"

    header = ["arm"] + (["task"] if per_task else []) + [title(k) for k in steps] + ["chosen lr"]
    users = [n for n, p in suite.protocols.items() if (p or {}).get("lr_from") == protocol]
    what = "best dev loss (lower is better)" if e2e else "best dev score (higher is better)"
    tolerance = float(raw.get("lr_select_tolerance", 0.0) or 0.0)
    rule = (f"the smallest lr within {tolerance:.2%} of the best dev score (lr_select_tolerance)" if tolerance
            else "the best dev score (ties: the smaller lr)")
    note = (f"The choice of {raw.get('lr_from')} checked at this protocol's budget: each arm at the lr its grid chose "
            f"and at the grid's lr{'s' if len(steps) > 2 else ''} beside it. Each cell: lr: {what}"
            f"{f'; {metric} on the decoded test MRs' if metric else ''}, mean over seeds. A run whose recipe and seed "
            f"equal another protocol's run is that run, its line copied. **Bold**: the chosen lr, {rule}; it is the lr "
            f"{', '.join(users) or 'no protocol'} uses for that arm"
            f"{' on that task (lr_per_task: each task its own choice, from its own dev score)' if per_task else ''}, "
            f"chosen once every step of the arm is done.")
    return _table(header, rows) + [note, ""]


def _prefix_table(res: Results, protocol: str, task: str) -> list[str]:
    lengths = res.lengths(protocol)
    name = headline(task)
    rows = []
    for variant in PREFIX_VARIANTS:
        arms = [res.prefix_arm(protocol, task, variant, L) for L in lengths]
        if not any(arms):
            continue
        stats = {L: stat(res.values(protocol, task, a, name)) if a else Stat(()) for L, a in zip(lengths, arms)}
        steps = stat(convergence_steps(res, protocol, task, variant, lengths))
        rows.append([variant] + [s.text() for s in stats.values()] + [fmt(spread(stats)), steps.text(0)])
    return _table(["variant"] + [f"l={L}" for L in lengths] + ["spread", "steps to 95%"], rows) + [
        f"Cells: dev {name}, mean ± std over seeds (n). spread: max − min of the means over lengths. steps to 95%: "
        "the first logged step at which a run's dev score reached 95% of its final value, over every run.", ""]


# ------------------------------------------------------------------------------------------------------------- plots
def _pyplot():
    from .._optional import require

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


# ---------------------------------------------------------------------------------------------------------- hardware
def _machine(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """The machine that finished a run and the kernels of its bf16 products (None where not recorded)."""
    from ..hardware import summary as hardware_summary

    hardware = record.get("hardware")
    return (hardware_summary(hardware) if isinstance(hardware, dict) else None, record.get("bf16_matmuls"))


def _hardware(current: dict[str, dict[str, Any]]) -> list[str]:
    try:
        import torch

        threads = str(torch.get_num_threads())
    except Exception:  # torch missing or broken: the page still renders
        threads = "?"
    records = [current[k] for k in sorted(current)]
    versions = Counter(json.dumps(r["versions"], sort_keys=True) for r in records
                       if isinstance(r.get("versions"), dict))
    revisions = Counter(str(r["git_revision"]) for r in records if r.get("git_revision"))
    md = ["## Hardware and versions", "",
          f"- This page was generated on: {platform.platform()}; processor {platform.processor() or platform.machine()}"
          f"; {os.cpu_count()} CPUs; torch threads {threads}.", "",
          "Versions recorded in the result lines (lines):", ""]
    md += [f"- `{v}` ({n})" for v, n in sorted(versions.items())] or ["- none recorded"]
    machines = Counter(_machine(r)[0] for r in records if not r.get("baseline"))
    md += ["", "Machines that finished the runs (lines; recorded since 2026-12-07, the lines before name none):", ""]
    md += [f"- {m or 'not recorded'} ({n})"
           for m, n in sorted(machines.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))]
    if not machines:
        md += ["- none recorded"]
    kernels = Counter((r.get("bf16_matmuls"), r.get("compile"), r.get("compiled")) for r in records
                      if not r.get("baseline") and (r.get("recipe") or {}).get("run", {}).get("bf16") is True)
    if kernels:
        md += ["", "bf16 lines by the kernels of their matrix products and by compile (recorded since 2026-12-07 "
               "evening; older lines: native kernels, compiled as their protocol asked):", ""]
        for (matmuls, asked, compiled), n in sorted(kernels.items(), key=lambda kv: str(kv[0])):
            how = {"fp32 kernels": "bf16 products through fp32 kernels (bf16 emulated)",
                   "native": "native bf16 kernels"}.get(matmuls, "kernels not recorded")
            if compiled is None:
                comp = f"compile {asked}" if asked is not None else "compile not recorded"
            else:
                comp = "compiled" if compiled else ("eager (compile skipped)" if asked not in (False, None)
                                                   else "eager")
            md.append(f"- {how}, {comp} ({n})")
    md += ["", "Git revisions of the runs (lines):", ""]
    md += [f"- `{v}` ({n})" for v, n in sorted(revisions.items())] or ["- none recorded"]
    return md + [""]
