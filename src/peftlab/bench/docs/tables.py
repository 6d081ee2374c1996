"""The per-protocol result tables: one row per arm (with its notes: budget check against the template floor,
unstable runs, untrained results), and the prefix-length table (one row per variant, one column per length)."""
from __future__ import annotations

import math
from typing import Any, Sequence

from ..evidence import PREFIX_VARIANTS, Results, Stat, curve, fmt, headline, metric_names, stat, sub
from ..record import REPEATS
from ..verdicts import convergence_steps, spread
from .text import int_text, last_value, lr_text, machine_of, md_table


def arm_table(res: Results, protocol: str, task: str) -> list[str]:
    names = metric_names(task, [r for (p, t, _), g in res.groups.items() if (p, t) == (protocol, task) for r in g])
    dev_key = "dev_loss" if task == "e2e" else names[0]
    arms = res.arms(protocol, task)
    lora = res.field(protocol, task, "lora", "trainable_params").mean if "lora" in arms else None
    solo_t = any(curve(r, "solo_t") for a in arms for r in res.get(protocol, task, a))
    repeats = any(r.get(REPEATS) is not None for a in arms for r in res.get(protocol, task, a))
    header = ["arm", "n", "trainable"] + (["× LoRA"] if "lora" in arms else []) + ["stored"] + list(names) + \
        (["repeating outputs"] if repeats else []) + \
        [f"best dev {'loss' if task == 'e2e' else dev_key}", "lr", "train s", "peak MB"] + \
        (["final t"] if solo_t else [])
    rows = []
    mixed = False
    for arm in arms:
        group = res.get(protocol, task, arm)
        trainable = res.field(protocol, task, arm, "trainable_params").mean
        row = [arm, f"{len(group)}/{res.expected.get((protocol, task, arm), 0)}", int_text(trainable)]
        if "lora" in arms:
            row.append(f"{trainable / lora:.2f}×" if trainable and lora else "—")
        row.append(int_text(res.field(protocol, task, arm, "stored_params").mean))
        row += [stat(res.values(protocol, task, arm, m)).text(with_n=False) for m in names]
        if repeats:
            counted = stat(r.get(REPEATS) for r in group)
            row.append(counted.text(digits=1, with_n=counted.n != len(group)))
        row.append(stat(sub(r, "dev").get(dev_key) for r in group).text(with_n=False))
        row.append(", ".join(dict.fromkeys(lr_text(r.get("lr")) for r in group if r.get("lr") is not None)) or "—")
        row += [int_text(res.field(protocol, task, arm, k).mean) for k in ("train_seconds", "peak_memory_mb")]
        if len({machine_of(r) for r in group}) > 1:
            row[-2] += "*"
            mixed = True
        if solo_t:
            row.append(stat(last_value(curve(r, "solo_t")) for r in group).text(with_n=False))
        rows.append(row)
    notes = ["n: seeds with a result line / seeds in the suite. Metrics: mean ± sample std over seeds, "
             "headline first" + ("; BLEU, METEOR and ROUGE_L are fractions in [0, 1]." if task == "e2e" else ".")]
    if repeats:
        notes.append("repeating outputs: how many of the decoded outputs repeat one of their own word 3-grams "
                     "(`peftlab.metrics.repetition`; recorded since 2026-12-08: (n=k) where only k seeds have it).")
    if solo_t:
        notes.append("final t: Solo's homotopy coefficient at the last logged step (1 = the full connection).")
    if mixed:
        notes.append("train s*: that arm's seeds ran on different machines (or kernels: native bf16, or bf16 "
                     "products through fp32 kernels), so its mean time mixes them; compare times within one machine "
                     "(Hardware and versions).")
    return md_table(header, rows) + notes + _floor_check(res, protocol, task, arms, names) + \
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


def prefix_table(res: Results, protocol: str, task: str) -> list[str]:
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
    return md_table(["variant"] + [f"l={L}" for L in lengths] + ["spread", "steps to 95%"], rows) + [
        f"Cells: dev {name}, mean ± std over seeds (n). spread: max − min of the means over lengths. steps to 95%: "
        "the first logged step at which a run's dev score reached 95% of its final value, over every run.", ""]
