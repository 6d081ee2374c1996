"""The decoding check under a protocol's section: its finished E2E runs decoded again with other settings (beam
search, as the papers decode) by ``benchmarks/quality/decoding_check.py``, next to their greedy scores. A check on
whether a verdict depends on greedy decoding, not a verdict."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...io import read_jsonl_objects
from ..results import ResultsFileError
from ..evidence import E2E_METRICS, compare, fmt, stat
from .text import md_table

CHECK_FILE = "decoding_check.jsonl"
"""Its lines, beside the suite's results file."""


def read_checks(results_path: str | Path) -> list[dict[str, Any]]:
    """The lines of :data:`CHECK_FILE` beside ``results_path`` (none without the file); the newest line of each
    (protocol, arm, seed, setting) wins. A line that does not parse raises ResultsFileError (file:line)."""
    path = Path(results_path).with_name(CHECK_FILE)
    if not path.is_file():
        return []
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for number, record in read_jsonl_objects(path, ResultsFileError):
        missing = [k for k in ("protocol", "arm", "seed", "setting", "metrics", "greedy") if k not in record]
        if missing or not isinstance(record.get("seed"), int):
            raise ResultsFileError(f"{path}:{number}: not a decoding-check line (missing {', '.join(missing)}, or a "
                                   "seed that is not an integer)")
        latest[(record["protocol"], record["arm"], record["seed"], record["setting"])] = record
    return [latest[key] for key in sorted(latest, key=str)]


def decoding_section(checks: list[dict[str, Any]], protocol: str, reference: str = "lora") -> list[str]:
    """One table per setting (each arm: its seeds' greedy -> setting means on the five metrics, and the decoding
    time), then each arm against ``reference`` under greedy and under the setting, on the same seeds."""
    own = [r for r in checks if r["protocol"] == protocol]
    if not own:
        return []
    md = [f"### {protocol}: decoded again with other settings (a check, not a verdict)", "",
          "The finished runs present on the machine that ran `benchmarks/quality/decoding_check.py` (their adapters "
          "are not in git), decoded again with `peftlab predict` (beam search, as the papers decode; the suite "
          f"decodes greedily). Each cell: greedy → the setting, mean over the seeds listed. Lines: `{CHECK_FILE}`. "
          "Outputs repeating a 3-gram: how many of the decoded outputs repeat one of their own word 3-grams "
          "(a greedy output: \"... in the riverside area near Raja Indian Cuisine. It is located near Raja Indian "
          "Cuisine.\"; `peftlab.metrics.repetition`), a diagnostic of what greedy decoding leaves and the "
          "beam's n-gram block removes.", ""]
    for setting in dict.fromkeys(r["setting"] for r in own):
        rows_of = [r for r in own if r["setting"] == setting]
        overrides = ", ".join(rows_of[0].get("overrides") or [])
        md += [f"Setting `{setting}` ({overrides}):", ""]
        rows = []
        arms = list(dict.fromkeys(r["arm"] for r in rows_of))
        for arm in arms:
            group = [r for r in rows_of if r["arm"] == arm]
            cells = [f"{fmt(stat(r['greedy'].get(m) for r in group).mean)} → "
                     f"{fmt(stat(r['metrics'].get(m) for r in group).mean)}" for m in E2E_METRICS]
            seconds = stat(r.get("decode_seconds") for r in group).mean
            rows.append([arm, ", ".join(str(r["seed"]) for r in group)] + cells + [_repeats_cell(group)] +
                        [f"{seconds:,.0f}" if seconds is not None else "—"])
        md += md_table(["arm", "seeds"] + list(E2E_METRICS) + ["outputs repeating a 3-gram", "decode s"], rows)
        if reference in arms:
            md += _against_reference(rows_of, arms, reference, setting)
    return md


def _repeats_cell(group: list[dict[str, Any]]) -> str:
    """Outputs that repeat one of their own word 3-grams, greedy -> the setting, mean over the seeds whose line
    counted them (the seeds named when not all did; "—" when none did)."""
    counted = [r for r in group if isinstance(r.get("repeats"), dict)]
    if not counted:
        return "—"
    greedy, setting = (stat(r["repeats"].get(k) for r in counted).mean for k in ("greedy", "setting"))
    cell = f"{greedy:.1f} → {setting:.1f}"
    return cell if len(counted) == len(group) else cell + " (seeds " + ", ".join(str(r["seed"]) for r in counted) + ")"


def _against_reference(rows_of: list[dict[str, Any]], arms: list[str], reference: str, setting: str) -> list[str]:
    """BLEU of each arm minus the reference's on the seeds both have, greedy and under ``setting``."""
    ref = {r["seed"]: r for r in rows_of if r["arm"] == reference}
    lines = []
    for arm in arms:
        if arm == reference:
            continue
        pairs = [(r, ref[r["seed"]]) for r in rows_of if r["arm"] == arm and r["seed"] in ref]
        if not pairs:
            continue
        parts = []
        for label, field in (("greedy", "greedy"), (setting, "metrics")):
            rule = compare([a[field].get("BLEU") for a, _ in pairs], [b[field].get("BLEU") for _, b in pairs])
            per_seed = ", ".join(f"seed {a['seed']} {a[field]['BLEU'] - b[field]['BLEU']:+.4f}" for a, b in pairs)
            parts.append(f"{label}: {per_seed}" + (f" (mean d = {rule.d:+.4f}, u = {rule.u:.4f}: {rule.outcome})"
                                                    if rule.u is not None else ""))
        lines.append(f"- {arm} − {reference}, BLEU: " + "; ".join(parts))
    return [*lines, ""] if lines else []
