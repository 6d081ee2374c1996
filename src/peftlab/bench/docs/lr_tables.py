"""The tables of the lr-selection protocols: an lr grid (one column per grid value and extension) and an lr check
(the grid's choice against the grid lrs beside it, at the full budget)."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

from ..lr_choice import NOT_NEEDED, choose_lr, extension_states, resolved_recipe, selection_score, step_line
from ..runner import adoptable
from ..suite import RunSpec, Suite, extension_values
from ..evidence import Results, stat
from .text import grid_words, lr_text, md_table


def lr_grid_table(suite: Suite, res: Results, protocol: str) -> list[str]:
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
        last = (lr_text(chosen) + (" (grid edge)" if edge else "")) if chosen is not None else why
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
            f"{grid_words(raw)}")
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
    return md_table(header, rows) + [note, ""]


def lr_steps_table(suite: Suite, res: Results, protocol: str, latest: dict[str, dict[str, Any]]) -> list[str]:
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
        row.append(lr_text(chosen) if chosen is not None else why)
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
    return md_table(header, rows) + [note, ""]
