"""The page itself: status, verdicts, differences from the papers' protocols, one section per protocol, plots,
hardware and versions."""
from __future__ import annotations

import json
import math
import os
import platform
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from ..results import latest_by_key, read_results
from ..lr_choice import NOT_NEEDED
from ..runner import PlannedRun, plan
from ..suite import Suite
from ..evidence import Results, headline
from ..verdicts import RULES, all_verdicts, seed_method_losses
from .decoding import decoding_section, read_checks
from .floors import MajorityFloor, majority_floors, majority_note
from .lr_tables import lr_grid_table, lr_steps_table
from .plots import PLOT_FILES, write_plots
from .tables import arm_table, prefix_table
from .text import grid_words, machine_of, md_table, not_comparable, seconds_text

STATUSES = ("done", "missing", "waiting", "stale", "partial")
DIFFERENCES = [
    "Backbones: SmolLM2-135M for E2E (the papers: GPT-2 M) and MiniLM-L6 for GLUE (the papers: RoBERTa-base / "
    "BERT-base), so absolute numbers are not comparable with the papers' tables, only the comparisons between arms.",
    "Budget: a fixed number of optimizer steps (1000 × batch 8 on e2e-mini, 19% of an epoch) instead of 5 epochs.",
    "Decoding: greedy instead of beam search with beam 10 (and no length penalty or n-gram blocking tuning). Where "
    "the e2e-mini runs' adapters are at hand, `benchmarks/quality/decoding_check.py` decodes them again with the "
    "LoRA paper's E2E beam search (10 beams, length penalty 0.9, no 4-gram repeated within an output), shown under "
    "e2e-mini as a check.",
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
                                 floors=majority_floors(sorted(glue_tasks), data_dir), checks=read_checks(source))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def render_benchmarks_doc(suite: Suite, lines: list[dict[str, Any]], planned: list[PlannedRun],
                          plots: Callable[[Results], dict[str, str | None]] | None = None,
                          plot_folder: str = "benchmarks", source: str = "benchmarks/results/quality.jsonl",
                          floors: dict[str, MajorityFloor] | None = None,
                          checks: list[dict[str, Any]] | None = None) -> str:
    """The markdown page. ``lines``: every result line in file order; ``planned``: runner.plan of the suite;
    ``plots``: writes the figures and returns {plot file: caption or None when there is no data}; ``source``: the
    results file as the page names it; ``floors``: :func:`majority_floors` of the GLUE tasks (shown under their
    tables); ``checks``: :func:`~.decoding.read_checks` (shown under their protocol's section)."""
    latest = latest_by_key(lines)
    keys = {spec.key for spec in suite.runs}
    stale = {p.spec.key for p in planned if not_comparable(p)}
    current = {k: r for k, r in latest.items() if k in keys and k not in stale}
    res = Results(suite, current, checks or ())
    made = plots(res) if plots else {}
    md = ["# Benchmarks: the quality suite", "",
          f"Generated by `peftlab bench quality docs` from `{source}` and "
          f"`{suite.path.name}`; do not edit by hand. Regenerate everything with:", "", "```",
          "peftlab bench quality plan    # what is done, missing, waiting for the lr grid",
          "peftlab bench quality run     # train and record what is missing (resumable)",
          "peftlab bench quality docs    # rewrite this page and its plots", "```", ""]
    md += _status(suite, res, planned, lines, latest, current)
    md += _verdicts(res)
    grids = "; ".join(f"{n}: {grid_words(p)}" for n, p in suite.protocols.items()
                      if (p or {}).get("lr_grid") or (p or {}).get("lr_grid_factors")) or "no lr grid in this suite"
    md += ["## Differences from the papers' protocols", ""] + [f"- {d.replace('{lr_grids}', grids)}"
                                                              for d in DIFFERENCES] + [""]
    for name in suite.protocols:
        md += _protocol_section(suite, res, name, latest, floors or {})
        md += decoding_section(checks or [], name)
    md += ["## Plots", ""]
    for file in PLOT_FILES:
        caption = made.get(file)
        title = file[:-4].replace("_", " ")
        md += [f"![{title}]({plot_folder}/{file})", "", caption, ""] if caption else [f"- {title}: no data yet", ""]
    md += _hardware(current)
    return "\n".join(md).rstrip("\n") + "\n"


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
        left = f"≈ {seconds_text(estimate)}" if estimate or not unknown else ""
        if unknown:
            left += (" + " if left else "unknown: ") + f"{unknown} run(s) with no done run of their arm or " \
                                                      "protocol to estimate from"
        if possible:
            left += f"; + up to {possible} lr-grid extension run(s), if best lrs land on a grid edge"
        rows.append([name, str(len(items))] + [str(counts.get(s, 0)) for s in STATUSES] + [seconds_text(recorded), left])
        if items and counts.get("done", 0) == len(items) and not possible:
            complete.append(name)
        else:
            incomplete.append(f"{name} ({counts.get('done', 0)} of {len(items)} done)")
    md = ["## Status", ""] + md_table(["protocol", "runs", *STATUSES, "train time recorded", "remaining (estimate)"],
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
    stale = sum(1 for p in planned if not_comparable(p))
    md.append(f"The remaining compute is an estimate: the mean train time of the done runs of the same arm in the "
              f"same protocol (else of the protocol). The runs of an lr grid with lr_grid_extend count its extension "
              f"runs once they are needed; the ones not needed are not counted, and the ones not decided yet only "
              f"as \"up to\" (the most that can still run). {len(lines)} result line(s) read: {len(current)} current, "
              f"{len(lines) - len(latest)} superseded by a newer line of the same run, {len(latest) - len(current) - stale} "
              f"ignored (their protocol or arm is no longer in the suite), {stale} stale (made with another recipe "
              f"than the suite's now, or before its lr grid decided: left out of the tables and verdicts until re-run "
              f"with `--rerun-stale`).")
    old = [p for p in planned if not_comparable(p)]
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
        md += md_table(["run", "its lr", "headline", "why not compared"], rows)
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
    md = ["## Verdicts", ""] + md_table(["claim", "what we measured", "verdict", "reason"],
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
        return md + lr_grid_table(suite, res, name)
    if raw.get("lr_steps") is not None:
        return md + lr_steps_table(suite, res, name, latest or res.records)
    for task in res.tasks(name):
        if len(res.tasks(name)) > 1 or raw.get("task") == "glue":
            md += [f"### {name} / {task}", ""]
        md += prefix_table(res, name, task) if raw.get("prefix_lengths") else arm_table(res, name, task)
        md += majority_note(res, name, task, (floors or {}).get(task))
    return md


# ---------------------------------------------------------------------------------------------------------- hardware
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
    machines = Counter(machine_of(r)[0] for r in records if not r.get("baseline"))
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
