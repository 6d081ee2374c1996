"""The quality suite's result lines as evidence: seed statistics, the one rule that compares two arms, and the
lines grouped by (protocol, task, arm) with what the suite expects of each group (:class:`Results`).

Every comparison of two arms on a metric follows one rule: the difference of the seed means ``d`` (positive: the
first arm is better, whichever direction the metric runs) against ``u = 2 * sqrt(s1^2/n1 + s2^2/n2)`` (sample
standard deviations). ``better`` if ``d > u``, ``worse`` if ``d < -u``, ``tie`` otherwise, and ``insufficient`` when
either side has fewer than 2 seeds. The claims' verdicts (:mod:`.verdicts`) are built on it.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .suite import Suite

__all__ = ["CONVERGED", "Comparison", "E2E_METRICS", "PREFIX_VARIANTS", "Results", "Stat", "compare",
           "convergence_step", "curve", "fmt", "headline", "metric_names", "metric_value", "stat", "sub"]

E2E_METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
PREFIX_VARIANTS = ("plain", "residual", "gate", "residual+gate")
CONVERGED = 0.95  # a run has converged at the first step with this fraction of its final dev score


def fmt(value: float | None, digits: int = 4) -> str:
    """A metric with ``digits`` decimals (``0.6543``); ``—`` for a missing value."""
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class Stat:
    """Seed values of one arm on one quantity."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n >= 2 else None

    def text(self, digits: int = 4, with_n: bool = True) -> str:
        """``0.6543 ± 0.0050 (n=3)``; one seed: no std; no seed: ``—``."""
        if not self.values:
            return "—"
        body = fmt(self.mean, digits) + (f" ± {fmt(self.std, digits)}" if self.std is not None else "")
        return body + (f" (n={self.n})" if with_n else "")


def stat(values: Iterable[float | None]) -> Stat:
    return Stat(tuple(v for v in (_number(x) for x in values) if v is not None))


@dataclass(frozen=True)
class Comparison:
    """Arm ``a`` against arm ``b``: ``d`` > 0 means a is better (in the metric's own direction)."""

    a: Stat
    b: Stat
    d: float | None
    u: float | None
    outcome: str  # better | worse | tie | insufficient

    def text(self, digits: int = 4) -> str:
        if self.d is None:
            return "no data"
        u = f", u = {fmt(self.u, digits)}" if self.u is not None else ""
        return f"d = {self.d:+.{digits}f}{u} ({self.outcome})"


def compare(a: Iterable[float | None], b: Iterable[float | None], higher_is_better: bool = True) -> Comparison:
    """The two-sample rule (module docstring; ``RULES`` in :mod:`.verdicts`) on two arms' seed values."""
    sa, sb = stat(a), stat(b)
    if not sa.n or not sb.n:
        return Comparison(sa, sb, None, None, "insufficient")
    d = (sa.mean - sb.mean) * (1 if higher_is_better else -1) + 0.0  # + 0.0: no "-0" in the text
    if sa.n < 2 or sb.n < 2:
        return Comparison(sa, sb, d, None, "insufficient")
    u = 2 * math.sqrt(sa.std ** 2 / sa.n + sb.std ** 2 / sb.n)
    return Comparison(sa, sb, d, u, "better" if d > u else "worse" if d < -u else "tie")


def headline(task: str) -> str:
    """The headline metric of a task: BLEU for E2E, the GLUE task's first standard metric."""
    return metric_names(task)[0]


def metric_names(task: str, records: Sequence[dict[str, Any]] = ()) -> tuple[str, ...]:
    """The task's metrics, headline first; an unknown task: the metric keys of its records, in first-seen order."""
    if task == "e2e":
        return E2E_METRICS
    try:
        from ..data.glue import get_task

        return tuple(get_task(task).metrics)
    except Exception:  # an unknown GLUE task name: take what the lines have
        seen: dict[str, None] = {}
        for record in records:
            seen.update((k, None) for k in sub(record, "metrics"))
        return tuple(seen) or ("score",)


def sub(record: dict[str, Any], key: str) -> dict[str, Any]:
    """A mapping field of a result line (``metrics``, ``dev``, ``curves``); {} when missing or malformed."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def curve(record: dict[str, Any], name: str) -> list[Any]:
    """One curve of a result line: [[step, value, ...], ...]; [] when missing or malformed."""
    value = sub(record, "curves").get(name)
    return value if isinstance(value, list) else []


def metric_value(record: dict[str, Any], name: str) -> float | None:
    return _number(sub(record, "metrics").get(name))


def convergence_step(curve: Any, lower_is_better: bool, fraction: float = CONVERGED) -> int | None:
    """Steps a run took to reach ``fraction`` of its final dev score.

    ``curve``: [[step, value], ...] in step order. Higher-is-better scores: the first step with value >= fraction *
    final (None when final <= 0). A loss: the first step where (loss0 - loss) / (loss0 - final) >= fraction (the
    first step when the loss never fell below its first value)."""
    points = [(int(p[0]), _number(p[1])) for p in (curve or []) if isinstance(p, (list, tuple)) and len(p) >= 2
              and _number(p[0]) is not None]
    points = [(s, v) for s, v in points if v is not None]
    if not points:
        return None
    final = points[-1][1]
    if lower_is_better:
        first = points[0][1]
        if first - final <= 0:
            return points[0][0]
        return next(s for s, v in points if (first - v) / (first - final) >= fraction - 1e-12)
    if final <= 0:
        return None
    return next(s for s, v in points if v >= fraction * final - 1e-12)


class Results:
    """The suite's current result lines grouped by (protocol, task, arm), seeds ascending, and what the suite
    expects of each group.

    ``records``: {run key: newest result line} of runs that are in the suite; ``checks``: the decoding check's lines
    (``benchmarks/quality/decoding_check.py``: runs decoded again with other settings), shown as context."""

    def __init__(self, suite: Suite, records: dict[str, dict[str, Any]],
                 checks: Sequence[dict[str, Any]] = ()):
        self.suite = suite
        self.records = records
        self.checks = list(checks)
        self.groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.expected: dict[tuple[str, str, str], int] = {}
        self.specs: dict[tuple[str, str, str], Any] = {}  # the first RunSpec of each group
        for spec in suite.runs:
            cell = (spec.protocol, spec.task, spec.arm)
            self.expected[cell] = self.expected.get(cell, 0) + 1
            self.specs.setdefault(cell, spec)
            if spec.key in records:
                self.groups.setdefault(cell, []).append(records[spec.key])
        for group in self.groups.values():
            group.sort(key=lambda r: int(r["seed"]))

    def get(self, protocol: str, task: str, arm: str) -> list[dict[str, Any]]:
        return self.groups.get((protocol, task, arm), [])

    def values(self, protocol: str, task: str, arm: str, name: str) -> list[float]:
        return [v for v in (metric_value(r, name) for r in self.get(protocol, task, arm)) if v is not None]

    def field(self, protocol: str, task: str, arm: str, key: str) -> Stat:
        return stat(r.get(key) for r in self.get(protocol, task, arm))

    def progress(self, cells: Iterable[tuple[str, str, str]]) -> tuple[int, int]:
        """(runs with a result line, runs the suite has) over the given groups."""
        cells = list(cells)
        return (sum(len(self.get(*c)) for c in cells), sum(self.expected.get(c, 0) for c in cells))

    def tasks(self, protocol: str) -> list[str]:
        return list(dict.fromkeys(s.task for s in self.suite.runs if s.protocol == protocol))

    def arms(self, protocol: str, task: str) -> list[str]:
        """Arms of a (protocol, task) in suite order (the file's arm order, then expansion order)."""
        raw = list((self.suite.protocols.get(protocol) or {}).get("arms") or {})
        specs = [s for s in self.suite.runs if s.protocol == protocol and s.task == task]
        order = {arm: i for i, arm in enumerate(dict.fromkeys(s.arm for s in specs))}
        base = {s.arm: s.base_arm for s in specs}
        return sorted(order, key=lambda a: (raw.index(base[a]) if base[a] in raw else len(raw), order[a]))

    def prefix_arm(self, protocol: str, task: str, variant: str, length: int) -> str | None:
        for spec in self.suite.runs:
            if (spec.protocol, spec.task, spec.base_arm, spec.prefix_length) == (protocol, task, variant, length):
                return spec.arm
        return None

    def lengths(self, protocol: str) -> list[int]:
        return sorted({s.prefix_length for s in self.suite.runs if s.protocol == protocol and s.prefix_length})

    def budget(self, protocol: str) -> str:
        spec = next((s for s in self.suite.runs if s.protocol == protocol and s.baseline is None), None)
        if spec is None:
            return "no trained arm"
        optim = spec.recipe.get("optim") or {}
        return f"{optim.get('max_steps', '?')} steps × batch {optim.get('batch_size', 8)}"
